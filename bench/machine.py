"""The machine a benchmark runs on: cores, memory, CPU, versions, and other load on it."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from kafka_lfs_relay.sandbox import KAFKA_VERSION
from kafka_lfs_relay.sandbox.distribution import java_executable


def _java_version() -> str:
    proc = subprocess.run([java_executable(), "-version"], capture_output=True, text=True, check=False)
    first = (proc.stderr or proc.stdout).splitlines()
    return first[0].strip() if first else "unknown"


def _mem_total_gib() -> float:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def foreign_load() -> dict[str, Any]:
    """Other heavy processes on the machine right now (not ours): a hint that figures are noisy."""
    mine = {os.getpid()}
    others: list[str] = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        pid = int(pid_dir.name)
        if pid in mine:
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in mine:
            continue
        if any(word in cmd for word in ("java ", "pytest", "kafka_lfs_relay.cli", "weed ")):
            others.append(cmd.split(" -cp ")[0][:80])
    load1, load5, _ = os.getloadavg()
    return {"other_processes": len(others), "loadavg_1m": round(load1, 2), "loadavg_5m": round(load5, 2)}


def machine_info() -> dict[str, Any]:
    """Cores, memory and the versions of everything involved."""
    import confluent_kafka

    load = foreign_load()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(_mem_total_gib(), 1),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "java": _java_version(),
        "kafka": KAFKA_VERSION,
        "shared": load["other_processes"] > 0,
        "load_at_start": load,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
