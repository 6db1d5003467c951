"""Hostile input (#21): a message too large or too broken to dead-letter whole is dead-lettered as a bounded
excerpt with its size, topic, partition, offset and reason; no consumer crashes or loops on it, and the
good trades after it are stored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer

from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import MessageProducer
from rtqis.schemas import models as m
from rtqis.schemas.codec import encode
from rtqis.schemas.deadletters import EXCERPT_BYTES, MAX_WHOLE_PAYLOAD, bounded_dead_letter
from rtqis.sinks.history import open_history
from rtqis.topics import DEADLETTER, TRADES
from tests.conftest import Procs, collect, make_settings, wait_until
from tests.test_pipeline import _frame


def test_a_dead_letter_is_bounded_whatever_the_message() -> None:
    small = bounded_dead_letter("sink", "bad", b"{not json", source_topic="t", partition=0, offset=7, key=b"K\xff")
    assert (small.payload, small.payload_size, small.reason, small.key) == (b"{not json", 9, "bad", "K\ufffd")
    big = os.urandom(5 * 1024 * 1024)
    dl = bounded_dead_letter(
        "worker.trades", "x" * 100_000, big, source_topic="t", partition=2, offset=9, key="k" * 100_000
    )
    assert dl.payload == big[:EXCERPT_BYTES] and dl.payload_size == len(big)
    assert (dl.source_topic, dl.partition, dl.offset) == ("t", 2, 9)
    assert f"[payload of {len(big)} bytes: first {EXCERPT_BYTES} bytes kept]" in dl.reason
    assert len(dl.reason) < 5_000 and len(dl.key or "") < 5_000
    for codec in ("json", "avro"):
        value, _ = encode(dl, codec)
        assert len(value) < 20_000  # far below the broker's 1 MB default
    whole = os.urandom(MAX_WHOLE_PAYLOAD)
    assert bounded_dead_letter("sink", "r", whole).payload == whole


#: the largest random messages each broker takes: Tansu 0.6 has no limit this side of 5 MB; Kafka refuses a
#: batch over its message.max.bytes (1 MiB + 12 by default, MESSAGE_TOO_LARGE)
LARGEST_ACCEPTED = {"tansu": (5_000_000, 1_500_000), "kafka": (1_000_000, 800_000)}


def _produce_largest(p: Producer, topic: str, sizes: list[int]) -> int:
    """Produce random bytes of the first size the broker accepts: that size."""
    for size in sizes:
        got: list[object] = []

        def report(err: object, _msg: object, got: list[object] = got) -> None:
            got.append(err)

        try:
            p.produce(topic, value=os.urandom(size), key=b"BTCUSDT", on_delivery=report)
        except KafkaException:
            continue
        p.flush(30)
        if got and got[0] is None:
            return size
    raise AssertionError(f"the broker took none of {sizes}")


def _stored_trades(s: object) -> int:
    try:
        with open_history(s) as st:  # type: ignore[arg-type]
            return int(st.counts()["trades"])
    except Exception:  # noqa: BLE001 - no snapshot yet
        return 0


@pytest.mark.broker
@pytest.mark.integration
@pytest.mark.both_brokers
def test_huge_random_messages_are_dead_lettered_once_as_excerpts(
    bootstrap: str, broker_kind: str, tmp_path: Path, procs: Procs
) -> None:
    s = make_settings(bootstrap, tmp_path, candle_grace_ms=0)
    create_topics(s)
    topic = TRADES.full_name(s.namespace)
    raw = Producer({"bootstrap.servers": s.bootstrap, "message.max.bytes": 8_000_000})
    big = _produce_largest(raw, topic, [5_000_000, 4_000_000, 3_000_000, 2_000_000, 1_000_000])
    mid = _produce_largest(raw, topic, [1_500_000, 800_000])
    assert (big, mid) == LARGEST_ACCEPTED[broker_kind]
    good = MessageProducer(s)
    good.send(TRADES, _frame("BTCUSDT", [1, 2, 3]), key="BTCUSDT")
    good.send(TRADES, _frame("BTCUSDT", [4, 5], t0=1_723_161_660_000), key="BTCUSDT")
    good.flush()

    worker = procs.start(s, "worker", name="worker")
    sink = procs.start(s, "sink", name="sink")
    wait_until(lambda: _stored_trades(s) == 5, 90, "the 5 good trades in DuckDB")
    dls = collect(s, DEADLETTER.name, lambda rows: len(rows) >= 2)
    collect(s, DEADLETTER.name, lambda rows: False, until_end=True, timeout_s=5)  # settle
    dls = collect(s, DEADLETTER.name, lambda rows: False, until_end=True)
    assert worker.poll() is None, procs.log_of(worker)
    assert sink.poll() is None, procs.log_of(sink)
    by_stage: dict[str, list[dict[str, object]]] = {}
    for d in dls:
        by_stage.setdefault(str(d["stage"]), []).append(d)
    # once in total: the worker owns ticks.trade's dead letters; the sink refuses the messages, sends none
    assert sorted(by_stage) == ["worker.trades"]
    for stage, rows in by_stage.items():
        assert [(r["offset"], r["payload_size"]) for r in rows] == [(0, big), (1, mid)], stage  # once each
        for r in rows:
            assert r["source_topic"] == topic and r["partition"] is not None
            assert len(r["payload"]) == EXCERPT_BYTES  # type: ignore[arg-type]
            assert f"[payload of {r['payload_size']} bytes: first {EXCERPT_BYTES} bytes kept]" in str(r["reason"])
    for p in (worker, sink):
        log = procs.log_of(p)
        assert "Traceback" not in log and "MSG_SIZE_TOO_LARGE" not in log, log[-3000:]
    m.DeadLetter(**{k: v for k, v in dls[0].items()})  # a valid model, as published


@pytest.mark.broker
@pytest.mark.integration
@pytest.mark.both_brokers
def test_the_worker_refuses_implausible_rows_and_unknown_symbols_and_goes_on(
    bootstrap: str, tmp_path: Path, procs: Procs
) -> None:
    """Through the trades agent: a 2100 trade, an id of 9e18 and a DOGEUSDT frame are dead-lettered with
    their reasons; the good rows of the same frames and the trades after them still count."""
    from tests.test_pipeline import latest_tickers

    s = make_settings(bootstrap, tmp_path)
    create_topics(s)
    p = MessageProducer(s)
    t0 = 1_723_161_600_000
    p.send(TRADES, _frame("BTCUSDT", [1, 2, 3], t0=t0), key="BTCUSDT")
    bad = _frame("BTCUSDT", [4, 5, 6], t0=t0 + 10)
    bad.cols["trade_time"][0] = 4_102_444_800_000  # type: ignore[index]  # 2100-01-01
    bad.cols["trade_id"][2] = 9_000_000_000_000_000_000  # type: ignore[index]
    p.send(TRADES, bad, key="BTCUSDT")
    p.send(TRADES, _frame("DOGEUSDT", [1, 2], t0=t0), key="DOGEUSDT")
    p.send(TRADES, _frame("BTCUSDT", [7, 8], price=101.5, t0=t0 + 20), key="BTCUSDT")
    p.flush()
    worker = procs.start(s, "worker", name="worker")
    last = latest_tickers(s, {"BTCUSDT": 6})
    assert (last["BTCUSDT"]["trades"], last["BTCUSDT"]["trade_id"], last["BTCUSDT"]["price"]) == (6, 8, 101.5)
    assert "DOGEUSDT" not in last
    dls = collect(s, DEADLETTER.name, lambda rows: len(rows) >= 2)
    reasons = sorted(str(d["reason"]) for d in dls)
    assert reasons[0].startswith("2 invalid rows: row 0: time 4102444800000 more than 300000 ms ahead")
    assert "row 2: trade_id 9000000000000000000 jumps more than 10000000" in reasons[0]
    assert reasons[1] == "2 invalid rows: row 0: unknown symbol 'DOGEUSDT' (configured: BTCUSDT, ETHUSDT); " + (
        "row 1: unknown symbol 'DOGEUSDT' (configured: BTCUSDT, ETHUSDT)"
    )
    assert worker.poll() is None, procs.log_of(worker)
