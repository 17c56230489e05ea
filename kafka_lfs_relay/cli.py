"""The ``kafka-lfs-relay`` command line: the one place where arguments become objects."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kafka_lfs_relay import commands, demo, lfsgc, offsets_command, positions_command, verify
from kafka_lfs_relay.sandbox import cli as sandbox_cli
from relay import __version__, logs


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="kafka-lfs-relay",
        description="Relay records between Kafka clusters, with source failover and S3 claim-check offload.",
    )
    parser.add_argument("--version", action="version", version=f"kafka-lfs-relay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.add_parsers(sub)
    offsets_command.add_parser(sub)
    positions_command.add_parser(sub)
    verify.add_parser(sub)
    lfsgc.add_parser(sub)
    demo.add_parser(sub)
    sandbox_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    # structlog's own defaults render a traceback with rich, local variables (secrets) included.
    logs.configure()
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
