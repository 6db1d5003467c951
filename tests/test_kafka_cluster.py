"""A three-node Apache Kafka cluster (``rtqis broker --nodes 3``, :class:`rtqis.kafka.apache.KafkaCluster`) and
failover: one voter set, one cluster id, replication factor 3 and min ISR 2 on every topic (the internal
ones too); a broker SIGKILLed in the middle of a replay of real trades, restarted later, changes nothing
in the outputs (the digest of candles, signals, alerts and ADF results equals a clean run's on the same
cluster: no loss, no duplicates), with no worker restart. The recovery time and what the clients logged
are printed (``-s``) for the record.

Runs in CI, where three JVMs share two cores: heaps of 256 MB, one module cluster, one clean replay.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from rtqis import replay as replay_module
from rtqis.errors import BrokerError
from rtqis.kafka.apache import ApacheKafka, KafkaCluster
from rtqis.kafka.embedded import port_is_free
from rtqis.kafka.offsets import topic_offsets
from rtqis.replay import ReplayResult, _sink_group, run_replay
from rtqis.settings import Settings
from rtqis.sinks.sink import SINK_TOPICS
from rtqis.topics import ALL_TOPICS, BOOK, TRADES
from rtqis.topics.registry import topic_name
from tests.conftest import BINANCE_DATA, alive_pids, make_settings, wait_until
from tests.test_apache_kafka import _cleanup, _jvms, _port_block, _rtqis_broker, _skip_reason, requires_kafka

#: each test's bound (s), its share of the module's cluster start and clean replay included: a loaded
#: machine (other JVMs, a busy CI runner) runs the three JVMs and the worker many times slower
pytestmark = [pytest.mark.kafka, pytest.mark.integration, requires_kafka, pytest.mark.timeout(900)]

FILES = [str(next((BINANCE_DATA / "trades").glob(f"{s}-spot-trades-*.csv"))) for s in ("BTCUSDT", "ETHUSDT")]
NODES = 3
#: JVM heap of each node (MB): three of them share CI's two cores and memory
HEAP_MB = 256
#: the failover replay is paced (the files span 11 minutes: ~33 s at 20x), so the broker is killed while the
#: producer still sends, whatever the machine's speed; the outputs do not depend on the pace or the framing
#: (the clean run goes at full speed)
FAILOVER_SPEED = 20.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    if shutil.which("java") is None:
        pytest.skip(_skip_reason)
    tmp = tmp_path_factory.mktemp("cluster")
    c = KafkaCluster(
        port=_port_block(2 * NODES), data_dir=tmp / "var", log_path=tmp / "kafka.log", nodes=NODES, heap_mb=HEAP_MB
    )
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _keep_history(s: Settings) -> None:
    """Keep the replay's topics' records whatever their timestamps: the Binance files are from 2024 and
    the registry's time retention (7 days) deletes such records at the broker's next retention check (every
    60 s), often before the worker has read them (a replay on Apache Kafka then loses its input).

    Retried: right after their creation a node may not know the topics yet (UNKNOWN_TOPIC_OR_PART)."""
    admin = _admin(s.bootstrap)
    keep = [ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)]
    resources = [ConfigResource("topic", t.full_name(s.namespace), incremental_configs=keep) for t in ALL_TOPICS]
    deadline = time.monotonic() + 60
    while True:
        try:
            for fut in admin.incremental_alter_configs(resources).values():
                fut.result()
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _patient_offsets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the replay's progress poll (not the pipeline) retry an offset lookup that fails for a while
    on a cluster: after a kill (the metadata still names the dead leader: Not leader for partition, or a
    timeout) or on a fresh cluster (Not coordinator); returns the list of the failures it rode out."""
    failures: list[str] = []
    plain = replay_module._offsets

    def patient(*args: Any) -> Any:
        deadline = time.monotonic() + 60
        while True:
            try:
                return plain(*args)
            except BrokerError as e:
                failures.append(str(e))
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    monkeypatch.setattr(replay_module, "_offsets", patient)
    return failures


@pytest.fixture(scope="module")
def clean(cluster: KafkaCluster, tmp_path_factory: pytest.TempPathFactory) -> ReplayResult:
    """One uninterrupted replay on the cluster: the reference outputs."""
    s = make_settings(cluster.bootstrap, tmp_path_factory.mktemp("clean"))
    with pytest.MonkeyPatch.context() as mp:  # a fresh cluster's group coordinator may move: Not coordinator
        _patient_offsets(mp)
        return run_replay(s, FILES, namespace="clean", on_ready=_keep_history)


def _admin(bootstrap: str) -> AdminClient:
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 0, "logger": logging.getLogger("quiet")}
    return AdminClient(conf)


def test_three_voters_one_cluster_id_rf3_min_isr2(cluster: KafkaCluster, clean: ReplayResult) -> None:
    assert len(cluster.bootstrap.split(",")) == NODES
    md = _admin(cluster.bootstrap).list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    ids = set()
    for n in cluster.nodes:
        props = dict(ln.split("=", 1) for ln in (n.home / "server.properties").read_text().splitlines())
        assert props["controller.quorum.voters"].count("@") == NODES and props["node.id"] == str(n.node_id)
        assert n.home == n.home.parent / f"node-{n.node_id}" and n.log_path is not None and n.log_path.exists()
        meta = (n.home / "data" / "meta.properties").read_text()
        ids |= set(re.findall(r"cluster\.id=(\S+)", meta))
    assert len(ids) == 1  # formatted with one cluster id
    mine = [t for t in md.topics if t.startswith("replay.clean.") or t == "__consumer_offsets"]
    assert topic_name(TRADES.name, "clean") in mine and "__consumer_offsets" in mine
    for name in mine:
        for p in md.topics[name].partitions.values():
            assert len(p.replicas) == NODES, (name, p.replicas)
    res = [ConfigResource("topic", t) for t in (topic_name(TRADES.name, "clean"), "__consumer_offsets")]
    admin = _admin(cluster.bootstrap)  # held until every future has answered
    for r, fut in admin.describe_configs(res).items():
        assert fut.result()["min.insync.replicas"].value == "2", r


# --- failover ---------------------------------------------------------------------------------------------


#: the worker's outputs the sink stores (it stores the input ticks too: those come before the worker runs)
OUTPUTS = tuple(t for t in SINK_TOPICS if t not in (TRADES, BOOK))


def _stored(s: Settings) -> int:
    """Worker outputs the replay's sink has committed (stored in its DuckDB); -1 while the lookup fails
    (right after a kill the metadata still names the dead leader: Not leader for partition)."""
    names = [topic_name(t.name, s.namespace) for t in OUTPUTS]
    try:
        return sum(r.committed or 0 for r in topic_offsets(s, names, group=_sink_group(s.namespace)))
    except BrokerError:
        return -1


def _leader_of(cluster: KafkaCluster, topic: str) -> ApacheKafka:
    md = _admin(cluster.bootstrap).list_topics(topic, timeout=10)
    leader = md.topics[topic].partitions[0].leader
    return next(n for n in cluster.nodes if n.node_id == leader)


_LINE = re.compile(r"\b(WARNING|WARN|ERROR|CRITICAL)\b\s*(.*)")


def _problems(lines: list[str]) -> Counter[str]:
    """Warnings and errors by kind: level and message with numbers, pids and ports blanked."""
    out: Counter[str] = Counter()
    for ln in lines:
        m = _LINE.search(ln)
        if m:
            out[f"{m.group(1)} {re.sub(r'[0-9]+', '#', m.group(2))[:140]}"] += 1
    return out


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def test_a_broker_sigkilled_mid_replay_changes_nothing(
    cluster: KafkaCluster, clean: ReplayResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    poll_failures = _patient_offsets(monkeypatch)
    s = make_settings(cluster.bootstrap, tmp_path)
    ns = "failover"
    out: dict[str, Any] = {}
    ready = threading.Event()

    def on_ready(rs: Settings) -> None:
        _keep_history(rs)
        out["settings"] = rs
        ready.set()

    def replay() -> None:
        try:
            out["result"] = run_replay(s, FILES, namespace=ns, speed=FAILOVER_SPEED, on_ready=on_ready)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            out["error"] = e
            ready.set()

    # the replay in a thread (its worker and sink end with it); the brokers are killed and restarted from
    # this, the main thread, so a restarted JVM outlives the thread that started it
    records = _Records()
    logging.getLogger().addHandler(records)
    t = threading.Thread(target=replay, name="failover-replay", daemon=True)
    t0 = time.monotonic()
    t.start()
    try:
        assert ready.wait(120) and "error" not in out, out.get("error")
        rs: Settings = out["settings"]
        wait_until(lambda: _stored(rs) > 0 or not t.is_alive(), 400, "the first outputs in the sink")
        assert t.is_alive(), out.get("error") or "the replay ended before a broker could be killed"
        victim = _leader_of(cluster, topic_name(TRADES.name, ns))  # the trades' leader: producer and worker move
        at_kill, t_kill = _stored(rs), time.monotonic()
        assert victim.proc is not None
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)
        assert cluster.alive()  # 2 of 3 run: the cluster serves
        wait_until(lambda: _stored(rs) > at_kill or not t.is_alive(), 300, "outputs to flow again")
        recover_s = time.monotonic() - t_kill
        time.sleep(max(0.0, 5.0 - recover_s))  # down for 5 s at least
        down_s = time.monotonic() - t_kill
        victim.start(timeout_s=120)
        t.join(600)
        assert not t.is_alive(), "the replay did not finish"
    finally:
        logging.getLogger().removeHandler(records)
    assert "error" not in out, out.get("error")
    res: ReplayResult = out["result"]
    assert clean.counts["signals"] > 500 and clean.counts["candles"] >= 20  # the clean run has outputs
    assert res.worker_restarts == 0 and res.ticks == clean.ticks == 34_419
    assert res.counts == clean.counts
    assert res.digest == clean.digest  # the same candles, signals, alerts and ADF results: none lost, none twice
    logs = {"producer+replay (in process)": records.lines}
    for name in ("worker", "sink"):
        path = rs.log_dir / f"replay-{ns}-{name}.log"
        logs[name] = path.read_text(errors="replace").splitlines() if path.exists() else []
    report = {
        "killed_node": victim.node_id,
        "stored_at_kill": at_kill,
        "recover_s": round(recover_s, 2),
        "down_s": round(down_s, 2),
        "replay_s": round(res.seconds, 1),
        "clean_replay_s": round(clean.seconds, 1),
        "wall_s": round(time.monotonic() - t0, 1),
        "replay_poll_failures": dict(_problems([f"WARNING {x}" for x in poll_failures])),
        "logged": {k: dict(_problems(v).most_common(12)) for k, v in logs.items()},
    }
    print("\nFAILOVER " + json.dumps(report, indent=1))


# --- `rtqis broker --nodes 3`: all stop on SIGTERM, none outlives a SIGKILLed parent -------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_rtqis_broker_nodes_3_stops_all_its_jvms(tmp_path: Path, sig: int) -> None:
    p, log, port = _rtqis_broker(tmp_path, nodes=NODES)
    jvms = _jvms(p)
    try:
        assert len(jvms) == NODES, log.read_text(errors="replace")
        assert sorted(x.name for x in (tmp_path / "var" / "logs").glob("kafka-node-*.log")) == [
            f"kafka-node-{i}.log" for i in (1, 2, 3)
        ]
        p.send_signal(sig)
        if sig == signal.SIGTERM:
            assert p.wait(120) == 0, log.read_text(errors="replace")
            assert not alive_pids([j.pid for j in jvms])  # all stopped before the command exited
            assert b"broker stopped" in log.read_bytes()
        else:
            p.wait(10)
            pids = [j.pid for j in jvms]
            wait_until(lambda: not alive_pids(pids), 60, "the JVMs of a SIGKILLed `rtqis broker --nodes 3` to exit")
        wait_until(lambda: all(port_is_free("127.0.0.1", port + i) for i in range(2 * NODES)), 10, "the ports")
    finally:
        _cleanup(p, jvms)
