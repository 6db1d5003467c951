"""Fuzz suite (#21): every decoder and ingress, driven without a broker by generated and raw-byte inputs.

The contract checked everywhere: a bad item ends as a rejection with a reason (an :class:`RtqisError`
subclass whose message is one readable line, or a ``BadRow`` / dead letter with a reason), never as an
unexpected exception, and no row that breaks the row rules of :mod:`rtqis.schemas.rows` is ever accepted.
The rules are re-stated here independently (:func:`_trade_ok`, :func:`_book_ok`), so a rule lost in the
code fails this suite. Hypothesis runs derandomized (the same inputs on every CI run); the example counts
add up to more than 10,000 generated inputs per run (see ``N``).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rtqis.agents.books import SymbolBook
from rtqis.agents.handlers import valid_frame
from rtqis.errors import DecodeError, RtqisError
from rtqis.producers import binance_csv as bc
from rtqis.producers.binance_format import (
    AggTradeEvent,
    BadMessage,
    BookEvent,
    ControlEvent,
    DepthDiffEvent,
    TradeEvent,
    parse_ws_message,
)
from rtqis.producers.binance_ws import BadFrame, BinanceStream, _Connection
from rtqis.producers.files import BadRow, KlineChunk, SourceChunk, SourceFormatError, iter_file
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode, encode
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame, validate_book_frame, validate_trade_frame
from rtqis.schemas.plausibility import MAX_AHEAD_MS
from rtqis.settings import Settings
from rtqis.sinks.candle_files import read_candles_csv
from rtqis.sinks.sink import accept
from rtqis.topics import BOOK, TRADES

N = {  # examples per test: the total is the number of generated inputs per run
    "codec_raw": 2000,
    "codec_frames": 1500,
    "frame_build": 1000,
    "ws": 2500,
    "ws_stream": 300,
    "csv_row": 1500,
    "files_csv": 300,
    "files_raw": 300,
    "files_compressed": 200,
    "files_parquet": 150,
    "files_capture": 250,
    "candles_csv": 500,
    "worker": 400,
    "sink_symbols": 300,
}

SCALE = float(os.environ.get("RTQIS_FUZZ_SCALE", "1"))  # e.g. 0.05 while developing, 10 for a long run


def fuzz(target: str) -> settings:
    """Deterministic settings with the example count of ``target`` (``N``)."""
    return settings(
        max_examples=max(1, int(N[target] * SCALE)),
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


NOW = 1_765_000_000_000  # the wall clock of the worker tests (epoch ms)
T0 = 1_764_999_000_000  # trades a little before it

# -- the contract --------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    assert isinstance(e, RtqisError), f"unexpected exception {type(e).__name__}: {e}"
    text = str(e)
    assert text.strip() and "\n" not in text, f"not one readable line: {text!r}"
    return text


def _reason(r: str) -> None:
    assert isinstance(r, str) and r.strip(), f"a rejection without a reason: {r!r}"


def _trade_ok(price: Any, qty: Any, tid: Any, *times: Any) -> np.ndarray:
    p, q = np.asarray(price, dtype=float), np.asarray(qty, dtype=float)
    ok = np.isfinite(p) & (p > 0) & np.isfinite(q) & (q > 0) & (np.asarray(tid) >= 0)
    for t in times:
        if t is not None:
            ok &= np.asarray(t) > 0
    return ok


def _book_ok(cols: dict[str, Any]) -> np.ndarray:
    ok = np.asarray(cols["update_id"]) >= 0
    for k in ("bid_price", "bid_qty", "ask_price", "ask_qty"):
        a = np.asarray(cols[k], dtype=float)
        ok &= np.isfinite(a) & (a > 0)
    for k in ("event_time", "recv_time"):
        v = cols.get(k)
        if v is not None and not (isinstance(v, list) and v == [None]):
            ok &= np.asarray(v) > 0
    return ok & (np.asarray(cols["bid_price"]) < np.asarray(cols["ask_price"]))


def _assert_good_trade_cols(c: dict[str, Any]) -> None:
    assert _trade_ok(c["price"], c["qty"], c["trade_id"], c["trade_time"], c["event_time"], c["recv_time"]).all()


def _assert_good_frame(f: Frame) -> None:
    if f.type is TRADE_FRAME:
        _assert_good_trade_cols(f.cols)
    else:
        assert _book_ok(f.cols).all()


# -- strategies ----------------------------------------------------------------------------------------

nasty_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1e308, math.nan, math.inf, -math.inf, 60_000.5]),
    st.floats(min_value=0.01, max_value=1e6),
)
nasty_int = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, -5, 1, 9 * 10**18, 4_102_444_800_000, T0, 2**63 - 1]),
    st.integers(min_value=T0 - 10**6, max_value=T0 + 10**6),
)
schema_names = st.sampled_from(
    ["rtqis.TradeFrame", "rtqis.BookTickerFrame", "rtqis.Trade", "rtqis.Candle", "rtqis.PairSignal", "rtqis.Nope", ""]
)
header_sets = st.fixed_dictionaries(
    {},
    optional={
        "rtqis-schema": schema_names,
        "rtqis-version": st.one_of(st.sampled_from(["1", "2", "0", "-1", "x", ""]), st.text(max_size=5)),
        "content-type": st.sampled_from(["application/json", "application/avro", "text/plain", ""]),
    },
)


def _col(kind: str, n: int) -> st.SearchStrategy[Any]:
    """A column of ``n`` values of a numeric kind, sometimes of the wrong length or type."""
    elem: st.SearchStrategy[Any] = {"f": nasty_float, "i": nasty_int, "b": st.booleans()}[kind]
    good = st.lists(elem, min_size=n, max_size=n)
    return st.one_of(
        good,
        good,
        good,
        st.lists(elem, max_size=n + 2),  # mismatched length
        st.lists(st.one_of(st.text(max_size=3), st.none(), nasty_float), min_size=n, max_size=n),  # wrong types
        st.none(),
    )


_KINDS = {np.float64: "f", np.int64: "i", np.bool_: "b"}


def _good_value(name: str, i: int) -> Any:
    """A plausible value of a tick column at row ``i``."""
    if name == "buyer_maker":
        return bool(i % 2)
    if name.endswith("_id"):
        return 1_000 + i
    if name.endswith("_time"):
        return T0 + i
    return {"bid_price": 99.0, "ask_price": 101.0}.get(name, 50.0 + i)


@st.composite
def frame_cols(draw: st.DrawFn, ftype: Any) -> dict[str, Any]:
    n = draw(st.integers(0, 6))
    if draw(st.booleans()):  # good rows with a few spoiled cells (or none)
        cols = {k: [_good_value(k, i) for i in range(n)] for k in ftype.dtypes}
        for _ in range(draw(st.integers(0, 2)) if n else 0):
            k = draw(st.sampled_from(sorted(cols)))
            elem = {"f": nasty_float, "i": nasty_int, "b": st.booleans()}[_KINDS.get(ftype.dtypes[k], "f")]
            cols[k][draw(st.integers(0, n - 1))] = draw(elem)
        return cols
    cols = {name: draw(_col(_KINDS.get(dtype, "f"), n)) for name, dtype in ftype.dtypes.items()}
    if draw(st.booleans()) and cols:
        cols.pop(draw(st.sampled_from(sorted(cols))))
    if draw(st.integers(0, 9)) == 0:
        cols["extra"] = [1]
    return cols


# -- the message codec and the sink's accept path ------------------------------------------------------


@fuzz("codec_raw")
@given(
    value=st.one_of(st.none(), st.binary(max_size=300)),
    headers=header_sets,
    default=st.sampled_from([None, "rtqis.TradeFrame", "rtqis.Candle"]),
)
def test_codec_decodes_or_refuses_raw_bytes_with_any_headers(
    value: bytes | None, headers: dict[str, str], default: str | None
) -> None:
    hs = [(k, v.encode()) for k, v in headers.items()]
    try:
        obj = decode(value, hs, default)
    except DecodeError as e:
        _one_line(e)
        event("refused")
        return
    event("decoded")
    assert isinstance(obj, m.Message | Frame)  # decoded: a typed message (rules are checked by accept below)
    for spec in (TRADES, BOOK):
        a = accept(spec, value, hs)
        if a.value is not None and isinstance(a.value, Frame):
            _assert_good_frame(a.value)
        if a.reason is not None:
            _reason(a.reason)


@fuzz("sink_symbols")
@given(
    symbol=st.one_of(
        st.sampled_from(["BTCUSDT", "ETHUSDT", "ethusdt", "DOGEUSDT", "=HYPERLINK(1)", "BTC'; DROP TABLE trades;--"]),
        st.text(min_size=1, max_size=12),
    ),
    codec=st.sampled_from(["json", "avro"]),
)
def test_the_sink_never_stores_a_frame_of_an_unknown_symbol(symbol: str, codec: str) -> None:
    """A well-formed trade frame of any symbol: the sink (``accept`` with the configured symbols) stores it
    only for a configured symbol, and refuses any other with one reason line naming it."""
    configured = ["BTCUSDT", "ETHUSDT"]
    n = 3
    ids = np.arange(1, n + 1, dtype=np.int64)
    cols = {
        "trade_id": ids,
        "price": np.full(n, 100.0),
        "qty": np.ones(n),
        "buyer_maker": np.zeros(n, dtype=bool),
        "trade_time": T0 + ids,
        "event_time": T0 + ids,
        "recv_time": T0 + ids,
    }
    try:
        value, headers = encode(Frame.build(TRADE_FRAME, symbol, cols), codec)  # type: ignore[arg-type]
    except RtqisError as e:  # e.g. an empty symbol: refused before it is ever sent
        _one_line(e)
        return
    a = accept(TRADES, value, headers, configured)
    if symbol in configured:
        assert a.reason is None and isinstance(a.value, Frame) and len(a.value) == n
    else:
        assert a.value is None and a.invalid_rows == n
        assert a.reason is not None and "unknown symbol" in a.reason and "\n" not in a.reason


@fuzz("codec_frames")
@given(data=st.data(), codec=st.sampled_from(["json", "avro"]), trade=st.booleans(), cut=st.integers(0, 40))
def test_frames_with_bad_values_are_refused_or_cleaned_on_both_codecs(
    data: st.DataObject, codec: str, trade: bool, cut: int
) -> None:
    """Generated frames (NaN/inf, zero/negative prices and sizes, times far in the past/future, mismatched
    columns) encoded on the wire, sometimes truncated or with a wrong version: ``accept`` (the sink) and
    the worker's row rules keep no bad row, and give a reason for every refusal."""
    # Left out on purpose, a known gap (#21): ``accept`` has no per-symbol state, so the sink still stores
    # rows the worker's plausibility bounds refuse (a 2100-01-01 trade, a trade id of 9e18). Unknown
    # symbols: test_the_sink_never_stores_a_frame_of_an_unknown_symbol. Only the row rules are asserted here.
    ftype, spec = (TRADE_FRAME, TRADES) if trade else (BOOK_FRAME, BOOK)
    cols = data.draw(frame_cols(ftype))
    try:
        frame = Frame.build(ftype, "BTCUSDT", cols)
        value, headers = encode(frame, codec)  # type: ignore[arg-type]
    except RtqisError as e:
        _one_line(e)
        value, headers = (
            orjson.dumps({"symbol": "BTCUSDT", **cols}, option=orjson.OPT_SERIALIZE_NUMPY),
            [
                ("rtqis-schema", ftype.name.encode()),
            ],
        )
    variant = data.draw(st.integers(0, 5))
    if variant == 1:
        value = value[: len(value) * cut // 40]
    elif variant == 2:
        headers = [(k, b"99" if k == "rtqis-version" else v) for k, v in headers]
    elif variant == 3:
        headers = [
            (k, b"rtqis.BookTickerFrame" if trade else b"rtqis.TradeFrame") if k == "rtqis-schema" else (k, v)
            for k, v in headers
        ]
    a = accept(spec, value, headers)
    if a.reason is not None:
        _reason(a.reason)
        assert "\n" not in a.reason
    event(f"stored {'some' if isinstance(a.value, Frame) and len(a.value) else 'none'}, reason {a.reason is not None}")
    if a.value is not None:
        assert isinstance(a.value, Frame) and a.value.type is ftype
        _assert_good_frame(a.value)
        try:
            back = decode(value, headers, spec.value_schema)
        except DecodeError:
            raise AssertionError("accept stored a message that does not decode") from None
        assert isinstance(back, Frame)
        n_bad = int(
            (
                ~(
                    _trade_ok(
                        back.cols["price"],
                        back.cols["qty"],
                        back.cols["trade_id"],
                        back.cols["trade_time"],
                        back.cols["event_time"],
                        back.cols["recv_time"],
                    )
                    if trade
                    else _book_ok(back.cols)
                )
            ).sum()
        )
        assert a.invalid_rows == n_bad and len(a.value) == len(back) - n_bad
        assert (a.reason is not None) == (n_bad > 0)


@fuzz("frame_build")
@given(
    data=st.data(),
    trade=st.booleans(),
    symbol=st.one_of(st.just("BTCUSDT"), st.text(max_size=4), st.none(), st.integers()),
)
def test_frame_build_and_row_rules(data: st.DataObject, trade: bool, symbol: Any) -> None:
    ftype = TRADE_FRAME if trade else BOOK_FRAME
    cols = data.draw(frame_cols(ftype))
    try:
        f = Frame.build(ftype, symbol, cols)
    except RtqisError as e:
        _one_line(e)
        return
    good, bad = (validate_trade_frame if trade else validate_book_frame)(f)
    want = (
        _trade_ok(
            f.cols["price"],
            f.cols["qty"],
            f.cols["trade_id"],
            f.cols["trade_time"],
            f.cols["event_time"],
            f.cols["recv_time"],
        )
        if trade
        else _book_ok(f.cols)
    )
    assert (good == want).all()
    assert [i for i, _ in bad] == list(np.flatnonzero(~want))
    for _, r in bad:
        _reason(r)


# -- Binance WebSocket messages ------------------------------------------------------------------------

ws_value = st.one_of(
    nasty_float.map(lambda x: repr(x)),  # Binance sends prices as strings ('nan', 'inf' included)
    nasty_float,
    nasty_int,
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.lists(st.lists(st.text(max_size=6), max_size=2), max_size=2),
)


def _good_ws(key: str, i: int) -> Any:
    """A plausible value of a Binance WebSocket field."""
    if key in ("m", "M"):
        return bool(i % 2)
    if key in ("p", "q", "B", "A"):
        return f"{50 + i}.5"
    if key == "b":
        return "49.5" if i % 2 else [["49.5", "1.0"]]
    if key == "a":
        return "60.5" if i % 2 else [["60.5", "2.0"]]
    if key in ("E", "T"):
        return T0 + i
    return 1_000 + i


@st.composite
def ws_payload(draw: st.DrawFn) -> Any:
    e = draw(st.sampled_from(["trade", "aggTrade", "bookTicker", "depthUpdate", "serverShutdown", None]))
    keys = {
        "trade": "e E s t p q T m M",
        "aggTrade": "e E s a p q f l T m M",
        "bookTicker": "u s b B a A E T",
        "depthUpdate": "e E T s U u pu b a",
        "serverShutdown": "e E",
        None: "result id",
    }[e].split()
    d: dict[str, Any] = {}
    clean = draw(st.booleans())  # all fields plausible but at most one spoiled
    spoil = draw(st.sampled_from([*keys, None])) if clean else None
    for k in keys:
        if clean and k != spoil and k != "e":
            d[k] = "BTCUSDT" if k == "s" else _good_ws(k, 1)
            continue
        if draw(st.integers(0, 9)) == 0:
            continue
        if k == "e":
            d[k] = e
        elif k == "s":
            d[k] = draw(st.sampled_from(["BTCUSDT", "ethusdt", "DOGEUSDT", "", "=HYPERLINK(1)"]))
        elif draw(st.integers(0, 3)):
            d[k] = _good_ws(k, draw(st.integers(0, 3)))
        else:
            d[k] = draw(ws_value)
    if draw(st.booleans()):
        return {"stream": "btcusdt@" + (e or "x"), "data": d}
    return d


def _ws_bytes(d: Any) -> bytes:
    return orjson.dumps(d) if _dumpable(d) else b"{"


def _dumpable(d: Any) -> bool:
    try:
        orjson.dumps(d)
    except TypeError:
        return False
    return True


@fuzz("ws")
@given(
    raw=st.one_of(st.binary(max_size=200), *[ws_payload().map(_ws_bytes)] * 3),
    symbols=st.sampled_from([None, {"BTCUSDT", "ETHUSDT"}]),
)
def test_websocket_messages_parse_or_are_bad_with_a_reason(raw: bytes, symbols: set[str] | None) -> None:
    try:
        ev = parse_ws_message(raw, NOW, symbols)
    except BadMessage as e:
        _one_line(e)
        _reason(e.reason)
        event("bad")
        return
    event(type(ev).__name__)
    if isinstance(ev, TradeEvent | AggTradeEvent):
        t = ev.trade
        assert _trade_ok(t.price, t.qty, t.trade_id, t.trade_time, t.event_time, t.recv_time).all()
        if symbols is not None:
            assert t.symbol in symbols
    elif isinstance(ev, BookEvent):
        b = ev.book
        assert _book_ok(
            {
                k: [getattr(b, k)]
                for k in ("update_id", "bid_price", "bid_qty", "ask_price", "ask_qty", "event_time", "recv_time")
            }
        ).all()
    else:
        assert isinstance(ev, ControlEvent | DepthDiffEvent)


@st.composite
def trade_message(draw: st.DrawFn, tid: int) -> bytes:
    """A combined-stream trade message of id ``tid`` (the caller makes duplicates and gaps)."""
    sym = draw(st.sampled_from(["BTCUSDT", "ETHUSDT"]))
    d = {"e": "trade", "E": T0, "s": sym, "t": tid, "p": "50.5", "q": "1.0", "T": T0, "m": True, "M": True}
    return orjson.dumps({"stream": f"{sym.lower()}@trade", "data": d})


@st.composite
def ws_session(draw: st.DrawFn) -> list[bytes]:
    out, tid = [], 100
    for _ in range(draw(st.integers(1, 15))):
        tid += draw(st.sampled_from([1, 1, 1, 0, -1, -3, 2, 50]))  # in order, duplicates, out of order, gaps
        out.append(
            draw(st.one_of(trade_message(tid), trade_message(tid), ws_payload().map(_ws_bytes), st.binary(max_size=60)))
        )
    return out


@fuzz("ws_stream")
@given(session=ws_session())
def test_websocket_stream_handles_every_frame(session: list[bytes]) -> None:
    """``BinanceStream._handle``, the stream's per-frame path: every frame is an event, a control message
    or a BadFrame with a parser's reason (never a "parser error", i.e. an unexpected exception), and the
    trades it yields have strictly increasing ids per symbol (duplicates and out-of-order ids dropped)."""
    stream = BinanceStream(["BTCUSDT", "ETHUSDT"], clock_ms=lambda: NOW, queue_size=1_000)
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def run() -> None:
        conn = _Connection(request_id=1)
        for raw in session:
            await stream._handle(raw, queue, conn)

    asyncio.run(run())
    last: dict[str, int] = {}
    items = [queue.get_nowait() for _ in range(queue.qsize())]
    for item in items:
        if isinstance(item, BadFrame):
            _reason(item.reason)
            assert not item.reason.startswith("parser error"), item.reason
        elif isinstance(item, TradeEvent):
            t = item.trade
            assert t.trade_id > last.get(t.symbol, -1)
            last[t.symbol] = t.trade_id
            assert _trade_ok(t.price, t.qty, t.trade_id, t.trade_time, t.event_time, t.recv_time).all()
    assert stream.stats.messages == len(session)
    assert len(items) + stream.stats.duplicates + stream.stats.controls == len(session)
    event(f"duplicates {min(stream.stats.duplicates, 3)}+")


# -- archive CSV rows ----------------------------------------------------------------------------------

csv_cell = st.one_of(
    nasty_float.map(repr),
    nasty_int.map(str),
    st.sampled_from(["true", "false", "True", "", " ", "nan", "NaN", "inf", "-inf", "1e400", "0x10", "1_000"]),
    st.text(max_size=5),
)


@fuzz("csv_row")
@given(layout=st.sampled_from(bc.CSV_LAYOUTS), data=st.data())
def test_archive_csv_rows_parse_or_are_bad_with_a_reason(layout: bc.CsvLayout, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        row = _good_csv_row(layout, data.draw(st.integers(0, 3)))
        for _ in range(data.draw(st.integers(0, 2))):
            row[data.draw(st.integers(0, len(row) - 1))] = data.draw(csv_cell)
    else:
        width = data.draw(st.sampled_from([layout.width, layout.width, layout.width - 1, layout.width + 1]))
        row = data.draw(st.lists(csv_cell, min_size=width, max_size=width))
    try:
        out = bc.parse_csv_row(layout, row)
    except BadMessage as e:
        _one_line(e)
        event("bad")
        return
    event("parsed")
    v = dict(zip(layout.out_fields, out, strict=True))
    if layout.kind == "trade":
        assert _trade_ok(v["price"], v["qty"], v["trade_id"], v["time"]).all()
    elif layout.kind == "book":
        assert _book_ok({**v, "event_time": v.get("event_time"), "recv_time": v.get("recv_time")}).all()
    else:
        for k in ("open", "high", "low", "close"):
            assert math.isfinite(v[k]) and v[k] > 0
        assert v["high"] >= v["low"] and v["open_time"] > 0 and v["volume"] >= 0


# -- the file readers ----------------------------------------------------------------------------------


def _read_file(path: Path, symbol: str | None = None) -> tuple[int, int]:
    """Read a whole file: (good rows, bad rows); every good row keeps the rules, every bad one has a
    reason; a file that cannot be read at all raises a one-line SourceFormatError."""
    good = bad = 0
    try:
        for chunk in iter_file(path, symbol=symbol, chunk_rows=7):
            for b in chunk.bad:
                assert isinstance(b, BadRow)
                _reason(b.reason)
                bad += 1
            if isinstance(chunk, SourceChunk) and len(chunk):
                if chunk.kind == "trade":
                    _assert_good_trade_cols(chunk.cols)
                else:
                    assert _book_ok(chunk.cols).all()
                good += len(chunk)
            elif isinstance(chunk, KlineChunk):
                good += len(chunk)
    except SourceFormatError as e:
        _one_line(e)
        event("SourceFormatError")
    event(f"good rows {good > 0}, bad rows {bad > 0}")
    return good, bad


def _csv_text(layout: bc.CsvLayout, rows: list[list[str]], header: bool) -> bytes:
    lines = [",".join(layout.columns)] if header else []
    lines += [",".join(r) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _good_csv_row(layout: bc.CsvLayout, i: int) -> list[str]:
    """A plausible row of ``layout`` (its ``i``-th)."""
    row = []
    for col in layout.columns:
        if col.startswith("is"):
            v = "true"
        elif col.endswith("_ns"):
            v = str((T0 + i) * 1_000_000)
        elif "time" in col:
            v = str(T0 + i)
        elif "bid_price" in col or col == "low":
            v = "99"
        elif "ask_price" in col or col == "high":
            v = "101"
        else:
            v = str(100 + i)
        row.append(v)
    return row


@st.composite
def csv_file(draw: st.DrawFn) -> tuple[str, bytes]:
    layout = draw(st.sampled_from([x for x in bc.CSV_LAYOUTS if x.kind != "kline"]))
    rows = []
    clean = draw(st.integers(0, 3)) == 0
    for i in range(draw(st.integers(1, 12))):
        if clean or draw(st.booleans()):
            row = _good_csv_row(layout, i)
        else:
            w = draw(st.sampled_from([layout.width, layout.width, layout.width - 2]))
            row = draw(
                st.lists(
                    csv_cell.map(lambda s: s.replace(",", ";").replace("\n", " ").replace("\r", " ")),
                    min_size=w,
                    max_size=w,
                )
            )
        rows.append(row)
    return f"BTCUSDT-{layout.format.replace('_', '')}-2024-08-08.csv", _csv_text(layout, rows, layout.header)


@fuzz("files_csv")
@given(f=csv_file())
def test_csv_files_of_mixed_good_and_bad_rows(tmp_path_factory: Any, f: tuple[str, bytes]) -> None:
    path = tmp_path_factory.mktemp("csv") / f[0]
    path.write_bytes(f[1])
    _read_file(path)


@fuzz("files_raw")
@given(
    data=st.one_of(st.binary(max_size=400), st.text(max_size=300).map(str.encode)),
    name=st.sampled_from(
        [
            "BTCUSDT-trades-2024-08-08.csv",
            "x.csv",
            "BTCUSDT-aggTrades-2024-08-08.zip",
            "spot_btcusdt_20240808.gz",
            "BTCUSDT.parquet",
        ]
    ),
    prefix=st.sampled_from(
        [b"", b"PK\x03\x04", b"\x1f\x8b", b"PAR1", b"1723075200000000000 {", b"1,2,3,4,1723075200000,true,true\n"]
    ),
)
def test_raw_bytes_as_files(tmp_path_factory: Any, data: bytes, name: str, prefix: bytes) -> None:
    path = tmp_path_factory.mktemp("raw") / name
    path.write_bytes(prefix + data)
    _read_file(path)
    _read_file(path, symbol="ETHUSDT")


@fuzz("files_compressed")
@given(f=csv_file(), how=st.sampled_from(["zip", "gzip", "zip2", "cut"]), cut=st.integers(0, 100))
def test_zip_and_gzip_files(tmp_path_factory: Any, f: tuple[str, bytes], how: str, cut: int) -> None:
    d = tmp_path_factory.mktemp("z")
    name, body = f
    if how == "gzip":
        path, raw = d / (name + ".gz"), gzip.compress(body)
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(name, body)
            if how == "zip2":
                zf.writestr("other.csv", body)
        path, raw = d / name.replace(".csv", ".zip"), buf.getvalue()
    if how == "cut":
        raw = raw[: max(8, len(raw) * cut // 100)]
    path.write_bytes(raw)
    _read_file(path)


@st.composite
def parquet_frame(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(1, 8))
    trade = draw(st.booleans())
    names = (
        {
            "trade_id": "i",
            "price": "f",
            "qty": "f",
            "trade_time": "i",
            "buyer_maker": "b",
            "event_time": "i",
            "recv_time": "i",
        }
        if trade
        else {
            "update_id": "i",
            "bid_price": "f",
            "bid_qty": "f",
            "ask_price": "f",
            "ask_qty": "f",
            "event_time": "i",
            "recv_time": "i",
        }
    )
    cols: dict[str, Any] = {}
    for k, kind in names.items():
        choice = draw(st.integers(0, 40))
        if choice == 0:
            continue  # a missing column
        if choice == 1:
            cols[k] = draw(st.lists(st.text(max_size=3), min_size=n, max_size=n))  # a column of text
        elif choice == 2:
            cols[k] = draw(st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=n, max_size=n))  # nulls
        elif choice > 5:
            cols[k] = [_good_value(k, i) for i in range(n)]
            if choice == 6:
                elem = {"f": nasty_float, "i": nasty_int, "b": st.booleans()}[kind]
                cols[k][draw(st.integers(0, n - 1))] = draw(elem)
        elif kind == "f":
            cols[k] = draw(st.lists(nasty_float, min_size=n, max_size=n))
        elif kind == "b":
            cols[k] = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        else:
            cols[k] = draw(st.lists(nasty_int, min_size=n, max_size=n))
    if draw(st.booleans()):
        cols["symbol"] = draw(st.lists(st.sampled_from(["BTCUSDT", "", "=1+1", "ethusdt"]), min_size=n, max_size=n))
    return pl.DataFrame(cols, strict=False)


@fuzz("files_parquet")
@given(df=parquet_frame(), cut=st.integers(0, 3))
def test_parquet_files(tmp_path_factory: Any, df: pl.DataFrame, cut: int) -> None:
    path = tmp_path_factory.mktemp("pq") / "BTCUSDT-ticks.parquet"
    df.write_parquet(path)
    if cut == 0:
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2] + raw[-8:])  # a torn file with a valid footer magic
    _read_file(path)


@st.composite
def capture_file(draw: st.DrawFn) -> bytes:
    lines = []
    for i in range(draw(st.integers(1, 10))):
        ns = draw(st.one_of(st.just((T0 + i) * 1_000_000), st.integers(10**8, 10**20)))
        payload = draw(ws_payload())
        body = orjson.dumps(payload) if _dumpable(payload) else b"{nope"
        lines.append(str(ns).encode() + b" " + body if draw(st.integers(0, 7)) else draw(st.binary(max_size=30)))
    return b"\n".join(lines) + b"\n"


@fuzz("files_capture")
@given(body=capture_file())
def test_raw_websocket_captures(tmp_path_factory: Any, body: bytes) -> None:
    path = tmp_path_factory.mktemp("cap") / "BTCUSDT-capture-2024-08-08.txt"
    path.write_bytes(body)
    _read_file(path, symbol="BTCUSDT")


# -- candle CSV import ---------------------------------------------------------------------------------


@st.composite
def candles_text(draw: st.DrawFn) -> str:
    header = draw(
        st.sampled_from(
            ["open_time,open,high,low,close,volume", "open_time,open,high,low,close,volume,count,vwap", "", "a,b"]
        )
    )
    lines = [header] if header else []
    clean = draw(st.integers(0, 2)) == 0 and "open" in header
    for i in range(draw(st.integers(0, 8))):
        if clean or draw(st.booleans()):
            lines.append(f"{T0 - T0 % 60_000 + i * 60_000},10,12,9,11,5" + (",3,10.5" if "count" in header else ""))
        else:
            w = draw(st.integers(1, 9))
            lines.append(
                ",".join(
                    draw(
                        st.lists(
                            csv_cell.map(
                                lambda s: s.replace(",", ";").replace("\n", " ").replace("\r", " ").replace('"', "")
                            ),
                            min_size=w,
                            max_size=w,
                        )
                    )
                )
            )
    return "\n".join(lines) + "\n"


@fuzz("candles_csv")
@given(text=st.one_of(candles_text(), st.text(max_size=200)), interval=st.sampled_from(["1m", "5m", "7m", "1w"]))
def test_candle_csv_import_reads_or_refuses_in_one_line(text: str, interval: str) -> None:
    try:
        df = read_candles_csv("upload.csv", symbol="BTCUSDT", interval=interval, text=text)
    except RtqisError as e:
        _one_line(e)
        event("refused")
        return
    event(f"read {len(df) > 0}")
    for k in ("open", "high", "low", "close"):
        v = df[k].to_numpy()
        assert np.isfinite(v).all() and (v > 0).all()
    assert (df["high"] >= df["low"]).all() and (df["volume"].to_numpy() >= 0).all()
    assert df["open_time"].n_unique() == len(df)


# -- the worker: row rules, then the symbol's plausibility bounds, then the candles --------------------


class _Outputs:
    def __init__(self) -> None:
        self.dead: list[str] = []

    async def dead_letter(self, event: Any, reason: str, payload: bytes, stage: str) -> None:
        self.dead.append(reason)


class _Event:
    def __init__(self, value: bytes | None, headers: Any) -> None:
        self.value, self.headers = value, headers


WORKER_SETTINGS = Settings(
    symbols=["BTCUSDT", "ETHUSDT"], pairs=["ETHUSDT/BTCUSDT"], candle_intervals=["1m"], candle_grace_ms=0
)


@st.composite
def trade_stream(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """Frames of trades with duplicates, out-of-order rows, far past/future times, huge ids, bad values."""
    frames = []
    tid, t = 1_000, T0
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 6))
        rows = []
        for _ in range(n):
            what = draw(st.integers(0, 9))
            tid += 1
            t += draw(st.integers(0, 5_000))
            row = [tid, 100.0 + draw(st.integers(0, 50)), 1.0, t]
            if what == 1:
                row[0] = tid - draw(st.integers(1, 5))  # duplicate / out of order id
            elif what == 2:
                row[3] = t - draw(st.integers(1, 200_000))  # out of order time
            elif what == 3:
                row[3] = draw(st.sampled_from([4_102_444_800_000, -5, 0, NOW + MAX_AHEAD_MS + 1, 2**62]))
            elif what == 4:
                row[0] = draw(st.sampled_from([9 * 10**18, -1, 10**13, tid + 10**8]))
            elif what == 5:
                row[draw(st.sampled_from([1, 2]))] = draw(st.sampled_from([0.0, -1.0, math.nan, math.inf]))
            rows.append(row)
        a = np.array(rows, dtype=object)
        cols = {
            "trade_id": a[:, 0].astype(np.int64),
            "price": a[:, 1].astype(np.float64),
            "qty": a[:, 2].astype(np.float64),
            "trade_time": a[:, 3].astype(np.int64),
            "event_time": a[:, 3].astype(np.int64),
            "recv_time": np.full(n, NOW, dtype=np.int64),
            "buyer_maker": np.zeros(n, dtype=bool),
        }
        frames.append((draw(st.sampled_from(["BTCUSDT", "BTCUSDT", "ETHUSDT", "DOGEUSDT"])), cols))
    return frames


@fuzz("worker")
@given(stream=trade_stream(), codec=st.sampled_from(["json", "avro"]))
def test_worker_frames_never_poison_a_symbol(stream: list[tuple[str, dict[str, Any]]], codec: str) -> None:
    """The trades agent's path without a broker (``valid_frame`` with the book's ``screen``, then
    ``SymbolBook.update``): every refused row is dead-lettered with a reason, no applied row breaks a
    rule, unknown symbols change nothing, no symbol's clock passes the wall clock's bound, and good trades
    after the hostile ones still close a candle."""
    book, outputs = SymbolBook(WORKER_SETTINGS, candles=True, sample=True), _Outputs()
    stored: dict[str, dict[str, Any]] = {}

    def screen(f: Frame) -> list[tuple[int, str]]:
        known = f.symbol in book.symbols
        return book.screen(
            f.symbol, stored.get(f.symbol, {}) if known else {}, f.cols["trade_time"], f.cols["trade_id"], now_ms=NOW
        )

    def apply(value: bytes, headers: Any) -> None:
        before = len(outputs.dead)
        frame = asyncio.run(valid_frame(outputs, _Event(value, headers), TRADES, validate_trade_frame, "fuzz", screen))  # type: ignore[arg-type]
        for r in outputs.dead[before:]:
            _reason(r)
        if frame is None:
            return
        assert frame.symbol in book.symbols
        _assert_good_trade_cols(frame.cols)
        c = frame.cols
        _, new = book.update(
            frame.symbol, stored.get(frame.symbol, {}), c, (c["trade_time"], c["price"], c["trade_id"])
        )
        if new is not None:
            stored[frame.symbol] = new

    event(f"frames {len(stream)}")
    for sym, cols in stream:
        value, headers = encode(Frame.build(TRADE_FRAME, sym, cols), codec)  # type: ignore[arg-type]
        apply(value, headers)
        assert "DOGEUSDT" not in stored
        for st_ in stored.values():
            assert st_["state"]["1m"]["max_time"] <= NOW + MAX_AHEAD_MS
    # good trades after everything: they are applied and close the minute before them
    sym = "BTCUSDT"
    clock = stored.get(sym, {}).get("state", {}).get("1m", {}).get("max_time") or T0
    high = stored.get(sym, {}).get("state", {}).get("1m", {}).get("max_trade_id") or 0
    t = np.array([clock + 60_000, clock + 120_000], dtype=np.int64)
    good = {
        "trade_id": np.array([high + 1, high + 2], dtype=np.int64),
        "price": np.array([50.0, 51.0]),
        "qty": np.array([1.0, 1.0]),
        "trade_time": t,
        "event_time": t,
        "recv_time": np.full(2, NOW, dtype=np.int64),
        "buyer_maker": np.zeros(2, dtype=bool),
    }
    before = len(outputs.dead)
    apply(*encode(Frame.build(TRADE_FRAME, sym, good), codec))  # type: ignore[arg-type]
    assert len(outputs.dead) == before, outputs.dead[before:]
    event(f"dead letters {min(before, 3)}+")
    assert stored[sym]["state"]["1m"]["max_time"] == clock + 120_000


def test_huge_messages_are_refused_with_a_short_reason() -> None:
    """5 MB of random bytes on every decoder, and an 80,000-row frame of an unknown symbol through the
    worker's path: each is refused with one short line, nothing is applied."""
    big = np.random.default_rng(21).bytes(5 * 1024 * 1024)
    for spec in (TRADES, BOOK):
        a = accept(spec, big, [])
        assert a.value is None and a.reason is not None and len(_one_line(DecodeError(a.reason))) < 1_000
    try:
        parse_ws_message(big, NOW)
    except BadMessage as e:
        assert len(_one_line(e)) < 1_000
    else:
        raise AssertionError("5 MB of random bytes parsed as a WebSocket message")
    n = 80_000
    cols = {k: np.array([_good_value(k, i) for i in range(n)]) for k in TRADE_FRAME.dtypes}
    value, headers = encode(Frame.build(TRADE_FRAME, "BIGUSDT", cols), "avro")
    outputs = _Outputs()
    book = SymbolBook(WORKER_SETTINGS, candles=True, sample=False)

    def screen(f: Frame) -> list[tuple[int, str]]:
        return book.screen(f.symbol, {}, f.cols["trade_time"], f.cols["trade_id"], now_ms=NOW)

    got = asyncio.run(valid_frame(outputs, _Event(value, headers), TRADES, validate_trade_frame, "fuzz", screen))  # type: ignore[arg-type]
    assert got is None
    (reason,) = outputs.dead
    assert reason.startswith(f"{n} invalid rows: row 0: unknown symbol 'BIGUSDT'") and len(reason) < 2_000


# -- the crashes the fuzzer found, pinned ----------------------------------------------------------------


def test_a_version_header_with_a_newline_is_refused_in_one_line() -> None:
    """Found by the fuzzer: the version header was quoted raw, so the reason spanned two lines."""
    try:
        decode(b"{}", [("rtqis-schema", b"rtqis.TradeFrame"), ("rtqis-version", b"\n")])
    except DecodeError as e:
        assert "unsupported version '\\n'" in _one_line(e)
    else:
        raise AssertionError("a wrong version was decoded")


def test_a_parquet_book_file_with_no_usable_time_gives_bad_rows(tmp_path: Path) -> None:
    """Found by the fuzzer: an all-null ``event_time`` and no ``recv_time`` crashed the reader with an
    AssertionError; now every row is a bad row with its reason."""
    path = tmp_path / "BTCUSDT-ticks.parquet"
    df = pl.DataFrame(
        {
            "update_id": [1, 2],
            "bid_price": [1.0, 1.0],
            "bid_qty": [1.0, 1.0],
            "ask_price": [2.0, 2.0],
            "ask_qty": [1.0, 1.0],
        }
    ).with_columns(event_time=pl.lit(None, dtype=pl.Int64))
    df.write_parquet(path)
    chunks = list(iter_file(path))
    bad = [b for c in chunks for b in c.bad]
    assert sum(len(c) for c in chunks) == 0
    assert [b.reason for b in bad] == ["event_time is missing or not a number"] * 2


def test_a_parquet_file_with_text_or_list_columns_gives_bad_rows(tmp_path: Path) -> None:
    """Found by the fuzzer: a text ``buyer_maker`` column crashed the reader (polars cannot cast text to
    Boolean); now true/false text is read as in the CSV files, anything else is a bad row with a reason,
    and so is a column polars cannot cast at all (a list)."""
    path = tmp_path / "BTCUSDT-trades.parquet"
    pl.DataFrame(
        {
            "trade_id": [1, 2, 3],
            "price": [[1.0], [2.0], [3.0]],
            "qty": [1.0, 1.0, 1.0],
            "trade_time": [T0, T0 + 1, T0 + 2],
            "buyer_maker": ["true", "FALSE", "maybe"],
        }
    ).write_parquet(path)
    bad = [b.reason for c in iter_file(path) for b in c.bad]
    assert bad == ["price is missing or not a number"] * 3
    pl.DataFrame(
        {"trade_id": [1, 2, 3], "price": [1.0] * 3, "qty": [1.0] * 3, "trade_time": [T0, T0 + 1, T0 + 2]}
        | {"buyer_maker": ["true", "FALSE", "maybe"]}
    ).write_parquet(path)
    chunks = list(iter_file(path))
    assert [b.reason for c in chunks for b in c.bad] == ["buyer_maker is missing or not a number"]
    (good,) = [c for c in chunks if len(c)]
    assert good.cols["buyer_maker"].tolist() == [True, False]  # type: ignore[union-attr]


def test_a_carriage_return_inside_a_csv_line_is_a_bad_row_or_a_format_error(tmp_path: Path) -> None:
    """Found by the fuzzer: a lone ``\\r`` inside a line made :mod:`csv` raise ``csv.Error`` out of the
    reader (and out of format detection on the first line)."""
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    path.write_bytes(b"1,2,3,4,1723075200000,true,true\n1,2,3\r4,1723075200000,true,true\n")
    chunks = list(iter_file(path))
    assert sum(len(c) for c in chunks) == 1
    assert [b.reason for c in chunks for b in c.bad] == ["not a CSV row (a carriage return or NUL inside the line)"]
    path.write_bytes(b"\x00\r\x00")
    try:
        list(iter_file(path))
    except SourceFormatError as e:
        assert "first line is not a CSV row" in _one_line(e)
    else:
        raise AssertionError("a binary first line was read")
