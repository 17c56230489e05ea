"""Every Kafka client the project makes hands librdkafka's lines to structlog, so none prints its own.

Without a ``logger``, librdkafka writes ``%3|...|FAIL|...`` lines straight to stderr, over the
demo's progress, a test's output or a benchmark's, for as long as the client lives. This test
walks every module (the relay, the application, the sandbox, the benchmarks, the tests) and
finds each ``Consumer(...)``, ``Producer(...)`` and ``AdminClient(...)``: the function that makes
it must give it ``relay.logs.librdkafka_logger()`` (a ``"logger"`` entry, directly or through
``KafkaCluster.client_conf()``). ``FeedProducer`` sets the logger itself. ``examples/`` is user
code showing the plain client API, and stays plain.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("relay", "lfs", "targets", "filters", "kafka_lfs_relay", "bench", "tests")
CLIENTS = {"Consumer", "Producer", "AdminClient"}
ROUTED = ('"logger"', "client_conf(", "librdkafka_logger(")


def _unrouted(path: Path) -> list[str]:
    """``path:line`` of every client made in a function (or module) that never names the logger."""
    text = path.read_text(encoding="utf-8")
    if not any(client + "(" in text for client in CLIENTS):
        return []
    lines = text.splitlines()
    found: list[str] = []

    def routed(scope: ast.FunctionDef | ast.AsyncFunctionDef | None) -> bool:
        source = text if scope is None else "\n".join(lines[scope.lineno - 1 : scope.end_lineno])
        return any(mark in source for mark in ROUTED)

    def visit(node: ast.AST, scope: ast.FunctionDef | ast.AsyncFunctionDef | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = node
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in CLIENTS and not routed(scope):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(ast.parse(text), None)
    return found


def test_every_kafka_client_is_given_the_structlog_logger() -> None:
    """No Consumer, Producer or AdminClient is made without ``logger`` (see the module docstring)."""
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 50
    missing = [where for path in files for where in _unrouted(path)]
    assert missing == [], "clients without relay.logs.librdkafka_logger(): " + ", ".join(missing)
