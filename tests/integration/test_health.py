"""/healthz and /readyz of a real relay process: frozen, stalled on a hung target, with its source dead, in a group."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from kafka_lfs_relay.sandbox import KafkaCluster
from kafka_lfs_relay.sandbox.process import free_port
from tests.conftest import ClusterFactory, create_topic
from tests.integration.harness import (
    RelayProcess,
    assert_same,
    committed_count,
    numbered,
    produce,
    read_all,
    records_by_partition,
    relay_config,
    wait_for,
    write_config,
)
from tests.integration.hydrate_support import NOW, Rec, assert_records, produce_records, read_records

pytestmark = pytest.mark.integration


def probe(port: int, path: str, timeout: float = 2.0) -> tuple[int | None, dict[str, Any] | None]:
    """(status, JSON body) of ``GET path``, or (None, None) when nothing answers in time, as an orchestrator sees it."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None, None


def _answers(port: int, path: str, status: int) -> bool:
    return probe(port, path)[0] == status


def test_probes_through_a_frozen_relay_a_hung_target_and_a_dead_source(
    tmp_path: Path, cluster_factory: ClusterFactory
) -> None:
    """Ready and alive; a frozen process answers nothing; a hung target stalls it; a dead source makes it unready."""
    source, target = cluster_factory("source"), cluster_factory("target")
    create_topic(source, "orders", 2)
    records = numbered(2000, 2, size=2000)
    port = free_port()
    config = relay_config(
        [source],
        target,
        [{"source": "orders"}],
        metrics={"listen": f"127.0.0.1:{port}", "stall_timeout": "4s"},
        max_in_flight="1MiB",
    )
    relay = RelayProcess(write_config(tmp_path / "relay.yml", config)).start()
    assert relay.proc is not None
    try:
        wait_for("/readyz to answer 200", lambda: _answers(port, "/readyz", 200), 90, relay)
        _, ready = probe(port, "/readyz")
        assert ready is not None and ready["status"] == "ready" and ready["source"]["name"] == "source"
        assert ready["source"]["healthy"] is True and ready["catching_up"] is False and "group" not in ready
        status, alive = probe(port, "/healthz")
        assert status == 200 and alive is not None and (alive["status"], alive["phase"]) == ("alive", "running")
        produce([source], "orders", records[:1000])
        wait_for("the first half relayed", lambda: committed_count(target, "orders", 2) >= 1000, 90, relay)

        # Frozen (SIGSTOP): nothing answers, which an orchestrator's probe counts as a failure.
        relay.proc.send_signal(signal.SIGSTOP)
        try:
            assert probe(port, "/healthz") == (None, None)
        finally:
            relay.proc.send_signal(signal.SIGCONT)
        wait_for("/healthz to answer 200 again", lambda: _answers(port, "/healthz", 200), 30, relay)

        # The target hung with more to write than max_in_flight: the loop can neither poll nor get
        # acknowledgements, so /healthz reports a stall; the source is fine, so it stays ready.
        target.pause()
        try:
            produce([source], "orders", records[1000:])
            wait_for("/healthz to report the stall", lambda: _answers(port, "/healthz", 503), 60, relay)
            _, stalled = probe(port, "/healthz")
            assert stalled is not None and stalled["status"] == "stalled"
            assert "(stall_timeout 4 s)" in stalled["reason"]
            assert probe(port, "/readyz")[0] == 200
        finally:
            target.resume()
        wait_for("/healthz to answer 200 again", lambda: _answers(port, "/healthz", 200), 120, relay)
        wait_for("every record relayed", lambda: committed_count(target, "orders", 2) >= len(records), 120, relay)

        # The source dies: not ready (no other source to read), still alive (the loop keeps polling).
        source.kill()
        wait_for("/readyz to answer 503", lambda: _answers(port, "/readyz", 503), 60, relay)
        _, unready = probe(port, "/readyz")
        assert unready is not None and unready["source"]["healthy"] is False
        assert unready["reasons"][0].startswith("source source failed its last health check: ")
        watched_until = time.monotonic() + 6  # longer than stall_timeout: alive all along
        while time.monotonic() < watched_until:
            status, alive = probe(port, "/healthz")
            assert status == 200, alive
            time.sleep(0.5)
        assert relay.terminate(90) == 0, relay.log_tail()
    finally:
        if relay.alive():
            relay.kill9()
    assert_same(records_by_partition(records, 2), read_all(target, "orders", 2))


def test_in_group_mode_readiness_says_what_each_instance_owns(tmp_path: Path, kafka_cluster: KafkaCluster) -> None:
    """Two instances, one partition: both are ready once they joined; one owns it, the other is a standby."""
    topic = create_topic(kafka_cluster, f"t-{uuid.uuid4().hex[:10]}", 1)
    ports = [free_port(), free_port()]
    relays = []
    for i, port in enumerate(ports):
        config = relay_config(
            [kafka_cluster],
            kafka_cluster,
            [{"source": topic, "target": f"{topic}-out"}],
            metrics={"listen": f"127.0.0.1:{port}"},
            name=f"group-{topic}",
        )
        config["group"] = {"id": f"group-{topic}", "session_timeout": "6s"}
        relays.append(RelayProcess(write_config(tmp_path / f"relay-{i}.yml", config)).start())
    try:
        for relay, port in zip(relays, ports, strict=True):
            wait_for("/readyz to answer 200", lambda port=port: _answers(port, "/readyz", 200), 90, relay)

        def owned() -> list[int]:
            bodies = [probe(port, "/readyz")[1] or {} for port in ports]
            return sorted(body.get("group", {}).get("partitions_owned", -1) for body in bodies)

        wait_for("one owner and one standby", lambda: owned() == [0, 1], 60)
        for port in ports:
            status, body = probe(port, "/readyz")
            assert status == 200 and body is not None
            assert body["group"]["id"] == f"group-{topic}" and body["group"]["joined"] is True
    finally:
        for relay in relays:
            if relay.alive():
                assert relay.terminate(90) == 0, relay.log_tail()


def _waiting(port: int, step: str) -> bool:
    """Whether /readyz answers 503 waiting on ``step`` while /healthz answers 200."""
    status, body = probe(port, "/readyz")
    return status == 503 and body is not None and str(body.get("waiting", "")).startswith(step)


def test_start_up_waits_for_a_source_and_a_target_that_are_down(
    tmp_path: Path, cluster_factory: ClusterFactory, kafka_cluster: KafkaCluster
) -> None:
    """A relay started while its only source is down, then one started while its target is down, each waits
    (not ready, alive, one log line), ends on SIGTERM with exit 0, and relays every record once the cluster is back."""
    away = cluster_factory("away")
    records = _full_records(60)
    port = free_port()
    backoff = {"healthcheck_interval": "500ms", "request_timeout": "1s", "backoff": {"min": "200ms", "max": "1s"}}
    for side in ("source", "target"):
        topic = create_topic(kafka_cluster if side == "target" else away, f"{side}-{uuid.uuid4().hex[:8]}", 2)
        source, target = (away, kafka_cluster) if side == "source" else (kafka_cluster, away)
        produce_records(source, topic, records[:30])
        away.stop()
        # An attempt to reach a target that is down takes its metadata timeout (15 s): a stall
        # timeout below that would count one attempt as a hang.
        stall = "5s" if side == "source" else "30s"
        config = relay_config(
            [source], target, [{"source": topic, "target": f"{topic}-copy"}], name=f"waits-{topic}",
            metrics={"listen": f"127.0.0.1:{port}", "stall_timeout": stall}, source_pool=backoff,
        )  # fmt: skip
        relay = RelayProcess(write_config(tmp_path / f"{side}.yml", config))
        step = "choosing a source" if side == "source" else "reading positions back from the target"
        try:
            relay.start()
            wait_for(f"/readyz waiting on {step}", lambda step=step: _waiting(port, step), 60, relay)
            if side == "source":
                assert relay.terminate(30) == 0, relay.log_tail()  # SIGTERM while waiting: a clean stop
                assert "stopped while start-up waited (choosing a source" in relay.log_tail(1)
                relay.start()
                wait_for(f"/readyz waiting on {step} again", lambda step=step: _waiting(port, step), 60, relay)
                watched_until = time.monotonic() + 7  # longer than stall_timeout: alive all along
                while time.monotonic() < watched_until:
                    status, alive = probe(port, "/healthz")
                    assert status == 200 and alive is not None and alive["phase"] == "starting", alive
                    time.sleep(0.5)
            status, alive = probe(port, "/healthz")
            assert status == 200 and alive is not None and alive["phase"] == "starting", alive
            away.start()
            produce_records(source, topic, records[30:])
            wait_for("/readyz to answer 200", lambda: _answers(port, "/readyz", 200), 90, relay)
            copied = f"{topic}-copy"
            wait_for("every record relayed", lambda t=target, c=copied: committed_count(t, c, 2) >= 60, 60, relay)
            assert relay.terminate(60) == 0, relay.log_tail()
        finally:
            if relay.alive():
                relay.kill9()
        runs = 2 if side == "source" else 1
        assert relay.log_text().count('"start-up waits') == runs, relay.log_tail()  # once per run, not per attempt
        assert_records(records, read_records(target, f"{topic}-copy", 2))


def _full_records(count: int) -> list[Rec]:
    """Records over 2 partitions with null and empty keys and values, duplicate and null-valued headers."""
    out = []
    for i in range(count):
        key = None if i % 5 == 0 else b"" if i % 5 == 1 else f"key-{i}".encode()
        value = None if i % 7 == 0 else b"" if i % 7 == 1 else f"value-{i}".encode()
        out.append(Rec(i % 2, key, value, (("h", b"1"), ("h", None)), NOW + i * 1000))
    return out
