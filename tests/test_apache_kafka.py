"""Apache Kafka as the local broker (``RTQIS_BROKER=kafka``, :mod:`rtqis.kafka.apache`): started from the
code on loopback, our clients (confluent-kafka, and aiokafka through a Faust worker) work against it, its
offsets answers are exact, its data survives a restart, and it stops with its parent, even a SIGKILLed one.

Skipped when ``java`` is missing, or when ``mvn`` is missing and the jars are neither cached nor in
``KAFKA_HOME``. The first run fetches the jars with Maven (~45 MB) into ``~/.cache/rtqis``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka import TopicPartition

from rtqis.errors import BrokerError
from rtqis.kafka import apache
from rtqis.kafka.admin import create_topics, list_topics
from rtqis.kafka.apache import ApacheKafka, KafkaCluster, kafka_classpath, kafka_version, server_properties
from rtqis.kafka.clients import MessageProducer, new_consumer
from rtqis.kafka.embedded import EmbeddedBroker, local_broker, port_is_free
from rtqis.kafka.offsets import broker_capabilities, offsets_at_time, partition_bounds, true_end_offsets
from rtqis.process import die_with_parent
from rtqis.schemas.codec import decode
from rtqis.schemas.frames import Frame
from rtqis.settings import Settings, load_settings
from rtqis.topics import TRADES
from tests.conftest import Procs, alive_pids, make_settings, port_block, wait_until
from tests.test_pipeline import _frame, expected_last, latest_tickers

pytestmark = [pytest.mark.kafka]

_JAVA = shutil.which("java")
_JARS_AVAILABLE = bool(
    os.environ.get("KAFKA_HOME") or shutil.which("mvn") or any(Path.home().glob(".cache/rtqis/kafka-*/.complete"))
)
_skip_reason = (
    "java is not on PATH (Apache Kafka needs Java 17+)"
    if _JAVA is None
    else "mvn is not on PATH and no Kafka jars are cached or in KAFKA_HOME"
)
requires_kafka = pytest.mark.skipif(_JAVA is None or not _JARS_AVAILABLE, reason=_skip_reason)

#: how long a killed parent's JVM may take to go (s): SIGTERM, then Kafka's controlled shutdown
_ORPHAN_DEADLINE_S = 30.0


def _ports() -> tuple[int, int]:
    """A free broker port whose next port (the controller's default) is free too."""
    p = port_block(2)
    return p, p + 1


_port_block = port_block  # the cluster tests' name


def _kafka_settings(tmp: Path, bootstrap: str = "", **overrides: object) -> Settings:
    return load_settings(broker="kafka", data_dir=tmp / "var", bootstrap_servers=bootstrap, **overrides)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """One Apache Kafka node for the module, started from the code."""
    if _JAVA is None or not _JARS_AVAILABLE:
        pytest.skip(_skip_reason)
    tmp = tmp_path_factory.mktemp("kafka")
    port, controller = _ports()
    b = ApacheKafka(port=port, controller_port=controller, data_dir=tmp / "var", log_path=tmp / "kafka.log")
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def ksettings(kafka: ApacheKafka, tmp_path: Path) -> Settings:
    """Settings for one test on the module's Kafka: its own namespace, topics created."""
    s = make_settings(kafka.bootstrap, tmp_path)
    create_topics(s)
    return s


# --- no broker needed -------------------------------------------------------------------------------------


def test_the_setting_chooses_the_broker(tmp_path: Path) -> None:
    assert load_settings().broker == "auto"
    s = _kafka_settings(tmp_path, broker_port=19092, kafka_heap_mb=256)
    if _JAVA is not None:
        b = local_broker(s)
        assert isinstance(b, ApacheKafka) and b.durable and b.label == "Apache Kafka"
        assert (b.bootstrap, b.controller_port, b.heap_mb) == ("127.0.0.1:19092", 19093, 256)
        assert b.log_path == tmp_path / "var" / "logs" / "kafka.log" and b.home == tmp_path / "var" / "kafka"
    t = local_broker(load_settings(data_dir=tmp_path, broker_port=19094, broker="tansu"))
    assert isinstance(t, EmbeddedBroker) and not t.durable and t.log_path == tmp_path / "logs" / "broker.log"
    with pytest.raises(Exception, match="broker"):
        load_settings(broker="zookeeper")


def test_the_config_is_one_loopback_kraft_node(tmp_path: Path) -> None:
    text = server_properties(host="127.0.0.1", port=9092, controller_port=9093, log_dirs=tmp_path / "d")
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["process.roles"] == "broker,controller" and props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["log.dirs"] == str(tmp_path / "d") and props["offsets.topic.replication.factor"] == "1"
    assert int(props["log.retention.hours"]) > 0
    assert kafka_version().startswith("4.")


def test_three_nodes_are_one_cluster_with_rf3_and_min_isr2(tmp_path: Path) -> None:
    voters = "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    text = server_properties(
        host="127.0.0.1", port=9094, controller_port=9095, log_dirs=tmp_path, node_id=2, voters=voters, replication=3
    )
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert (props["node.id"], props["controller.quorum.voters"]) == ("2", voters)
    for k in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert props[k] == "3", k
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    if _JAVA is None:
        return
    s = _kafka_settings(tmp_path, broker_port=19092, kafka_nodes=3, kafka_heap_mb=256)
    c = local_broker(s)
    assert isinstance(c, KafkaCluster) and c.durable
    assert c.bootstrap == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert [(n.node_id, n.port, n.controller_port, n.heap_mb) for n in c.nodes] == [
        (1, 19092, 19093, 256),
        (2, 19094, 19095, 256),
        (3, 19096, 19097, 256),
    ]
    assert [n.home for n in c.nodes] == [tmp_path / "var" / "kafka" / f"node-{i}" for i in (1, 2, 3)]
    assert [n.log_path for n in c.nodes] == [tmp_path / "var" / "logs" / f"kafka-node-{i}.log" for i in (1, 2, 3)]
    assert {n.cluster_id_file for n in c.nodes} == {tmp_path / "var" / "kafka" / "cluster.id"}
    assert {n.voters for n in c.nodes} == {"1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"}
    assert isinstance(local_broker(_kafka_settings(tmp_path)), ApacheKafka)  # one node: as before
    with pytest.raises(BrokerError, match="needs RTQIS_BROKER=kafka"):
        local_broker(load_settings(data_dir=tmp_path, kafka_nodes=3, broker="tansu"))


def test_java_or_maven_missing_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apache.shutil, "which", lambda name: None)
    with pytest.raises(BrokerError, match=r"needs Java 17\+ but `java` is not on PATH") as e:
        ApacheKafka(data_dir=tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(BrokerError, match=r"needs Maven \(`mvn`\)") as e:
        kafka_classpath(cache_dir=tmp_path / "empty-cache")
    assert "\n" not in str(e.value) and "KAFKA_HOME" in str(e.value)
    with pytest.raises(BrokerError, match="not a Kafka distribution"):
        kafka_classpath(kafka_home=tmp_path)


# --- on a running Kafka -----------------------------------------------------------------------------------


def send_and_read_a_frame(s: Settings) -> list[Any]:
    """One trade frame (BTCUSDT, trade ids 1-3, stamped 1,723,161,600,000) sent by our producer (idempotent,
    acks=all, asserted delivered), then what a consumer reads from the start of partition 0 (<= 30 s)."""
    p = MessageProducer(s)
    p.send(TRADES, _frame("BTCUSDT", [1, 2, 3]), key="BTCUSDT", timestamp_ms=1_723_161_600_000)
    assert p.flush() == 0 and (p.stats.delivered, p.stats.failed) == (1, 0)
    c = new_consumer(s)
    c.assign([TopicPartition(TRADES.full_name(s.namespace), 0, 0)])
    try:
        msgs: list[Any] = []
        for _ in range(60):
            msgs += [x for x in c.consume(1, 0.5) if not x.error()]
            if msgs:
                break
    finally:
        c.close()
    return msgs


@requires_kafka
def test_topics_and_a_frame_round_trip_with_our_clients(ksettings: Settings) -> None:
    names = {t.name for t in list_topics(ksettings)}
    assert TRADES.full_name(ksettings.namespace) in names
    msgs = send_and_read_a_frame(ksettings)
    assert len(msgs) == 1 and msgs[0].key() == b"BTCUSDT" and msgs[0].timestamp()[1] == 1_723_161_600_000
    f = decode(msgs[0].value(), msgs[0].headers())
    assert isinstance(f, Frame) and f.symbol == "BTCUSDT" and [r["trade_id"] for r in f.iter_rows()] == [1, 2, 3]


@requires_kafka
def test_end_offsets_and_time_seek_are_exact(ksettings: Settings) -> None:
    caps = broker_capabilities(ksettings, refresh=True)
    assert caps.exact_end_offsets and caps.time_index  # unlike Tansu: Kafka's own answers are right
    p = MessageProducer(ksettings, **{"linger.ms": 50})
    t0 = 1_723_161_600_000
    for i in range(10):
        p.send(TRADES, _frame("ETHUSDT", [i]), key="ETHUSDT", timestamp_ms=t0 + 1000 * i, partition=0)
    assert p.flush() == 0
    name = TRADES.full_name(ksettings.namespace)
    assert true_end_offsets(ksettings, [(name, 0)]) == {(name, 0): 10}
    assert offsets_at_time(ksettings, [name], t0 + 4500) == {(name, 0): 5}  # first record at or after the time
    assert offsets_at_time(ksettings, [name], t0) == {(name, 0): 0}


@requires_kafka
@pytest.mark.integration
def test_a_faust_worker_round_trip(ksettings: Settings, procs: Procs) -> None:
    p = MessageProducer(ksettings)
    for k in range(4):
        for sym in ("BTCUSDT", "ETHUSDT"):
            p.send(TRADES, _frame(sym, list(range(10 * k, 10 * k + 10)), price=100.0 + k), key=sym)
    assert p.flush() == 0
    expected = expected_last(ksettings)
    assert {s: e["trades"] for s, e in expected.items()} == {"BTCUSDT": 40, "ETHUSDT": 40}
    worker = procs.start(ksettings, "worker", name="worker")
    got = latest_tickers(ksettings, {s: e["trades"] for s, e in expected.items()}, timeout_s=90)
    assert worker.poll() is None, procs.log_of(worker)
    for sym, e in expected.items():
        assert (got[sym]["trades"], got[sym]["trade_id"], got[sym]["price"]) == (
            e["trades"],
            e["trade_id"],
            e["price"],
        )


@requires_kafka
def test_storage_is_formatted_once_and_data_survives_a_restart(tmp_path: Path) -> None:
    port, controller = _ports()
    data = tmp_path / "var"
    s = make_settings(f"127.0.0.1:{port}", tmp_path)
    with ApacheKafka(port=port, controller_port=controller, data_dir=data, log_path=tmp_path / "k.log") as b:
        create_topics(s)
        p = MessageProducer(s)
        p.send(TRADES, _frame("BTCUSDT", [7]), key="BTCUSDT", partition=0)
        assert p.flush() == 0
    assert not b.alive() and port_is_free("127.0.0.1", port)
    cid = (data / "kafka" / "cluster.id").read_text()
    meta = (data / "kafka" / "data" / "meta.properties").read_text()
    with ApacheKafka(port=port, controller_port=controller, data_dir=data, log_path=tmp_path / "k.log"):
        name = TRADES.full_name(s.namespace)
        assert true_end_offsets(s, [(name, 0)]) == {(name, 0): 1}  # the message is still there
    assert (data / "kafka" / "cluster.id").read_text() == cid
    assert (data / "kafka" / "data" / "meta.properties").read_text() == meta  # not formatted again


@requires_kafka
def test_a_new_broker_on_the_same_address_is_checked_again(tmp_path: Path) -> None:
    """The self-check's answer is kept per broker (address and cluster id), not per address: a process
    that saw Apache Kafka (exact end offsets) and then Tansu on the same port (not exact) must not trust
    Tansu's end offsets, or a long-lived sink or bot reads Tansu's understated ends as the truth."""
    port, controller = _ports()
    s = make_settings(f"127.0.0.1:{port}", tmp_path)
    with ApacheKafka(port=port, controller_port=controller, data_dir=tmp_path / "var", log_path=tmp_path / "k.log"):
        assert broker_capabilities(s).exact_end_offsets
    with EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log"):
        assert not broker_capabilities(s).exact_end_offsets
        create_topics(s)
        p = MessageProducer(s, **{"linger.ms": 50})
        for i in range(10):  # one batch: Tansu's own answer for the end is 1
            p.send(TRADES, _frame("ETHUSDT", [i]), key="ETHUSDT", partition=0)
        assert p.flush() == 0
        name = TRADES.full_name(s.namespace)
        assert partition_bounds(s, [(name, 0)]) == {(name, 0): (0, 10)}


# --- `rtqis broker` with RTQIS_BROKER=kafka: clean stop, no orphan -----------------------------------------


def _rtqis_broker(tmp_path: Path, nodes: int = 1) -> tuple[subprocess.Popen[bytes], Path, int]:
    """`rtqis broker` with RTQIS_BROKER=kafka (``--nodes nodes``), once it says it is ready."""
    port = _ports()[0] if nodes == 1 else _port_block(2 * nodes)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTQIS_")}
    env.update(RTQIS_BROKER="kafka", RTQIS_BROKER_PORT=str(port), RTQIS_DATA_DIR=str(tmp_path / "var"))
    env.update(RTQIS_KAFKA_HEAP_MB="256")
    log = tmp_path / "broker.out"
    with log.open("wb") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "rtqis", "broker", *(["--nodes", str(nodes)] if nodes > 1 else [])],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        )
    ready = b"Apache Kafka ready on 127.0.0.1:" if nodes == 1 else b"Apache Kafka cluster ready on 127.0.0.1:"
    wait_until(lambda: ready in log.read_bytes() or p.poll() is not None, 120 * nodes, "rtqis broker (kafka)")
    assert p.poll() is None, log.read_text(errors="replace")
    return p, log, port


def _jvms(p: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return [k for k in psutil.Process(p.pid).children(recursive=True) if k.name() == "java"]


@requires_kafka
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_rtqis_broker_kafka_stops_cleanly(tmp_path: Path, sig: int) -> None:
    p, log, port = _rtqis_broker(tmp_path)
    jvms = _jvms(p)
    try:
        assert len(jvms) == 1, log.read_text(errors="replace")
        assert (tmp_path / "var" / "logs" / "kafka.log").exists()
        p.send_signal(sig)
        assert p.wait(60) == 0, log.read_text(errors="replace")
        assert not alive_pids([j.pid for j in jvms])  # stopped before the command exited
        assert port_is_free("127.0.0.1", port) and b"broker stopped" in log.read_bytes()
    finally:
        _cleanup(p, jvms)


@requires_kafka
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_sigkill_of_rtqis_broker_leaves_no_jvm(tmp_path: Path) -> None:
    p, log, port = _rtqis_broker(tmp_path)
    jvms = _jvms(p)
    try:
        assert len(jvms) == 1, log.read_text(errors="replace")
        p.kill()
        p.wait(10)
        pids = [j.pid for j in jvms]
        wait_until(lambda: not alive_pids(pids), _ORPHAN_DEADLINE_S, "the JVM of a SIGKILLed `rtqis broker` to exit")
        wait_until(lambda: port_is_free("127.0.0.1", port), 10, f"port {port} to be free")
    finally:
        _cleanup(p, jvms)


def _cleanup(p: subprocess.Popen[bytes], jvms: list[psutil.Process]) -> None:
    """Kill what a failed test left: the command and the JVMs it was seen to start (by pid)."""
    if p.poll() is None:
        p.kill()
        p.wait(10)
    for j in jvms:
        try:
            j.kill()
        except psutil.Error:
            pass
