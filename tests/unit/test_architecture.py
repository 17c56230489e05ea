"""The layers of docs/architecture.md hold: every import in the project points down, never up."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Each package and the project packages it may import (itself always).
ALLOWED: dict[str, set[str]] = {
    "relay": set(),
    "lfs": {"relay"},
    "filters": {"relay"},
    "targets": {"relay", "lfs"},
    "kafka_lfs_relay": {"relay", "lfs", "filters", "targets"},
}
PROJECT = set(ALLOWED)
# Only these application modules may use the sandbox (the tests and benchmarks may, too).
SANDBOX_USERS = {"kafka_lfs_relay/cli.py", "kafka_lfs_relay/demo.py"}


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, anywhere in it (functions included), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_package_imports_only_the_layers_below_it() -> None:
    """No module imports a package above its own layer (relay < lfs < targets; filters; the application on top)."""
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sources(package):
            for line, module in imports(path):
                top = module.split(".")[0]
                if top in PROJECT and top != package and top not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert wrong == []


def test_the_sandbox_is_used_only_by_the_demo_and_its_command() -> None:
    """Outside the sandbox itself, only the demo and the command line import kafka_lfs_relay.sandbox."""
    wrong = []
    for package in ALLOWED:
        for path in sources(package):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("kafka_lfs_relay/sandbox/") or rel in SANDBOX_USERS:
                continue
            wrong += [f"{rel}:{line}" for line, module in imports(path) if module.startswith("kafka_lfs_relay.sandbox")]
    assert wrong == []


def test_the_checker_sees_imports() -> None:
    """The walk finds imports at all (a checker that sees nothing would pass anything)."""
    assert (1, "relay.settings") in [(1, m) for _, m in imports(ROOT / "relay" / "relay.py")]
    assert len([p for package in ALLOWED for p in sources(package)]) > 50
