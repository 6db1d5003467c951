"""Broker compatibility suite: each broker behaviour RT-QIS relies on or works around, stated as a test.

`make test` runs it on the embedded Tansu and on Apache Kafka (``RTQIS_TEST_BROKER=kafka``); it also runs
on any broker named by RTQIS_BOOTSTRAP_SERVERS (`RTQIS_BOOTSTRAP_SERVERS=host:9092 pytest -m broker`,
taken to be Kafka unless ``RTQIS_TEST_BROKER=tansu``). What RT-QIS builds on (true offsets, time seeks,
compression, idempotent confluent-kafka producers, topics usable once created) holds on both. Where the
two brokers differ, the test states each one's own behaviour, keyed by the ``broker_kind`` fixture:

=============================  ==============================  ==============================
raw answer                     Tansu 0.6                       Apache Kafka 4.4
=============================  ==============================  ==============================
ListOffsets end                base of the last batch + 1      last offset + 1
ListOffsets by time            offset 0 for every time         first offset at/after; -1 past
self-check (capabilities)      neither trusted: fetch-based    both trusted
consumer session < 6 s         accepted                        INVALID_SESSION_TIMEOUT
aiokafka idempotent producer   InitProducerId: UnknownError    works
=============================  ==============================  ==============================
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_END, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic

from rtqis.kafka.admin import admin_client, create_topics, wait_for_topics
from rtqis.kafka.groups import group_session_s
from rtqis.kafka.offsets import BrokerCapabilities, broker_capabilities, offsets_at_time, topic_offsets
from rtqis.settings import Settings
from rtqis.topics import TRADES
from tests.conftest import make_settings
from tests.test_cli import run_cli

pytestmark = [pytest.mark.broker, pytest.mark.both_brokers]


def new_topic(settings: Settings, partitions: int = 1) -> str:
    name = f"{settings.namespace}.compat.{uuid.uuid4().hex[:6]}"
    admin = admin_client(settings)  # keep the client alive until the future resolves
    admin.create_topics([NewTopic(name, partitions, replication_factor=-1)])[name].result()
    wait_for_topics(admin, {name: partitions})  # Kafka answers CreateTopics before its metadata has the topic
    return name


def produce(settings: Settings, topic: str, n: int, ts0: int = 1_000_000, step: int = 10, **conf: object) -> None:
    """n records in as few batches as the producer makes (linger 200 ms), timestamps ts0 + step*i."""
    p = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 200, **conf})
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode(), key=f"k{i % 5}".encode(), partition=0, timestamp=ts0 + step * i)
    assert p.flush(30) == 0


def test_end_offset_equals_records_produced_in_one_batch(settings: Settings) -> None:
    topic = new_topic(settings)
    produce(settings, topic, 1000)
    (row,) = topic_offsets(settings, [topic])
    assert (row.earliest, row.end) == (0, 1000)
    r = run_cli("topics", "offsets", topic, "--json", env={"RTQIS_BOOTSTRAP_SERVERS": settings.bootstrap})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"topic": topic, "partition": 0, "earliest": 0, "end": 1000}


def test_the_end_of_a_topic_still_being_written_is_found_without_waiting_for_quiet(settings: Settings) -> None:
    """A topic a producer keeps writing (the sink resuming after a broker outage while the producers
    flush their backlog): the end lookup answers an end at least the one it started from, and returns once
    every partition answered instead of reading on until the writes pause (the fetch-based probe on Tansu
    did, to its 10 s timeout, and the sink resumed 10 s late)."""
    topic = new_topic(settings)
    produce(settings, topic, 1000)
    stop = threading.Event()

    def write() -> None:
        p = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 5})
        i = 0
        while not stop.is_set():
            p.produce(topic, value=b"busy%d" % i, partition=0)
            p.poll(0)
            i += 1
            if i % 50 == 0:
                time.sleep(0.005)
        p.flush(10)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        (row,) = topic_offsets(settings, [topic])
        took = time.monotonic() - t0
    finally:
        stop.set()
        writer.join(15)
    (after,) = topic_offsets(settings, [topic])
    assert 1000 < row.end <= after.end
    assert took < 5.0, f"the lookup took {took:.1f} s on a busy topic (the probe's timeout is 10 s)"


#: each broker's raw ListOffsets answers for 50 records in one batch (timestamps 1_000_000 + 10 i), and what
#: the self-check concludes from them
RAW_END = {"tansu": 1, "kafka": 50}  # Tansu 0.6: the base offset of the last batch + 1
RAW_AT_TIME = {  # ListOffsets by time for 1_000_055, 0 and a time past the last record
    "tansu": (0, 0, 0),  # offset 0 whatever the time
    "kafka": (6, 0, OFFSET_END),
}
CAPABILITIES = {
    "tansu": BrokerCapabilities(exact_end_offsets=False, time_index=False),
    "kafka": BrokerCapabilities(exact_end_offsets=True, time_index=True),
}


def test_self_check_tells_whether_the_broker_end_offset_can_be_trusted(settings: Settings, broker_kind: str) -> None:
    """The self-check describes the broker's raw answers, and each broker answers as it is known to."""
    topic = new_topic(settings)
    produce(settings, topic, 50)
    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "compat"})
    try:
        _, raw_end = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
        raw_at = tuple(
            c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)[0].offset
            for ts in (1_000_055, 0, 9_999_999)
        )
    finally:
        c.close()
    caps = broker_capabilities(settings, refresh=True)
    assert caps.exact_end_offsets == (raw_end == 50)
    assert caps.time_index == (raw_at[0] == 6)
    assert (raw_end, raw_at, caps) == (RAW_END[broker_kind], RAW_AT_TIME[broker_kind], CAPABILITIES[broker_kind])


def test_created_topics_are_usable_when_create_topics_returns(bootstrap: str, tmp_path: Path) -> None:
    """create_topics returns only once the broker's metadata shows every new topic with its partitions:
    Apache Kafka answers CreateTopics ~0.1 s before its broker knows the topic, and a client asking in
    between (the worker, the sink, an offsets lookup) got UNKNOWN_TOPIC_OR_PART."""
    for round_ in range(3):  # on a new Kafka node the first creation may be quick enough; the next are not
        s = make_settings(bootstrap, tmp_path / str(round_), partitions=3)
        created = create_topics(s)
        assert len(created) >= 10
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat"})  # a new client: no cached metadata
        try:
            md = c.list_topics(timeout=10)
            missing = [n for n in created if n not in md.topics or md.topics[n].error is not None]
            assert not missing, f"round {round_}: {len(missing)} of {len(created)} created topics not in metadata"
            # each partition is served by its leader (not NOT_LEADER_FOR_PARTITION), empty
            ends = {
                (n, p): c.get_watermark_offsets(TopicPartition(n, p), timeout=10, cached=False)
                for n in created
                for p in md.topics[n].partitions
            }
        finally:
            c.close()
        assert set(ends.values()) == {(0, 0)}, round_


def test_a_replay_namespace_keeps_old_trades(settings: Settings) -> None:
    """Replayed trades carry their event time (2024) as record timestamp, and Kafka's time retention counts
    from it: with the registry's 7 days, Kafka deleted a replay's input within its retention check (a
    minute) before the worker had read it (test_candles_pipeline's second worker found the log empty).
    A replay namespace's topics have no time retention; both brokers report the config."""
    trades = TRADES.full_name(settings.namespace)
    res = ConfigResource("topic", trades)
    admin = admin_client(settings)  # kept alive until the future resolves
    conf = admin.describe_configs([res])[res].result(timeout=10)
    assert (conf["cleanup.policy"].value, conf["retention.ms"].value) == ("delete", "-1")


def test_records_stamped_hours_ahead_are_accepted(settings: Settings) -> None:
    """A feed generated or replayed faster than real time stamps its records with event times hours
    ahead of the clock: Kafka 4 refused such a batch (INVALID_RECORD, the bench's e2e lost one) until
    every topic RT-QIS creates accepted any timestamp (``TIMESTAMP_CONFIG``)."""
    trades = TRADES.full_name(settings.namespace)
    errors: list[object] = []
    p = Producer({"bootstrap.servers": settings.bootstrap, "enable.idempotence": True})
    ahead = int(time.time() * 1000) + 5 * 3600 * 1000
    for i in range(3):
        p.produce(trades, b"x", key=b"K", timestamp=ahead + i, on_delivery=lambda e, m: errors.append(e) if e else None)
    assert p.flush(30) == 0
    assert errors == []
    res = ConfigResource("topic", trades)
    admin = admin_client(settings)
    conf = admin.describe_configs([res])[res].result(timeout=10)
    assert conf["message.timestamp.after.max.ms"].value == str(2**63 - 1)


#: does the broker let a consumer group member ask for a 3 s session? Kafka's group.min.session.timeout.ms
#: is 6 s (the worker asks for exactly that there, 2 s on Tansu: rtqis.agents.config.group_session_s)
SHORT_SESSION_ACCEPTED = {"tansu": True, "kafka": False}


def _join(settings: Settings, session_ms: int) -> tuple[list[int], list[int]]:
    """A group member with a ``session_ms`` session on a new topic: (partitions assigned, error codes)."""
    topic = new_topic(settings)
    errors: list[KafkaError] = []
    assigned: list[TopicPartition] = []
    c = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"{settings.namespace}-s{session_ms}",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": session_ms // 10,
            "error_cb": errors.append,
        }
    )
    try:
        c.subscribe([topic], on_assign=lambda _c, parts: assigned.extend(parts))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not assigned and not errors:
            msg = c.poll(0.2)
            if msg is not None and msg.error():
                errors.append(msg.error())
    finally:
        c.close()
    return [tp.partition for tp in assigned], [e.code() for e in errors]


def test_a_session_below_six_seconds(settings: Settings, broker_kind: str) -> None:
    assigned, codes = _join(settings, 3000)
    if SHORT_SESSION_ACCEPTED[broker_kind]:
        assert assigned == [0] and not codes, codes
    else:
        assert KafkaError.INVALID_SESSION_TIMEOUT in codes and not assigned, codes


def test_the_worker_asks_for_a_session_its_broker_accepts(settings: Settings, broker_kind: str) -> None:
    """2 s on Tansu, known by its cluster id (its group join is held for about half the session: 1 s, not
    3), Kafka's minimum of 6 s elsewhere; and the broker accepts it."""
    session_s = group_session_s(settings)
    assert session_s == {"tansu": 2.0, "kafka": 6.0}[broker_kind]
    assigned, codes = _join(settings, int(session_s * 1000))
    assert assigned == [0] and not codes, codes
    forced = settings.model_copy(update={"group_session_s": 9.0})
    assert group_session_s(forced) == 9.0  # RTQIS_GROUP_SESSION_S wins over the broker


def test_empty_topic_has_equal_earliest_and_end(settings: Settings) -> None:
    topic = new_topic(settings, partitions=3)
    rows = topic_offsets(settings, [topic])
    assert [(r.partition, r.earliest, r.end) for r in rows] == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]


def test_group_committed_offset_and_lag(settings: Settings) -> None:
    topic = new_topic(settings)
    produce(settings, topic, 100)
    group = f"{settings.namespace}-g"
    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 40)], asynchronous=False)
    finally:
        c.close()
    (row,) = topic_offsets(settings, [topic], group=group)
    assert (row.end, row.committed, row.lag) == (100, 40, 60)
    r = run_cli(
        "topics", "offsets", topic, "--group", group, "--json", env={"RTQIS_BOOTSTRAP_SERVERS": settings.bootstrap}
    )
    assert json.loads(r.stdout)["lag"] == 60


@pytest.mark.parametrize(
    ("ts", "expected"),
    [(1_000_055, 6), (1_000_060, 6), (0, 0), (1_000_000, 0), (1_000_990, 99), (1_000_991, 100), (9_999_999, 100)],
)
def test_seek_by_time_finds_first_record_at_or_after(settings: Settings, ts: int, expected: int) -> None:
    topic = new_topic(settings)
    produce(settings, topic, 100)  # timestamps 1_000_000 + 10 i
    assert offsets_at_time(settings, [topic], ts) == {(topic, 0): expected}


def test_seek_by_time_on_the_cli(settings: Settings) -> None:
    topic = new_topic(settings)
    produce(settings, topic, 30, ts0=1_723_161_600_000, step=1000)  # one record a second from 2024-08-09T00:00Z
    env = {"RTQIS_BOOTSTRAP_SERVERS": settings.bootstrap}
    r = run_cli("topics", "offsets", topic, "--time", "2024-08-09T00:00:12.5Z", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["at_time"] == 13


@pytest.mark.parametrize("codec", ["zstd", "lz4", "gzip", "snappy"])
def test_compressed_batches_are_readable_by_both_clients(settings: Settings, codec: str) -> None:
    topic = new_topic(settings)
    produce(settings, topic, 200, **{"compression.type": codec})
    c = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": "x", "fetch.wait.max.ms": 20})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    try:
        while len(got) < 200:
            msg = c.poll(10)
            assert msg is not None, f"confluent-kafka read {len(got)} of 200"
            got.append(msg.value())
    finally:
        c.close()
    assert got == [f"v{i}".encode() for i in range(200)]

    async def read_aiokafka() -> list[bytes]:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition as ATP

        ac = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
        await ac.start()
        try:
            tp = ATP(topic, 0)
            ac.assign([tp])
            ac.seek(tp, 0)
            out: list[bytes] = []
            while len(out) < 200:
                batch = await ac.getmany(tp, timeout_ms=10_000)
                assert batch, f"aiokafka read {len(out)} of 200"
                out.extend(m.value for m in batch[tp])
            return out
        finally:
            await ac.stop()

    assert asyncio.run(read_aiokafka()) == got


def test_idempotent_producer_works(settings: Settings) -> None:
    """confluent-kafka's idempotent producer gets a producer id (aiokafka's does not on Tansu 0.6)."""
    topic = new_topic(settings)
    produce(settings, topic, 20, **{"enable.idempotence": True})
    (row,) = topic_offsets(settings, [topic])
    assert row.end == 20


#: aiokafka's idempotent producer: Tansu 0.6 answers its InitProducerId with an unknown error
AIOKAFKA_IDEMPOTENT = {"tansu": "UnknownError", "kafka": "ok"}


def test_aiokafka_idempotent_producer(settings: Settings, broker_kind: str) -> None:
    topic = new_topic(settings)

    async def send() -> str:
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, enable_idempotence=True)
        try:
            await asyncio.wait_for(p.start(), 30)
            await asyncio.wait_for(p.send_and_wait(topic, b"x", partition=0), 30)
            return "ok"
        except Exception as e:  # noqa: BLE001 - the outcome is what is compared
            return type(e).__name__
        finally:
            await asyncio.wait_for(p.stop(), 30)

    outcome = asyncio.run(send())
    assert outcome == AIOKAFKA_IDEMPOTENT[broker_kind]
    (row,) = topic_offsets(settings, [topic])
    assert row.end == (1 if outcome == "ok" else 0)
