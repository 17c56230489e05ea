"""A scenario's results and how they are reported: progress lines, statistics, the JSON result, tables.

Results
  A scenario writes ``build/bench/results/<name>.json`` with :func:`write_result`: a title, column
  names, rows (dicts keyed by column), settings, notes, goals and optional further sections (a
  title, columns, rows and notes each, rendered under the main table). ``bench/report.py`` renders every
  such file, so other scenarios (the LFS ones) only need to write the same shape.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.paths import RESULTS

MIB = 1024 * 1024


def log(msg: str) -> None:
    """One progress line on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- statistics ------------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return float(statistics.median(values)) if values else float("nan")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


# -- results ---------------------------------------------------------------------------------------
@dataclass
class Result:
    """One scenario's outcome, as the report renders it."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)
    # Further tables under the main one: each {"title", "columns", "rows", "notes"}.
    sections: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    chart: dict[str, Any] = field(default_factory=dict)


def write_result(result: Result) -> Path:
    """Write ``build/bench/results/<name>.json`` (and print where)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{result.name}.json"
    path.write_text(json.dumps(asdict(result), indent=2, default=str), encoding="utf-8")
    log(f"result written to {path}")
    return path


def now_text() -> str:
    """Local time, for the report."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def markdown_table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """A GitHub markdown table."""
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        out.append("| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def fmt(value: Any) -> str:
    """A number rounded for a table; anything else as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def common_args(parser: Any, runs: int) -> None:
    """``--runs`` (median of how many) for every scenario."""
    parser.add_argument(
        "--runs", type=int, default=runs, help=f"runs per contender; figures are medians (default {runs})"
    )
