"""Bugs on purpose for test_config_secrets: a custom target and a check that fail quoting a secret.

``python -m tests.integration.secrets_support check --config X`` is the real command line with
``run_checks`` replaced by one that raises.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

from kafka_lfs_relay.config import RelayConfig

LOCAL_MARKER = "value-of-a-local-variable"
"""Held by a local variable of each failing frame: a traceback that shows locals would show it."""


class LeakyTarget:
    """A custom target whose constructor fails with its password in the message."""

    def __init__(self, options: Mapping[str, object]) -> None:
        marker = LOCAL_MARKER
        raise RuntimeError(f"could not log in to {options['url']} with password {options['password']} ({len(marker)})")


def _broken_checks(config: RelayConfig, out: Callable[[str], None]) -> int:
    password = config.sources[0].kafka["sasl.password"]
    marker = LOCAL_MARKER
    raise RuntimeError(f"probe failed with password {password} ({len(marker)})")


if __name__ == "__main__":
    from kafka_lfs_relay import checks, cli

    checks.run_checks = _broken_checks
    sys.exit(cli.main())
