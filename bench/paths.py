"""Where the benchmarks live and write: the repository, its build folder, results and scratch work."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
RESULTS = BUILD / "results"
WORK = BUILD / "work"
