"""The run's figures as a markdown table, and publishing it into docs/reliability.md."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

MARKER = "<!-- chaos runs: python -m bench.chaos --publish appends below -->"


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MiB"


def _ranges(items: list[list[int]]) -> str:
    return ", ".join(f"{p} [{a}, {b})" for p, a, b in items) or "-"


def _trim(s: dict[str, Any]) -> str:
    trim = s.get("trim_passes")
    every = s["settings"].get("trim_every", 0)
    done = f"every {every:.0f} s: {trim['done']} passes, {trim['failed']} missed a cluster" if trim else "off"
    return f"{done}; least free disk {s.get('disk_free_min_gib', '?')} GiB"


def _operations(s: dict[str, Any]) -> str:
    done = s.get("operations", {})
    if not done:
        return "none" if not s["settings"].get("op_kinds") else "none carried out"
    wrong = Counter(o["kind"] for o in s.get("operation_outcomes", []) if not o["ok"])
    return ", ".join(f"{k} {n}" + (f" ({wrong[k]} wrong)" if wrong[k] else "") for k, n in done.items())


def _topics(s: dict[str, Any]) -> str:
    parts, gens = s.get("partitions", {}), s.get("generations", {})
    return ", ".join(f"{t} {n} partitions, created {gens.get(t, 0) + 1} times" for t, n in parts.items()) or "-"


def rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) pairs of one run."""
    if "harness_error" in s:
        return [("seed", str(s.get("seed"))), ("harness error", s["harness_error"]), ("verdict", "FAIL")]
    p = s["produced"]
    faults = ", ".join(f"{k} {v}" for k, v in s["faults"].items()) or "none"
    outages = ", ".join(f"{k} {v}" for k, v in s["outages"].items()) or "none"
    rebalances = ", ".join(f"{k} {v}" for k, v in s["rebalances"].items()) or "none"
    orphans = sum(s["orphans"].values())
    why = "; ".join(f"{n}: {k}" for k, n in s["orphans"].items()) or "-"
    gaps = ", ".join(f"partition {g[0]} [{g[1]}, {g[2]})" for g in s["made_gaps"]) or "none made"
    reported = s["reported_gaps"]
    return [
        ("seed", str(s["seed"])),
        ("relay (commit)", s.get("relay_version", "")),
        ("duration of faults", f"{s['duration_s'] / 60:.0f} min; whole run {s['wall_s']:.0f} s"),
        (
            "records produced",
            f"mirror {p['mirror_records']:,} ({p['mirror_large']:,} of 1-8 MiB, offloaded), "
            f"group {p['orders_records']:,}",
        ),
        ("bytes produced", f"mirror {_mib(p['mirror_bytes'])}, group {_mib(p['orders_bytes'])}"),
        ("faults injected", faults),
        ("operations", _operations(s)),
        ("source topics at the end", _topics(s)),
        ("broker and S3 outages", outages),
        ("failovers", str(s["failovers"])),
        ("rebalances", rebalances),
        ("fencings", str(s["fencings"])),
        ("relay runs (restarts + 1)", ", ".join(f"{k} {v}" for k, v in s["relay_runs"].items())),
        ("source records trimmed behind the relay", _trim(s)),
        ("gap made", gaps),
        (
            "gap reported",
            f"on_gap fail: {_ranges(reported['fail'])}; skip: {_ranges(reported['skip'])}"
            f" ({'matches' if s['gap_ok'] else 'DOES NOT MATCH'})",
        ),
        ("lost", str(s["lost"])),
        ("duplicated", str(s["duplicated"])),
        ("reordered / corrupted", f"{s['reordered']} / {s['corrupted']}"),
        ("envelopes verified (object = checksum = source)", f"{s['envelopes']:,}, {len(s['envelope_problems'])} bad"),
        ("orphans", f"{orphans} of {s['objects']:,} objects ({why}); unfinished uploads {s['incomplete_uploads']}"),
        ("relay exits and error lines", f"{len(s['explained'])} explained by a fault, {len(s['unexplained'])} not"),
        ("relays that could not run to the end", "; ".join(s.get("drain_failures", [])) or "none"),
        ("operations without the right outcome", str(len(s.get("operation_problems", [])))),
        (
            "verdict",
            "PASS" if s["passed"] else "FAIL" + (f" (vacuous: {'; '.join(s['vacuous'])})" if s["vacuous"] else ""),
        ),
    ]


def render(s: dict[str, Any]) -> str:
    """The table, then what went wrong if anything did."""
    out = ["| figure | value |", "|---|---|"]
    out += [f"| {k} | {v.replace('|', '/')} |" for k, v in rows(s)]
    if "verdicts" in s:
        for v in s["verdicts"]:
            if v["problems"]:
                out.append("")
                out.append(f"{v['target']}: " + "; ".join(v["problems"][:5]))
        for line in s["unexplained"][:10]:
            out.append(f"\nunexplained: {line}")
        for line in s.get("operation_problems", [])[:10]:
            out.append(f"\noperation: {line}")
        for line in s["envelope_problems"][:5]:
            out.append(f"\nenvelope: {line}")
    return "\n".join(out) + "\n"


def publish(s: dict[str, Any], path: Path) -> None:
    """Append the run's table to ``path`` under the marker."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Reliability\n\n{MARKER}\n"
    if MARKER not in text:
        text += f"\n{MARKER}\n"
    title = f"\n### {time.strftime('%Y-%m-%d')}: {s.get('duration_s', 0) / 60:.0f} minutes, seed {s.get('seed')}\n\n"
    path.write_text(text + title + render(s), encoding="utf-8")
