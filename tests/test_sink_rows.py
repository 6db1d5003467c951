"""The sink's intake: each message decoded and validated once, tick rows checked with the worker's rules,
and a row the worker dead-letters never written to DuckDB (it goes to the deadletter topic, counted).

Most tests need no broker: :func:`rtqis.sinks.sink.accept` and the sink's batch against a real DuckDB file
in tmp_path. One test runs the whole sink against the broker. No test data files are needed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from confluent_kafka import Producer

from rtqis.errors import RtqisError
from rtqis.kafka.admin import create_topics
from rtqis.kafka.clients import MessageProducer
from rtqis.schemas import models as m
from rtqis.schemas.codec import encode
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame, validate_trade_frame
from rtqis.settings import Settings
from rtqis.sinks import sink as sink_mod
from rtqis.sinks.history import open_history
from rtqis.sinks.sink import ROW_RULES, _Batch, accept, run_sink, sink_paths
from rtqis.sinks.store import Store
from rtqis.topics import BOOK, CANDLES_1M, DEADLETTER, PAIR, TRADES
from tests.conftest import collect, make_settings, wait_until
from tests.test_store import candle

T0 = 1_723_161_600_000  # 2024-08-09T00:00:00Z
N = 5
BAD = 2  # the row spoiled in each case

# (column, value): a NaN price, a zero quantity, a negative price, impossible times
SPOILERS = {
    "nan price": ("price", float("nan")),
    "zero qty": ("qty", 0.0),
    "negative price": ("price", -5.0),
    "impossible time": ("trade_time", 0),
    "negative time": ("trade_time", -T0),
}


def trade_cols(first_id: int = 1, n: int = N) -> dict[str, Any]:
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return {
        "trade_id": ids,
        "price": 100.0 + ids.astype(np.float64),
        "qty": np.full(n, 0.5),
        "trade_time": T0 + ids,
        "event_time": T0 + ids + 1,
        "recv_time": T0 + ids + 2,
        "buyer_maker": ids % 2 == 0,
    }


def spoiled_frame(case: str, symbol: str = "BTCUSDT", first_id: int = 1) -> Frame:
    cols = trade_cols(first_id)
    name, value = SPOILERS[case]
    cols[name] = cols[name].copy()
    cols[name][BAD] = value
    return Frame.build(TRADE_FRAME, symbol, cols)


def workers_reason(frame: Frame) -> str:
    """The reason the worker gives for the one bad row of ``frame`` (its rules, whatever their wording)."""
    _, bad = validate_trade_frame(frame)
    assert [i for i, _ in bad] == [BAD], bad
    return f"1 invalid rows: row {BAD}: {bad[0][1]}"


def stored_trade_ids(path: Path) -> list[int]:
    with duckdb.connect(str(path), read_only=True) as con:
        return [int(r[0]) for r in con.execute("SELECT trade_id FROM trades ORDER BY trade_id").fetchall()]


def write(tmp_path: Path, *objs: m.Message | Frame) -> Path:
    """What the sink does with accepted values: one batch, one write; returns the database path."""
    batch = _Batch()
    for obj in objs:
        batch.add(obj)
    path = tmp_path / "sink.duckdb"
    with Store(path) as st:
        batch.write(st)
    return path


def test_the_sink_uses_the_workers_row_rules() -> None:
    assert ROW_RULES[TRADE_FRAME.name] is validate_trade_frame
    assert sink_mod.validate_trade_frame is validate_trade_frame  # the very function the worker calls


@pytest.mark.parametrize("codec", ["avro", "json"])
@pytest.mark.parametrize("case", list(SPOILERS))
def test_a_bad_trade_row_never_reaches_duckdb(tmp_path: Path, case: str, codec: Any) -> None:
    frame = spoiled_frame(case)
    value, headers = encode(frame, codec)
    got = accept(TRADES, value, headers)
    assert got.reason is not None  # dead-lettered, with the reason
    bad_id = BAD + 1
    good_ids = [i for i in range(1, N + 1) if i != bad_id]
    if codec == "json" and case == "nan price":
        # JSON has no NaN: orjson writes null and the whole frame is undecodable, as for the worker
        assert got.value is None and got.invalid_rows == 0
        assert "price" in got.reason
        return
    assert got.reason == workers_reason(frame)
    assert SPOILERS[case][0] in got.reason
    assert got.invalid_rows == 1
    assert isinstance(got.value, Frame)
    assert got.value.cols["trade_id"].tolist() == good_ids  # type: ignore[union-attr]
    path = write(tmp_path, got.value)
    assert stored_trade_ids(path) == good_ids
    assert bad_id not in stored_trade_ids(path)


def test_good_frames_pass_whole_and_all_bad_frames_store_nothing(tmp_path: Path) -> None:
    good = accept(TRADES, *encode(Frame.build(TRADE_FRAME, "ETHUSDT", trade_cols(10)), "json"))
    assert good.reason is None and good.invalid_rows == 0
    cols = trade_cols(20)
    cols["qty"] = np.zeros(N)
    bad = accept(TRADES, *encode(Frame.build(TRADE_FRAME, "ETHUSDT", cols), "json"))
    assert bad.value is None and bad.invalid_rows == N
    assert bad.reason is not None and bad.reason.startswith(f"{N} invalid rows: row 0: qty <= 0; row 1: ")
    assert good.value is not None
    assert stored_trade_ids(write(tmp_path, good.value)) == list(range(10, 10 + N))


def test_a_frame_of_an_unknown_symbol_is_refused_whole_like_the_worker_does(tmp_path: Path) -> None:
    configured = ["BTCUSDT", "ETHUSDT"]
    frame = Frame.build(TRADE_FRAME, "DOGEUSDT", trade_cols(30))
    got = accept(TRADES, *encode(frame, "json"), configured)
    assert got.value is None and got.invalid_rows == N
    assert got.reason is not None
    assert got.reason.startswith(f"{N} invalid rows: row 0: unknown symbol 'DOGEUSDT' (configured: BTCUSDT, ETHUSDT)")
    # a configured symbol passes; without a symbol list (a library caller) any symbol does
    ok = accept(TRADES, *encode(Frame.build(TRADE_FRAME, "ETHUSDT", trade_cols(40)), "json"), configured)
    assert ok.reason is None and ok.value is not None
    assert accept(TRADES, *encode(frame, "json")).reason is None


def test_a_crossed_book_row_is_dropped_like_the_worker_does(tmp_path: Path) -> None:
    ids = np.arange(1, 4, dtype=np.int64)
    cols = {
        "update_id": ids,
        "bid_price": np.array([99.0, 101.0, 99.5]),
        "bid_qty": np.ones(3),
        "ask_price": np.array([100.0, 100.0, 100.5]),  # row 1: bid >= ask
        "ask_qty": np.ones(3),
        "event_time": T0 + ids,
        "recv_time": T0 + ids,
    }
    got = accept(BOOK, *encode(Frame.build(BOOK_FRAME, "BTCUSDT", cols), "avro"))
    assert got.reason == "1 invalid rows: row 1: crossed book: bid_price >= ask_price"
    assert got.value is not None
    path = write(tmp_path, got.value)
    with duckdb.connect(str(path), read_only=True) as con:
        assert [r[0] for r in con.execute("SELECT update_id FROM book_tickers ORDER BY 1").fetchall()] == [1, 3]


def test_models_are_validated_once_and_written_as_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = accept(CANDLES_1M, *encode(m.Candle(**candle(T0, close=100.5)), "json"))
    assert got.reason is None and isinstance(got.value, m.Candle)

    def again(*_: Any, **__: Any) -> Any:
        raise AssertionError("a decoded candle was validated a second time")

    monkeypatch.setattr(m.Candle, "model_validate", again)
    path = write(tmp_path, got.value)
    with Store(path, read_only=True) as st:
        assert st.candles("BTCUSDT", "1m")["close"].to_list() == [100.5]


def test_a_message_of_another_schema_is_dead_lettered() -> None:
    got = accept(PAIR, *encode(m.Candle(**candle(T0)), "json"))  # a Candle on analytics.pair
    assert got.value is None
    assert got.reason == "expected a rtqis.PairSignal on analytics.pair, got rtqis.Candle"
    got = accept(TRADES, b"{not json", [])
    assert got.value is None and got.reason


@pytest.mark.broker
@pytest.mark.integration
def test_the_running_sink_refuses_bad_tick_rows_and_dead_letters_only_its_own_topics(
    bootstrap: str, tmp_path: Path
) -> None:
    """Bad rows on ticks.trade are refused (never stored) and counted but not dead-lettered: the worker
    owns that topic's dead letters (each bad message dead-lettered once in total). An undecodable message
    on a topic only the sink consumes (analytics.pair, and ticks.book without mid-price legs) is."""
    s: Settings = make_settings(bootstrap, tmp_path, codec="avro")  # Avro carries a NaN price as it is
    create_topics(s)
    assert sink_mod.dead_letter_topics(s) >= {PAIR.name, BOOK.name} and TRADES.name not in sink_mod.dead_letter_topics(
        s
    )
    frames = [spoiled_frame(case, first_id=1 + 10 * k) for k, case in enumerate(SPOILERS)]
    p = MessageProducer(s)
    for f in frames:
        p.send(TRADES, f, key=f.symbol)
    assert p.flush() == 0
    raw = Producer({"bootstrap.servers": s.bootstrap})
    raw.produce(PAIR.full_name(s.namespace), value=b"{not json")
    raw.produce(BOOK.full_name(s.namespace), value=b"\x00 not a frame")
    assert raw.flush(30) == 0
    good = sorted(int(i) for f in frames for i in f.cols["trade_id"][np.arange(N) != BAD])  # type: ignore[index]
    bad = sorted(int(f.cols["trade_id"][BAD]) for f in frames)  # type: ignore[index]

    stop = threading.Event()
    out: list[sink_mod.SinkStats] = []
    t = threading.Thread(target=lambda: out.append(run_sink(s, stop)), daemon=True)
    t.start()
    try:

        def stored() -> list[int]:  # read through the running sink, as the dashboard does
            try:
                with open_history(s, wait_s=0) as st:
                    return sorted(st.trades("BTCUSDT")["trade_id"].to_list())
            except RtqisError:
                return []

        wait_until(lambda: stored() == good, 60, "the good trade rows in DuckDB")
        collect(s, DEADLETTER.name, lambda rows: len(rows) >= 2, timeout_s=30)
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert stored_trade_ids(sink_paths(s)[0]) == good  # and none of the bad ones
    assert not set(bad) & set(stored_trade_ids(sink_paths(s)[0]))
    dls = collect(s, DEADLETTER.name, lambda rows: False, until_end=True)
    assert len(dls) == 2 and {d["stage"] for d in dls} == {"sink"}
    assert sorted(d["source_topic"] for d in dls) == sorted([PAIR.full_name(s.namespace), BOOK.full_name(s.namespace)])
    assert out and out[0].dead_lettered == 2
    assert out[0].refused == len(frames) and out[0].invalid_rows == len(frames)
