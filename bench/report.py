"""Render every result in ``build/bench/results/`` into ``docs/benchmarks.md`` and ``docs/benchmarks.png``.

``python -m bench.report [--results DIR] [--only a_throughput,b_latency,...] [--keep-others]``.
Scenarios appear in the issue's order (a, b, c = ``lfs_offload``, d = ``hydrate``, e); each gets its
table, its goals, its notes, and every setting it ran with; the machine and the versions come last.
With ``--keep-others`` only the scenarios that have a result file are rendered anew: the sections and
goal rows of the others stay in the page as they were, with the machine they were measured on (the
chart then shows the new scenarios only). Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from bench.paths import RESULTS, ROOT
from bench.results import log, markdown_table

DOCS = ROOT / "docs"


# The scenarios in their letters' order: a, b, c (LFS offload), d (hydrate), e, f, g (re-homing),
# h (verify), i (a wide estate); anything else after them.
ORDER = {
    "a_throughput": "a",
    "b_latency": "b",
    "lfs_offload": "c",
    "hydrate": "d",
    "e_failover": "e",
    "e_failover_rt2": "e2",
    "f_startup": "f",
    "rehome": "g",
    "verify": "h",
    "i_wide_estate": "i",
}


def _order(stem: str) -> str:
    return ORDER.get(stem, "z" + stem)


def load(results: Path, only: list[str] | None) -> list[dict[str, Any]]:
    """The result files in scenario order (optionally only the named ones; ``smoke_*`` only when named)."""
    out = []
    for path in sorted(results.glob("*.json"), key=lambda p: _order(p.stem)):
        if only is not None and path.stem not in only:
            continue
        if only is None and path.stem.startswith("smoke_"):
            continue
        out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _settings_lines(settings: Any, indent: int = 0) -> list[str]:
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(settings, dict):
        for key, value in settings.items():
            if isinstance(value, dict) and value and key.endswith(".properties)"):
                lines += [f"{pad}- {key}:", "", f"{pad}  ```properties"]
                lines += [f"{pad}  {k} = {v}" for k, v in value.items()]
                lines += [f"{pad}  ```", ""]
            elif isinstance(value, dict) and value and all(_scalar(v) for v in value.values()) and len(value) <= 8:
                lines.append(f"{pad}- {key}: " + ", ".join(f"`{k}={v}`" for k, v in value.items()))
            elif isinstance(value, list) and value and all(_scalar(v) for v in value):
                lines.append(f"{pad}- {key}: " + ", ".join(f"`{v}`" for v in value))
            elif isinstance(value, dict | list) and value:
                lines.append(f"{pad}- {key}:")
                lines += _settings_lines(value, indent + 1)
            else:
                lines.append(f"{pad}- {key}: `{value}`" if value != "" else f"{pad}- {key}")
    elif isinstance(settings, list):
        for value in settings:
            if isinstance(value, dict | list):
                lines += _settings_lines(value, indent)
            else:
                lines.append(f"{pad}- `{value}`")
    return lines


def _machine_lines(machines: list[dict[str, Any]]) -> list[str]:
    if not machines:
        return []
    m = machines[0]
    # Another heavy process seen (a broker, a test run, a relay not ours). The load average alone says
    # little: in `make bench` it still carries the previous scenario's brokers for a minute or two.
    shared = any((x.get("load_at_start") or {}).get("other_processes", 0) > 0 for x in machines)
    loads = ", ".join(
        f"{x.get('load_at_start', {}).get('loadavg_1m', '?')}" for x in machines if x.get("load_at_start")
    )
    lines = [
        "## Machine and versions",
        "",
        f"- Machine: {m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB memory, {m.get('os')}",
        f"- Python {m.get('python')}, confluent-kafka {m.get('confluent_kafka')} (librdkafka {m.get('librdkafka')})",
        f"- Apache Kafka {m.get('kafka')} (brokers, MirrorMaker 2, perf tools; Maven Central), {m.get('java')}",
        "- All servers and clients on 127.0.0.1, on this one machine: every contender shares the CPU with "
        "the two brokers it talks to.",
    ]
    peaks = ", ".join(f"{x['loadavg_1m_peak']} ({x.get('name', '?')})" for x in machines if "loadavg_1m_peak" in x)
    if shared:
        lines.append(
            f"- **The machine was shared** with other work while these figures were taken (1-minute load "
            f"average at the start of each scenario: {loads}), so absolute figures are noisy; the "
            "contenders ran alternately so drift hits all of them, and the ratios are what to read."
        )
    else:
        lines.append(
            f"- No other heavy process ran. The 1-minute load average at the start of each scenario ({loads}) "
            "still carries the previous scenario's brokers."
        )
    if peaks:
        lines.append(
            f"- Highest 1-minute load average seen after a run, ours included (two brokers and a contender make "
            f"about 3 on their own): {peaks}."
        )
    return [*lines, ""]


def render_markdown(results: list[dict[str, Any]], chart: Path | None) -> str:
    """The whole benchmarks page."""
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/`) on fresh sandbox clusters; every figure is the median of "
        "several runs, and within a scenario the contenders ran alternately (A B A B ...). "
        "Re-run a single scenario with `python -m bench.<scenario>` and re-render with `python -m bench.report`.",
        "",
    ]
    if chart is not None:
        out += [f"![benchmarks]({chart.name})", ""]
    goals = [(r["title"], g) for r in results for g in r.get("goals", [])]
    if goals:
        out += ["## Goals", "", "| goal | measured | status |", "|---|---|---|"]
        for _title, goal in goals:
            status = "met" if goal["met"] else "**missed**"
            out.append(f"| {goal['goal']} | {goal['measured']} | {status} |")
        out.append("")
    for result in results:
        out += [f"## {result['title']}", ""]
        if result.get("columns") and result.get("rows"):
            out += [markdown_table(result["columns"], result["rows"]), ""]
        else:
            out += ["(no rows in this result)", ""]
        for note in result.get("notes", []):
            out.append(f"- {note}")
        if result.get("notes"):
            out.append("")
        for section in result.get("sections", []):
            out += [f"### {section['title']}", "", markdown_table(section["columns"], section["rows"]), ""]
            out += [f"- {note}" for note in section.get("notes", [])]
            if section.get("notes"):
                out.append("")
        if result.get("settings"):
            out += ["Settings:", "", *_settings_lines(result["settings"]), ""]
        out += [f"Run {result.get('started', '')} to {result.get('finished', '')}.", ""]
    out += _machine_lines([{**r["machine"], "name": r["name"]} for r in results if r.get("machine")])
    return "\n".join(out).rstrip() + "\n"


def render_chart(results: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per scenario that declares a chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A chart spec may ask for a second panel of the same rows: {"also": {"value": ..., "label": ...}}.
    drawable = [
        (result, panel)
        for result in results
        if result.get("chart") and result.get("rows")
        for panel in (
            result["chart"],
            *([{**result["chart"], **result["chart"]["also"]}] if "also" in result["chart"] else []),
        )
    ]
    if not drawable:
        return None
    fig, axes = plt.subplots(len(drawable), 1, figsize=(9, 3.2 * len(drawable)), squeeze=False)
    for ax, (result, spec) in zip(axes[:, 0], drawable, strict=True):
        ax.set_title(textwrap.fill(result["title"], 100), fontsize=9)
        key = result["columns"][0]
        if spec["type"] == "bar":
            names = [str(r[key]) for r in result["rows"]]
            values = [float(r[spec["value"]]) for r in result["rows"]]
            colors = [
                "#d62728" if n.startswith("relay") else "#2ca02c" if n.startswith("go") else "#1f77b4" for n in names
            ]
            bars = ax.barh(names, values, color=colors)
            ax.invert_yaxis()
            ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 100 else f"{v:.1f}" for v in values], fontsize=8, padding=2)
            ax.set_xlabel(spec.get("label", spec["value"]))
        elif spec["type"] == "bars":
            names = [str(r[key]) for r in result["rows"]]
            width = 0.8 / len(spec["values"])
            for i, column in enumerate(spec["values"]):
                xs = [j + i * width for j in range(len(names))]
                values = [float(r[column]) for r in result["rows"]]
                bars = ax.bar(xs, values, width, label=column)
                ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
            ax.set_xticks([j + width * (len(spec["values"]) - 1) / 2 for j in range(len(names))], names)
            ax.set_ylabel(spec.get("label", ""))
            ax.legend(fontsize=8)
        elif spec["type"] == "runs":
            values = [float(r[spec["value"]]) for r in result["runs"]]
            bars = ax.bar([str(i + 1) for i in range(len(values))], values, color="#d62728")
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
            if "goal_line" in spec:
                ax.axhline(spec["goal_line"], color="black", linestyle="--", linewidth=1)
                ax.text(1.0, spec["goal_line"], f"goal {spec['goal_line']:g} s ", va="bottom", ha="right",
                        fontsize=8, transform=ax.get_yaxis_transform())  # fmt: skip
            ax.set_xlabel("run")
            ax.set_ylabel(spec.get("label", spec["value"]))
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _blocks(page: str) -> list[tuple[str, list[str]]]:
    """A page cut at its ``## `` headings: (heading, lines with the heading line); the preamble's heading is ''."""
    blocks: list[tuple[str, list[str]]] = [("", [])]
    for line in page.splitlines():
        if line.startswith("## "):
            blocks.append((line[3:], []))
        blocks[-1][1].append(line)
    return blocks


def _goal_rows(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| goal |")]


def keep_others(old_page: str, new_page: str) -> str:
    """``new_page`` (some scenarios) merged into ``old_page``: every other scenario's section and goal rows kept."""
    old, new = _blocks(old_page), dict(_blocks(new_page))
    machine = "Machine and versions"
    fresh = {h for h in new if h not in ("", "Goals", machine)}
    out: list[list[str]] = [new[""]]
    kept: list[str] = []
    old_machine: list[str] = []
    for heading, lines in old[1:]:
        if heading == "Goals":
            new_rows = _goal_rows(new.get("Goals", []))
            names = {row.split(" | ")[0] for row in new_rows}
            rows = _goal_rows(lines)
            at = next((i for i, row in enumerate(rows) if row.split(" | ")[0] in names), 0)
            rows = (
                [row for row in rows[:at] if row.split(" | ")[0] not in names]
                + new_rows
                + [row for row in rows[at:] if row.split(" | ")[0] not in names]
            )
            out.append(["## Goals", "", "| goal | measured | status |", "|---|---|---|", *rows, ""])
        elif heading == machine:
            old_machine = lines
        elif heading in fresh:
            out.append(new[heading])
            fresh.discard(heading)
        else:
            out.append(lines)
            kept.append(heading)
    out += [new[h] for h in new if h in fresh]
    tail = list(new.get(machine, []))
    while tail and not tail[-1].strip():
        tail.pop()
    if kept:
        names = "; ".join(dict.fromkeys(h.split(":")[0] for h in kept))
        tail += ["", f"Kept from the previous page, not re-run with the figures above: {names}. "]
        tail[-1] += "Their own 'Run ...' line says when they ran; the machine and versions then:"
        tail += ["", *(ln for ln in old_machine[1:] if ln.strip())]
    out.append(tail)
    return "\n".join(line for block in out for line in block).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--only", help="comma-separated result names (file stems) to include")
    parser.add_argument("--out", type=Path, default=DOCS / "benchmarks.md")
    parser.add_argument(
        "--keep-others",
        action="store_true",
        help="keep the sections and goals of scenarios with no result file from the existing page",
    )
    args = parser.parse_args()
    only = [s for s in args.only.split(",") if s] if args.only else None
    results = load(args.results, only)
    if not results:
        raise SystemExit(f"no results in {args.results}; run a scenario first")
    chart = render_chart(results, args.out.with_suffix(".png"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    page = render_markdown(results, chart)
    if args.keep_others and args.out.exists():
        page = keep_others(args.out.read_text(encoding="utf-8"), page)
    args.out.write_text(page, encoding="utf-8")
    log(f"wrote {args.out}" + (f" and {chart}" if chart else ""))


if __name__ == "__main__":
    main()
