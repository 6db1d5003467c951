"""One set of row rules: the CSV, Parquet and capture readers, the Binance parsers and the frame
validators (worker and sink) reject the same rows with the same reasons (rtqis.schemas.rows)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtqis.producers import binance_csv as bc
from rtqis.producers import binance_format as bf
from rtqis.producers.files import SourceChunk, iter_file
from rtqis.schemas import rows
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame, validate_book_frame, validate_trade_frame
from rtqis.schemas.rows import RowKind, check_columns, first_problem

T0 = 1_723_161_255_342

# (trade_id, price, qty, trade_time): text as Binance writes it; one rule broken per bad row
TRADES: list[tuple[int, str, str, int]] = [
    (1, "100.5", "0.1", T0),  # ok
    (2, "0", "0.1", T0 + 1),  # price <= 0
    (3, "-1.5", "0.1", T0 + 2),  # price <= 0
    (4, "nan", "0.1", T0 + 3),  # price is not a finite number
    (5, "inf", "0.1", T0 + 4),  # price is not a finite number
    (6, "100.5", "0", T0 + 5),  # qty <= 0
    (7, "100.5", "nan", T0 + 6),  # qty is not a finite number
    (8, "100.5", "-2", T0 + 7),  # qty <= 0
    (9, "100.5", "0.1", 0),  # trade_time <= 0
    (-1, "100.5", "0.1", T0 + 9),  # trade_id < 0
    (11, "0", "nan", T0 + 10),  # two problems: the first rule's reason
    (12, "100.6", "0.2", T0 + 11),  # ok
]

# (update_id, bid, bid_qty, ask, ask_qty, event_time)
BOOKS: list[tuple[int, str, str, str, str, int]] = [
    (1, "100.0", "1", "100.1", "2", T0),  # ok
    (2, "100.1", "1", "100.1", "2", T0 + 1),  # crossed
    (3, "100.2", "1", "100.1", "2", T0 + 2),  # crossed
    (4, "0", "1", "100.1", "2", T0 + 3),  # bid_price <= 0
    (5, "100.0", "0", "100.1", "2", T0 + 4),  # bid_qty <= 0
    (6, "100.0", "1", "inf", "2", T0 + 5),  # ask_price is not a finite number
    (7, "100.0", "1", "100.1", "nan", T0 + 6),  # ask_qty is not a finite number
    (8, "100.0", "1", "100.1", "2", 0),  # event_time <= 0
    (-8, "100.0", "1", "100.1", "2", T0 + 8),  # update_id < 0
    (10, "100.0", "1", "100.1", "2", T0 + 9),  # ok
]


def _trade_frame() -> Frame:
    t = np.array([r[3] for r in TRADES], dtype=np.int64)
    return Frame.build(
        TRADE_FRAME,
        "BTCUSDT",
        {
            "trade_id": np.array([r[0] for r in TRADES], dtype=np.int64),
            "price": np.array([float(r[1]) for r in TRADES]),
            "qty": np.array([float(r[2]) for r in TRADES]),
            "trade_time": t,
            "event_time": t,
            "recv_time": t,
            "buyer_maker": np.zeros(len(TRADES), dtype=bool),
        },
    )


def _book_frame() -> Frame:
    return Frame.build(
        BOOK_FRAME,
        "BTCUSDT",
        {
            "update_id": np.array([r[0] for r in BOOKS], dtype=np.int64),
            "bid_price": np.array([float(r[1]) for r in BOOKS]),
            "bid_qty": np.array([float(r[2]) for r in BOOKS]),
            "ask_price": np.array([float(r[3]) for r in BOOKS]),
            "ask_qty": np.array([float(r[4]) for r in BOOKS]),
            "event_time": np.array([r[5] for r in BOOKS], dtype=np.int64),
            "recv_time": np.full(len(BOOKS), T0, dtype=np.int64),
        },
    )


def _read(path: Path) -> tuple[list[int], dict[int, str]]:
    """Ids of the rows a reader keeps, and {0-based row: reason} of those it rejects (line/row - 1)."""
    chunks = list(iter_file(path, chunk_rows=4))  # several blocks: the rules apply per block
    kept: list[int] = []
    for c in chunks:
        assert isinstance(c, SourceChunk)
        ids = c.cols["trade_id"] if c.kind == "trade" else c.cols["update_id"]
        assert ids is not None
        kept += ids.tolist()
    return kept, {b.line - 1: b.reason for c in chunks for b in c.bad}


def _expected(f: Frame, validate: Any, id_col: str) -> tuple[list[int], dict[int, str]]:
    good, bad = validate(f)
    ids = f.cols[id_col]
    assert ids is not None
    return ids[good].tolist(), dict(bad)


def test_the_frame_validator_gives_the_documented_reasons() -> None:
    kept, bad = _expected(_trade_frame(), validate_trade_frame, "trade_id")
    assert kept == [1, 12]
    assert bad == {
        1: "price <= 0",
        2: "price <= 0",
        3: "price is not a finite number",
        4: "price is not a finite number",
        5: "qty <= 0",
        6: "qty is not a finite number",
        7: "qty <= 0",
        8: "trade_time <= 0",
        9: "trade_id < 0",
        10: "price <= 0",
    }
    kept, bad = _expected(_book_frame(), validate_book_frame, "update_id")
    assert kept == [1, 10]
    assert bad == {
        1: "crossed book: bid_price >= ask_price",
        2: "crossed book: bid_price >= ask_price",
        3: "bid_price <= 0",
        4: "bid_qty <= 0",
        5: "ask_price is not a finite number",
        6: "ask_qty is not a finite number",
        7: "event_time <= 0",
        8: "update_id < 0",
    }


def _trade_csv(tmp_path: Path) -> Path:
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"  # spot layout, no header
    path.write_text("".join(f"{i},{p},{q},1.0,{t},True,True\n" for i, p, q, t in TRADES))
    return path


def _trade_capture(tmp_path: Path) -> Path:
    lines = []
    for i, p, q, t in TRADES:
        msg = {"e": "trade", "E": t, "s": "BTCUSDT", "t": i, "p": p, "q": q, "T": t, "m": True, "M": True}
        lines.append(f"{(T0 + 5) * 1_000_000} {json.dumps({'stream': 'btcusdt@trade', 'data': msg})}\n")
    path = tmp_path / "spot_btcusdt_20240808.gz"
    path.write_bytes(gzip.compress("".join(lines).encode()))
    return path


def _trade_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "BTCUSDT-trades.parquet"
    pl.DataFrame(
        {
            "trade_id": [r[0] for r in TRADES],
            "price": [float(r[1]) for r in TRADES],
            "qty": [float(r[2]) for r in TRADES],
            "trade_time": [r[3] for r in TRADES],
            "buyer_maker": [True] * len(TRADES),
        }
    ).write_parquet(path)
    return path


@pytest.mark.parametrize("make", [_trade_csv, _trade_capture, _trade_parquet], ids=["csv", "capture", "parquet"])
def test_every_reader_rejects_the_trade_rows_the_worker_rejects_with_its_reasons(tmp_path: Path, make: Any) -> None:
    assert _read(make(tmp_path)) == _expected(_trade_frame(), validate_trade_frame, "trade_id")


def _book_csv(tmp_path: Path) -> Path:
    path = tmp_path / "BTCUSDT-bookTicker-2024-08-08.csv"  # futures archive layout, with header
    head = "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n"
    path.write_text(head + "".join(f"{u},{b},{bq},{a},{aq},{T0},{t}\n" for u, b, bq, a, aq, t in BOOKS))
    return path


def _book_capture(tmp_path: Path) -> Path:
    lines = []
    for u, b, bq, a, aq, t in BOOKS:
        msg = {"e": "bookTicker", "u": u, "s": "BTCUSDT", "b": b, "B": bq, "a": a, "A": aq, "T": T0, "E": t}
        lines.append(f"{T0 * 1_000_000} {json.dumps(msg)}\n")
    path = tmp_path / "usdm_btcusdt_20240808.gz"
    path.write_bytes(gzip.compress("".join(lines).encode()))
    return path


def _book_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "BTCUSDT-bookTicker.parquet"
    pl.DataFrame(
        {
            "update_id": [r[0] for r in BOOKS],
            "bid_price": [float(r[1]) for r in BOOKS],
            "bid_qty": [float(r[2]) for r in BOOKS],
            "ask_price": [float(r[3]) for r in BOOKS],
            "ask_qty": [float(r[4]) for r in BOOKS],
            "event_time": [r[5] for r in BOOKS],
            "recv_time": [T0] * len(BOOKS),
        }
    ).write_parquet(path)
    return path


@pytest.mark.parametrize("make", [_book_csv, _book_capture, _book_parquet], ids=["csv", "capture", "parquet"])
def test_every_reader_rejects_the_book_rows_the_worker_rejects_with_its_reasons(tmp_path: Path, make: Any) -> None:
    kept, bad = _read(make(tmp_path))
    want_kept, want_bad = _expected(_book_frame(), validate_book_frame, "update_id")
    if make is _book_csv:  # line 1 is the header
        bad = {i - 1: r for i, r in bad.items()}
    assert (kept, bad) == (want_kept, want_bad)


@pytest.mark.parametrize("i", range(len(TRADES)))
def test_the_one_row_parsers_agree_with_the_columns(i: int) -> None:
    tid, p, q, t = TRADES[i]
    want = dict(validate_trade_frame(_trade_frame())[1]).get(i)
    msg = {"e": "trade", "E": t, "s": "BTCUSDT", "t": tid, "p": p, "q": q, "T": t, "m": True}
    try:
        bf.trade_fields(msg)
        got: str | None = None
    except bf.BadMessage as e:
        got = e.reason
    assert got == want
    try:
        bc.parse_csv_row(bc.SPOT_TRADES, [str(tid), p, q, "1", str(t), "True", "True"])
        got = None
    except bf.BadMessage as e:
        got = e.reason
    assert got == want
    row = {"trade_id": tid, "price": float(p), "qty": float(q), "trade_time": t}
    assert first_problem("trade", row) == want


def test_absent_optional_columns_are_not_checked_and_klines_have_their_rules() -> None:
    book = {"bid_price": np.array([1.0]), "ask_price": np.array([2.0]), "event_time": None}
    good, bad = check_columns("book", book, 1)
    assert good.tolist() == [True] and bad == []
    kline = {"open": [1.0, 1.0, 1.0], "high": [2.0, 1.0, 2.0], "low": [1.0, 1.5, 1.0], "volume": [0.0, 1.0, -1.0]}
    good, bad = check_columns("kline", {k: np.array(v) for k, v in kline.items()}, 3)
    assert good.tolist() == [True, False, False] and bad == [(1, "high < low"), (2, "volume < 0")]


# mostly good values, so that a column with one bad value among good ones is common
_FLOATS = st.sampled_from([1.0, 2.5, 1e-300, 1e300] * 3 + [0.0, -0.0, -1.0, math.nan, math.inf, -math.inf])
_INTS = st.sampled_from([1, 2, 3] * 3 + [0, -1])


@settings(max_examples=1000, deadline=None)
@given(
    kind=st.sampled_from(["trade", "book", "kline"]),
    n=st.integers(1, 4),
    data=st.data(),
)
def test_the_fast_all_good_check_agrees_with_the_rules(kind: RowKind, n: int, data: st.DataObject) -> None:
    # clean columns short-cut the masks: that short cut must never pass a row a rule rejects, nor stop a clean one
    cols: dict[str, Any] = {}
    for name, rule in rows._RULES[kind].items():
        if rule in ("id", "time"):
            cols[name] = np.array(data.draw(st.lists(_INTS, min_size=n, max_size=n)), dtype=np.int64)
        else:
            cols[name] = np.array(data.draw(st.lists(_FLOATS, min_size=n, max_size=n)))
    slow_bad = np.zeros(n, dtype=bool)
    for mask, _ in rows._checks(kind, cols):
        slow_bad |= mask
    assert rows._all_good(kind, cols) == (not slow_bad.any())
    good, _ = check_columns(kind, cols, n)
    assert good.tolist() == (~slow_bad).tolist()


def _clean(kind: RowKind, n: int) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    for name, rule in rows._RULES[kind].items():
        cols[name] = np.arange(1, n + 1, dtype=np.int64) if rule in ("id", "time") else np.full(n, 2.0)
    if kind == "book":
        cols["ask_price"] = np.full(n, 3.0)
    if kind == "kline":
        cols["low"] = np.full(n, 1.0)
    return cols


@pytest.mark.parametrize(
    ("kind", "name", "rule"), [(k, f, r) for k in ("trade", "book", "kline") for f, r in rows._RULES[k].items()]
)
def test_one_bad_value_in_any_column_is_caught_by_both_checks(kind: RowKind, name: str, rule: str) -> None:
    assert rows._all_good(kind, _clean(kind, 3)) and check_columns(kind, _clean(kind, 3), 3)[1] == []
    bad_values: list[Any] = {"id": [-1], "time": [0, -1], "pos": [0.0, -1.0, math.nan, math.inf, -math.inf]}.get(
        rule, [-1.0, math.nan, math.inf]
    )
    for v in bad_values:
        cols = _clean(kind, 3)
        cols[name] = cols[name].copy()
        cols[name][1] = v
        assert not rows._all_good(kind, cols), (name, v)
        good, reasons = check_columns(kind, cols, 3)
        assert good.tolist() == [True, False, True] and reasons[0][0] == 1 and reasons[0][1].startswith(name)
