"""Unit tests of relay.logs and the CLI's last line: no traceback shows local variables, no line shows a known secret.

rich is installed with the test extra on purpose: with it, structlog's console renderer would
print each frame's local variables.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import rich  # noqa: F401  (required: the console renderer would use it)
import structlog

from kafka_lfs_relay import cli
from kafka_lfs_relay.exits import internal_error
from relay import logs
from relay.errors import SecretMasker

SECRET = "hunter2-password-value"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    hook = threading.excepthook
    yield
    threading.excepthook = hook
    structlog.reset_defaults()


def _fail() -> None:
    local_marker = "a-local-variable-value"
    raise RuntimeError(f"login refused for password {SECRET} ({len(local_marker)})")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_logged_traceback_shows_no_locals_and_no_known_secret(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """log.exception renders the traceback plain, as Python prints it, with known secrets scrubbed."""
    logs.configure("info", fmt, mask=SecretMasker([SECRET]))
    try:
        _fail()
    except RuntimeError:
        structlog.get_logger("test").exception("relay stopped by an internal error")
    err = capsys.readouterr().err
    text = json.loads(err)["exception"] if fmt == "json" else err
    assert "Traceback (most recent call last)" in text and "in _fail" in text
    assert "login refused for password *** (22)" in text
    assert "a-local-variable-value" not in err
    assert "╭" not in err, "rendered by rich"
    assert SECRET not in err


def test_an_exception_that_ends_a_thread_is_logged_masked(capsys: pytest.CaptureFixture[str]) -> None:
    """A thread's uncaught exception goes through the same renderer: one error line, plain traceback, masked."""
    logs.configure("info", "json", mask=SecretMasker([SECRET]))
    thread = threading.Thread(target=_fail, name="worker")
    thread.start()
    thread.join()
    line = json.loads(capsys.readouterr().err)
    assert line["event"] == "thread stopped by an exception" and line["thread"] == "worker"
    assert "RuntimeError: login refused for password ***" in line["exception"]
    assert SECRET not in json.dumps(line)


def test_internal_error_line_is_one_line_with_type_and_message() -> None:
    """Type (module-qualified unless builtin) and message, whitespace folded; the caller masks it."""
    assert (
        internal_error(RuntimeError("two\n  lines"))
        == "internal error: RuntimeError: two lines (a bug; please report it)"
    )
    assert internal_error(json.JSONDecodeError("bad", "x", 0)).startswith(
        "internal error: json.decoder.JSONDecodeError:"
    )
    assert internal_error(KeyError()) == "internal error: KeyError (a bug; please report it)"


def test_check_reports_a_bug_in_one_masked_line_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception inside check is exit 70 and one line naming it, its secret scrubbed; never a traceback."""
    config = tmp_path / "relay.yml"
    config.write_text(
        "sources: [{bootstrap_servers: '127.0.0.1:1', kafka: {sasl.password: " + SECRET + "}}]\n"
        "topics: [{source: orders}]\n"
        "target: {bootstrap_servers: '127.0.0.1:1'}\n",
        encoding="utf-8",
    )

    def broken(*_args: object) -> int:
        _fail()
        return 0

    monkeypatch.setattr("kafka_lfs_relay.checks.run_checks", broken)
    assert cli.main(["check", "--config", str(config)]) == 70
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "kafka-lfs-relay: internal error: RuntimeError: login refused for password *** (22) (a bug; please report it)"
    ]
    assert out == ""
