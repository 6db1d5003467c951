"""File source: real Binance files arrive exactly once and in time order; formats, filters, bad rows, memory."""

from __future__ import annotations

import csv
import gc
import gzip
import json
import tracemalloc
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil
import pytest

from rtqis.producers.files import (
    BadRow,
    FileFormat,
    KlineChunk,
    MergedBatch,
    Pacer,
    SourceChunk,
    SourceFormatError,
    detect_format,
    inspect_file,
    iter_file,
    merge_sources,
    write_parquet,
)
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME
from tests.conftest import BINANCE_DATA, TEST_DATA

DATA = TEST_DATA
BINANCE = BINANCE_DATA
TRADES = BINANCE / "trades"
RAW = BINANCE / "streams_raw"
BTC_CSV = TRADES / "BTCUSDT-spot-trades-2024-08-08T235415_to_2024-08-09T000505.csv"
ETH_CSV = TRADES / "ETHUSDT-spot-trades-2024-08-08T235415_to_2024-08-09T000505.csv"
SPOT_RAW = sorted(RAW.glob("spot_*usdt_2024080[89].gz"))
EXCERPT = DATA / "BTCUSDT-spot-trades-2024-08-08T235415-excerpt.csv"


def _read_spot_csv(path: Path) -> dict[str, list[Any]]:
    """Independent read of a header-less spot trades CSV with the csv module."""
    out: dict[str, list[Any]] = {"trade_id": [], "price": [], "qty": [], "time": [], "buyer_maker": []}
    with path.open(newline="") as f:
        for row in csv.reader(f):
            out["trade_id"].append(int(row[0]))
            out["price"].append(float(row[1]))
            out["qty"].append(float(row[2]))
            out["time"].append(int(row[4]))
            out["buyer_maker"].append(row[5] == "True")
    return out


def _collect(batches: Iterable[MergedBatch]) -> tuple[dict[tuple[str, str], dict[str, np.ndarray]], list[MergedBatch]]:
    """Concatenate merged batches per (kind, symbol), checking the slice invariants on the way."""
    parts: dict[tuple[str, str], list[SourceChunk]] = {}
    key: tuple[str, str]
    seen: list[MergedBatch] = []
    prev_t1: int | None = None
    for b in batches:
        assert b.late == 0
        assert b.t0 <= b.t1
        if prev_t1 is not None:
            assert b.t0 >= prev_t1
        for key, c in b.parts.items():
            assert len(c) and c.kind == key[0] and c.symbol == key[1]
            assert np.all(np.diff(c.time) >= 0)
            assert c.time[0] >= b.t0 and c.time[-1] < b.t1
            parts.setdefault(key, []).append(c)
        prev_t1 = b.t1
        seen.append(b)
    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, cs in parts.items():
        cols = {k: np.concatenate([c.cols[k] for c in cs]) for k in cs[0].cols if cs[0].cols[k] is not None}
        cols["time"] = np.concatenate([c.time for c in cs])
        out[key] = cols
    return out, seen


# --------------------------------------------------------------------------------------------------
# Real data


def test_spot_trade_csvs_arrive_exactly_once_in_time_order() -> None:
    got, batches = _collect(merge_sources([BTC_CSV, ETH_CSV], batch_rows=4_000))
    assert set(got) == {("trade", "BTCUSDT"), ("trade", "ETHUSDT")}
    assert len(batches) > 5
    for sym, path in (("BTCUSDT", BTC_CSV), ("ETHUSDT", ETH_CSV)):
        ref = _read_spot_csv(path)
        g = got[("trade", sym)]
        assert g["trade_id"].tolist() == ref["trade_id"]  # every trade once, in file (= time) order
        assert g["price"].tolist() == ref["price"]
        assert g["qty"].tolist() == ref["qty"]
        assert g["trade_time"].tolist() == ref["time"]
        assert g["event_time"].tolist() == ref["time"] and g["recv_time"].tolist() == ref["time"]
        assert g["buyer_maker"].tolist() == ref["buyer_maker"]
    # across symbols: batches are time slices, so the whole stream is in time order
    assert sum(b.n_trades for b in batches) == 19_904 + 14_515
    assert any(len(b.trades) == 2 for b in batches)


def test_iter_file_real_csv_matches_polars() -> None:
    chunks = list(iter_file(BTC_CSV, chunk_rows=3_000))
    assert len(chunks) > 3 and all(isinstance(c, SourceChunk) and not c.bad for c in chunks)
    ref = pl.read_csv(BTC_CSV, has_header=False)
    ids = np.concatenate([c.cols["trade_id"] for c in chunks])  # type: ignore[misc]
    assert ids.tolist() == ref.to_series(0).to_list()
    assert isinstance(chunks[0], SourceChunk)
    frame = chunks[0].to_frame()
    assert frame.type is TRADE_FRAME and frame.symbol == "BTCUSDT" and len(frame) == len(chunks[0])


def test_raw_spot_captures_interleave_trades_and_books() -> None:
    assert len(SPOT_RAW) == 4
    bad: list[BadRow] = []
    batches = list(merge_sources(SPOT_RAW, batch_rows=10_000))
    for b in batches:
        bad.extend(b.bad)
    got, _ = _collect(batches)
    assert not bad
    counts = {k: len(v["time"]) for k, v in got.items()}
    assert counts == {
        ("trade", "BTCUSDT"): 19_904,
        ("book", "BTCUSDT"): 73_174,
        ("trade", "ETHUSDT"): 14_515,
        ("book", "ETHUSDT"): 58_758,
    }
    # interleaved: many batches carry both kinds, and every batch is a time slice (checked in _collect)
    assert sum(1 for b in batches if b.n_trades and b.n_books) > 5
    for sym, path in (("BTCUSDT", BTC_CSV), ("ETHUSDT", ETH_CSV)):
        tr = got[("trade", sym)]
        assert np.all(np.diff(tr["trade_id"]) == 1)  # no gaps, no duplicates across the 08/09 files
        assert np.array_equal(tr["time"], tr["trade_time"])  # event time of a trade = T
        assert np.all(tr["event_time"] >= tr["trade_time"])  # E of the payload is kept
        ref = _read_spot_csv(path)  # the same trades as the archive CSV
        assert tr["trade_id"].tolist() == ref["trade_id"] and tr["price"].tolist() == ref["price"]
        bk = got[("book", sym)]
        assert "event_time" not in bk  # spot bookTicker: no exchange time
        assert np.array_equal(bk["time"], bk["recv_time"])  # ... so the local receive time orders it
        assert np.all(np.diff(bk["update_id"]) > 0)
        assert np.all(bk["bid_price"] < bk["ask_price"])
        assert np.all(tr["recv_time"] > 1_723_161_000_000)  # capture clock, ms


def test_raw_capture_book_matches_bookticker_csv() -> None:
    path = RAW / "spot_ethusdt_20240808.gz"
    books = [c for c in iter_file(path) if isinstance(c, SourceChunk) and c.kind == "book"]
    uid = np.concatenate([c.cols["update_id"] for c in books])  # type: ignore[misc]
    ref = pl.read_csv(BINANCE / "bookticker" / "ETHUSDT-spot-bookTicker-2024-08-08_2024-08-09.csv.gz")
    n = len(uid)
    assert uid.tolist() == ref["update_id"].to_list()[:n]
    recv = np.concatenate([c.cols["recv_time"] for c in books])  # type: ignore[misc]
    assert recv.tolist() == (ref["local_recv_ns"] // 1_000_000).to_list()[:n]
    csv_books = [c for c in iter_file(BINANCE / "bookticker" / "ETHUSDT-spot-bookTicker-2024-08-08_2024-08-09.csv.gz")]
    assert sum(len(c) for c in csv_books) == 58_758
    assert csv_books[0].kind == "book" and csv_books[0].cols["event_time"] is None  # type: ignore[union-attr]


def test_futures_capture_uses_exchange_event_time() -> None:
    got, _ = _collect(merge_sources([RAW / "usdm_ethusdt_20240808.gz"]))
    assert len(got[("trade", "ETHUSDT")]["time"]) == 2_095  # received before 23:55:15 (tests/data/README.md)
    bk = got[("book", "ETHUSDT")]
    assert np.array_equal(bk["time"], bk["event_time"])
    assert len(bk["time"]) == 10_190


def test_detects_every_shared_file() -> None:
    expected = {
        "trades": {FileFormat.SPOT_TRADES, FileFormat.UM_TRADES, FileFormat.CM_TRADES},
        "bookticker": {FileFormat.BOOKTICKER},
        "klines": {FileFormat.KLINES},
        "streams_raw": {FileFormat.RAW_WS_CAPTURE},
    }
    for folder, fmts in expected.items():
        found = {detect_format(p) for p in (BINANCE / folder).iterdir()}
        assert found == fmts
    info = inspect_file(RAW / "cm_btcusd_perp_20240808.gz")
    assert info.symbol == "BTCUSD_PERP" and info.compression == "gzip"


def test_klines_file() -> None:
    path = next((BINANCE / "klines").iterdir())
    chunks = list(iter_file(path))
    assert len(chunks) == 1 and isinstance(chunks[0], KlineChunk)
    k = chunks[0]
    assert k.symbol == "ETHUSDT" and k.interval == "1m"
    ref = pl.read_csv(path)
    assert k.cols["open_time"].tolist() == ref["open_time"].to_list()
    assert k.cols["close"].tolist() == ref["close"].to_list()
    assert k.cols["count"].tolist() == ref["count"].to_list()
    with pytest.raises(SourceFormatError, match="klines"):
        merge_sources([path])


@pytest.mark.parametrize(
    ("name", "interval"),
    [
        ("ETHUSDT-5m-2024-08-08.csv", "5m"),  # the name says it (rtqis.intervals accepts it)
        ("ETHUSDT-1w-2024-08.csv", "1w"),  # calendar intervals are named too
        ("ETHUSDT-klines-2024-08-08.csv", "1m"),  # no interval in the name: close - open + 1 of a row
    ],
)
def test_kline_interval_from_name_else_from_the_rows(tmp_path: Path, name: str, interval: str) -> None:
    path = tmp_path / name
    t = 1_723_161_180_000
    path.write_text(f"{t},1,2,0.5,1.5,10,{t + 59_999},15,3,5,7.5,0\n")
    (k,) = list(iter_file(path))
    assert isinstance(k, KlineChunk) and k.interval == interval


# --------------------------------------------------------------------------------------------------
# Containers and layouts


def test_zip_member_is_streamed(tmp_path: Path) -> None:
    zpath = tmp_path / "BTCUSDT-trades-2024-08-08.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(EXCERPT, "BTCUSDT-trades-2024-08-08.csv")
    info = inspect_file(zpath)
    assert (info.format, info.compression, info.symbol) == (FileFormat.SPOT_TRADES, "zip", "BTCUSDT")
    chunks = [c for c in iter_file(zpath, chunk_rows=300) if isinstance(c, SourceChunk)]
    assert len(chunks) >= 3
    ref = _read_spot_csv(EXCERPT)
    assert np.concatenate([c.cols["trade_id"] for c in chunks]).tolist() == ref["trade_id"]  # type: ignore[misc]
    assert np.concatenate([c.cols["price"] for c in chunks]).tolist() == ref["price"]  # type: ignore[misc]


def test_gzip_csv(tmp_path: Path) -> None:
    gpath = tmp_path / "BTCUSDT-trades-2024-08-08.csv.gz"
    gpath.write_bytes(gzip.compress(EXCERPT.read_bytes()))
    assert detect_format(gpath) is FileFormat.SPOT_TRADES
    assert sum(len(c) for c in iter_file(gpath)) == 1_000


def test_microsecond_timestamps_become_ms(tmp_path: Path) -> None:
    path = tmp_path / "ETHUSDT-trades-2025-01-01.csv"
    rows = [
        "id,price,qty,quote_qty,time,is_buyer_maker",
        "1,3000.5,0.1,300.05,1735689600123456,true",
        "2,3000.6,0.2,600.12,1735689600124999,false",
        "3,3000.7,0.3,900.21,1735689600125000,false",
    ]
    path.write_text("\n".join(rows) + "\n")
    (c,) = list(iter_file(path))
    assert isinstance(c, SourceChunk)
    assert c.time.tolist() == [1735689600123, 1735689600124, 1735689600125]  # sub-ms dropped
    assert c.cols["trade_time"].tolist() == c.time.tolist()  # type: ignore[union-attr]
    assert c.cols["buyer_maker"].tolist() == [True, False, False]  # type: ignore[union-attr]


def test_aggtrades_layouts(tmp_path: Path) -> None:
    spot = tmp_path / "BNBBTC-aggTrades-2017-07-01.csv"
    spot.write_text("26129,0.01633102,4.70443515,27781,27781,1498793709153,True,True\n")
    um = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    um.write_text(
        "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
        "10,42000.1,0.5,100,102,1704067200000,false\n"
    )
    assert detect_format(spot) is FileFormat.SPOT_AGGTRADES and detect_format(um) is FileFormat.UM_AGGTRADES
    (a,) = list(iter_file(spot))
    (b,) = list(iter_file(um))
    assert isinstance(a, SourceChunk) and isinstance(b, SourceChunk)
    assert a.cols["trade_id"].tolist() == [26129] and b.cols["qty"].tolist() == [0.5]  # type: ignore[union-attr]


def _trade_chunks(path: Path, **kw: Any) -> list[SourceChunk]:
    return [c for c in iter_file(path, **kw) if isinstance(c, SourceChunk)]


def test_parquet_round_trip_trades(tmp_path: Path) -> None:
    chunks = _trade_chunks(EXCERPT, chunk_rows=250)
    out = tmp_path / "trades.parquet"
    assert write_parquet(out, chunks) == 1_000
    assert detect_format(out) is FileFormat.PARQUET_TRADES
    back = _trade_chunks(out, chunk_rows=333)
    assert len(back) == 4
    for k in TRADE_FRAME.dtypes:
        a = np.concatenate([c.cols[k] for c in chunks])  # type: ignore[misc]
        b = np.concatenate([c.cols[k] for c in back])  # type: ignore[misc]
        assert a.dtype == b.dtype and np.array_equal(a, b), k
    assert all(c.symbol == "BTCUSDT" for c in back)


def test_parquet_round_trip_spot_books_and_symbols(tmp_path: Path) -> None:
    lines = ["local_recv_ns,update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty"]
    for i in range(50):
        lines.append(f"{1723161254087891268 + i * 10_000_000},{100 + i},10.{i:02d},1.5,11.{i:02d},2.5")
    src = tmp_path / "SOLUSDT-spot-bookTicker.csv"
    src.write_text("\n".join(lines) + "\n")
    books = [c for c in iter_file(src) if isinstance(c, SourceChunk)]
    assert books[0].kind == "book" and books[0].cols["event_time"] is None
    out = tmp_path / "books.parquet"
    write_parquet(out, books)
    assert detect_format(out) is FileFormat.PARQUET_BOOKTICKER
    (back,) = [c for c in iter_file(out) if isinstance(c, SourceChunk)]
    assert back.symbol == "SOLUSDT" and back.cols["event_time"] is None
    for k in BOOK_FRAME.dtypes:
        if k != "event_time":
            assert np.array_equal(back.cols[k], books[0].cols[k]), k  # type: ignore[arg-type]
    assert back.time.tolist() == books[0].time.tolist()
    # a Parquet file with a symbol column and several symbols is split per symbol
    pl.DataFrame(
        {
            "symbol": ["BTCUSDT", "ETHUSDT", "BTCUSDT"],
            "trade_id": [1, 1, 2],
            "price": [1.0, 2.0, 3.0],
            "qty": [1.0, 1.0, 1.0],
            "time": [10, 11, 12],
            "is_buyer_maker": [True, False, True],
        }
    ).write_parquet(tmp_path / "mixed.parquet")
    parts = {c.symbol: c.cols["trade_id"].tolist() for c in _trade_chunks(tmp_path / "mixed.parquet")}  # type: ignore[union-attr]
    assert parts == {"BTCUSDT": [1, 2], "ETHUSDT": [1]}


# --------------------------------------------------------------------------------------------------
# Filters


def test_start_end_and_limit() -> None:
    ref = _read_spot_csv(BTC_CSV)
    times = np.array(ref["time"])
    start, end = int(times[5_000]), int(times[9_000])
    got, _ = _collect(merge_sources([BTC_CSV], start_ms=start, end_ms=end, chunk_rows=1_000))
    g = got[("trade", "BTCUSDT")]
    want = np.array(ref["trade_id"])[(times >= start) & (times < end)]
    assert g["trade_id"].tolist() == want.tolist()
    # iter_file stops reading after end_ms
    assert sum(len(c) for c in iter_file(BTC_CSV, start_ms=start, end_ms=end)) == len(want)
    # limit counts trades across files; book tickers are kept up to the last trade's time
    batches = list(merge_sources([SPOT_RAW[0], SPOT_RAW[2], BTC_CSV], symbols={"btcusdt"}, limit=2_500))
    got, _ = _collect(batches)
    assert {k[1] for k in got} == {"BTCUSDT"}
    trades = got[("trade", "BTCUSDT")]
    assert len(trades["time"]) == 2_500
    books = got[("book", "BTCUSDT")]
    assert books["time"].max() <= trades["time"].max() < batches[-1].t1
    assert list(merge_sources([BTC_CSV], limit=0)) == []


def test_symbol_override_and_selection(tmp_path: Path) -> None:
    plain = tmp_path / "trades.csv"
    plain.write_bytes(EXCERPT.read_bytes())
    with pytest.raises(SourceFormatError, match="pass symbol="):
        iter_file(plain)
    assert {c.symbol for c in _trade_chunks(plain, symbol="ethusdt")} == {"ETHUSDT"}
    assert list(merge_sources([EXCERPT], symbols={"ETHUSDT"})) == []


# --------------------------------------------------------------------------------------------------
# Bad rows and bad files


def test_bad_rows_are_reported_not_emitted(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    path.write_text(
        "id,price,qty,quote_qty,time,is_buyer_maker\n"  # line 1
        "1,100.5,0.1,10.05,1723161255342,false\n"  # 2 ok
        "2,abc,0.1,10.05,1723161255343,false\n"  # 3 price not a number
        "3,0,0.1,0,1723161255344,true\n"  # 4 price <= 0
        "4,100.5,0.1,1723161255345,true\n"  # 5 too few fields
        "\n"  # 6 blank: skipped quietly
        "5,100.5,-1,10.05,1723161255346,true\n"  # 7 qty <= 0
        "6,100.6,0.2,20.12,1723161255347,TRUE\n"  # 8 ok
    )
    chunks = list(iter_file(path))
    good = [c for c in chunks if isinstance(c, SourceChunk)]
    assert np.concatenate([c.cols["trade_id"] for c in good]).tolist() == [1, 6]  # type: ignore[misc]
    bad = [b for c in chunks for b in c.bad]
    assert [(b.line, b.file) for b in bad] == [(3, str(path)), (4, str(path)), (5, str(path)), (7, str(path))]
    reasons = [b.reason for b in bad]
    assert "price is not a number" in reasons[0]
    assert reasons[1] == "price <= 0"  # the row rules of rtqis.schemas.rows
    assert "expected 6 fields" in reasons[2]
    assert reasons[3] == "qty <= 0"
    assert bad[0].raw == "2,abc,0.1,10.05,1723161255343,false"


def test_bad_rows_when_the_fast_parser_gives_up(tmp_path: Path) -> None:
    # a row with too many fields makes polars reject the block: the row-by-row path must agree
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    rows = EXCERPT.read_text().splitlines()[:10]
    rows[3] = rows[3] + ",extra"
    rows[6] = rows[6].replace(rows[6].split(",")[1], "-5", 1)
    path.write_text("\n".join(rows) + "\n")
    chunks = list(iter_file(path))
    bad = [b for c in chunks for b in c.bad]
    assert [(b.line, b.reason.split(" ")[0]) for b in bad] == [(4, "expected"), (7, "price")]
    assert sum(len(c) for c in chunks) == 8


@pytest.mark.parametrize("chunk_rows", [2, 5, 1000])
def test_the_verdict_on_a_row_does_not_depend_on_the_block_it_falls_in(tmp_path: Path, chunk_rows: int) -> None:
    # a short row whose missing field is one the layout does not use (polars pads it: it must still be
    # rejected, as the row-by-row path does), and fields polars will not cast but Python reads (kept)
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    rows = EXCERPT.read_text().splitlines()[:12]
    rows[2] = ",".join(rows[2].split(",")[:6])  # no isBestMatch
    f = rows[5].split(",")
    rows[5] = ",".join([f" {f[0]}", f[1], f[2], f[3], f"+{f[4]}", *f[5:]])
    path.write_text("\n".join(rows) + "\n")
    chunks = list(iter_file(path, chunk_rows=chunk_rows))
    bad = [(b.line, b.reason.split(" (")[0]) for c in chunks for b in c.bad]
    assert bad == [(3, "expected 7 fields")]
    ids = np.concatenate([c.cols["trade_id"] for c in chunks if len(c)])  # type: ignore[misc]
    assert ids.tolist() == [int(r.split(",")[0]) for i, r in enumerate(rows) if i != 2]


def test_bad_lines_in_a_capture(tmp_path: Path) -> None:
    trade = {"e": "trade", "E": 2, "s": "BTCUSDT", "t": 1, "p": "10.0", "q": "1", "T": 1, "m": True}
    lines = [
        f"1723161254087891268 {json.dumps({'stream': 'btcusdt@trade', 'data': trade})}",
        "1723161254087891269 {not json",
        f"1723161254087891270 {json.dumps({**trade, 't': 2, 'p': '0'})}",
        f"1723161254087891271 {json.dumps({'u': 5, 's': 'BTCUSDT', 'b': '11', 'B': '1', 'a': '10', 'A': '1'})}",
        "garbage",
        "1723161254087891272 "
        + json.dumps({"e": "depthUpdate", "E": 3, "s": "BTCUSDT", "U": 1, "u": 2, "b": [], "a": []}),
        f"1723161254087891273 {json.dumps({**trade, 't': 3, 'T': 4})}",
    ]
    path = tmp_path / "spot_btcusdt_20240808.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    batches = list(merge_sources([path]))
    got, _ = _collect(batches)
    assert got[("trade", "BTCUSDT")]["trade_id"].tolist() == [1, 3]
    assert got[("trade", "BTCUSDT")]["recv_time"].tolist() == [1723161254087, 1723161254087]
    bad = [row for bt in batches for row in bt.bad]
    assert [b.line for b in bad] == [2, 3, 4, 5]
    assert "JSON" in bad[0].reason and bad[1].reason == "price <= 0"
    assert bad[2].reason == "crossed book: bid_price >= ask_price" and "receive time" in bad[3].reason


def _one_line(e: pytest.ExceptionInfo[SourceFormatError], path: Path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "expected" in msg
    return msg


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("notes.txt", b"hello world\nsecond line\n", "not a known layout"),
        ("image.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "PNG"),
        ("empty.csv", b"", "empty"),
        ("blank.csv", b"\n\n  \n", "blank"),
        ("BTCUSDT-binary.csv", bytes(range(256)) * 4, "binary"),
        ("broken.gz", b"\x1f\x8b\x08\x00garbage", "decompressed"),
        ("BTCUSDT-x.csv", b"1,2,3\n", "not a known layout"),
        ("BTCUSDT-x.parquet", b"PAR1 not really", "Parquet"),
    ],
)
def test_unrecognised_files_fail_with_one_line(tmp_path: Path, name: str, content: bytes, why: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceFormatError) as e:
        detect_format(path)
    assert why in _one_line(e, path)
    with pytest.raises(SourceFormatError):  # raised by the call itself, before any iteration
        merge_sources([EXCERPT, path])
    with pytest.raises(SourceFormatError):
        iter_file(path)


def test_zip_with_two_members_and_missing_file(tmp_path: Path) -> None:
    zpath = tmp_path / "BTCUSDT-trades.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a.csv", "1,2\n")
        zf.writestr("b.csv", "1,2\n")
    with pytest.raises(SourceFormatError) as e:
        detect_format(zpath)
    assert "2 files" in _one_line(e, zpath)
    with pytest.raises(SourceFormatError, match="no such file"):
        detect_format(tmp_path / "nope.csv")


# --------------------------------------------------------------------------------------------------
# Memory, progress, pacing


def test_bounded_memory_on_a_large_csv(tmp_path: Path) -> None:
    """2,000,000 rows (~130 MB): Python allocations and RSS stay far below the file size.

    tracemalloc sees numpy and Python allocations; polars parses in Rust (invisible to it), so RSS
    growth is checked as well, loosely (allocator arenas and polars' thread pool are in it).
    """
    n = 2_000_000
    rng = np.random.default_rng(7)
    price = np.round(60_000 + np.cumsum(rng.normal(0, 1, n)), 2)
    qty = np.round(rng.exponential(0.05, n) + 1e-5, 5)
    df = pl.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64) + 3_700_000_000,
            "price": price,
            "qty": qty,
            "quote": np.round(price * qty, 6),
            "time": 1_723_161_255_342 + np.cumsum(rng.integers(0, 3, n)),
            "m": np.where(rng.random(n) < 0.5, "True", "False"),
            "b": np.full(n, "True"),
        }
    )
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    df.write_csv(path, include_header=False)
    last_id = int(df["id"][-1])
    del df, price, qty
    gc.collect()
    size = path.stat().st_size
    assert size > 100_000_000
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    rss_peak = rss0
    progress: list[tuple[int, int, int]] = []
    tracemalloc.start()
    try:
        rows = 0
        prev_time = 0
        for c in iter_file(path, on_progress=lambda *a: progress.append(a)):
            assert isinstance(c, SourceChunk) and not c.bad
            rows += len(c)
            assert c.time[0] >= prev_time
            prev_time = int(c.time[-1])
            last = int(c.cols["trade_id"][-1])  # type: ignore[index]
            rss_peak = max(rss_peak, proc.memory_info().rss)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == n and last == last_id
    assert peak < size / 4, f"Python peak {peak / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"
    assert rss_peak - rss0 < size / 2, f"RSS grew {(rss_peak - rss0) / 1e6:.0f} MB"
    assert progress[-1] == (n, size, size)
    assert all(a[1] <= b[1] for a, b in zip(progress, progress[1:], strict=False))
    # the merge over the same file keeps about one block per source plus one batch
    tracemalloc.start()
    try:
        merged = sum(bt.n_trades for bt in merge_sources([path], batch_rows=100_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert merged == n
    assert peak < size / 4, f"merge: Python peak {peak / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"


def test_merge_progress_callback() -> None:
    seen: list[tuple[int, int, int]] = []
    list(merge_sources([EXCERPT], chunk_rows=100, on_progress=lambda *a: seen.append(a)))
    assert seen and seen[-1][0] == 1_000 and seen[-1][1] == seen[-1][2] == EXCERPT.stat().st_size


def test_slice_ms_caps_batch_span() -> None:
    batches = list(merge_sources([EXCERPT], slice_ms=1_000))
    assert sum(b.n_trades for b in batches) == 1_000
    for b in batches:
        for c in b.parts.values():
            assert int(c.time[-1]) - int(c.time[0]) < 1_000
    frames = batches[0].frames(max_ticks=7)
    assert all(len(f) <= 7 for f in frames) and sum(len(f) for f in frames) == batches[0].n_trades


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_pacer_speeds() -> None:
    fc = FakeClock()
    p = Pacer(60, clock=fc.clock, sleep=fc.sleep)
    assert p.wait_until(1_000_000) == 0.0  # anchors
    assert p.wait_until(1_060_000) == pytest.approx(1.0)  # 60 s of events at 60x = 1 s
    fc.now += 5.0  # we fell behind: no sleep
    assert p.wait_until(1_120_000) == 0.0
    assert fc.slept == [pytest.approx(1.0)]
    fc2 = FakeClock()
    rt = Pacer(1, clock=fc2.clock, sleep=fc2.sleep)
    rt.wait_until(0)
    rt.wait_until(250)
    assert fc2.slept == [pytest.approx(0.25)]
    fast = Pacer(None, clock=fc2.clock, sleep=fc2.sleep)
    assert fast.wait_until(0) == 0.0 and fast.wait_until(10**9) == 0.0
    with pytest.raises(ValueError):
        Pacer(0)


def test_chunk_to_frame_models() -> None:
    (c, *_) = _trade_chunks(EXCERPT)
    rows = c.take(slice(0, 2)).to_frame().models()
    first = rows[0].model_dump()
    assert (first["symbol"], first["trade_id"], first["price"], first["buyer_maker"]) == (
        "BTCUSDT",
        3735683259,
        61837.63,
        True,
    )


def test_ties_keep_file_then_row_order_and_late_rows_are_counted(tmp_path: Path) -> None:
    a = tmp_path / "BTCUSDT-trades-a.csv"
    b = tmp_path / "BTCUSDT-trades-b.csv"
    a.write_text("1,10,1,10,1000,True,True\n2,10,1,10,1000,True,True\n3,10,1,10,1002,True,True\n")
    b.write_text("11,10,1,10,999,True,True\n12,10,1,10,1000,True,True\n13,10,1,10,1001,True,True\n")
    got, _ = _collect(merge_sources([a, b], chunk_rows=1))
    assert got[("trade", "BTCUSDT")]["trade_id"].tolist() == [11, 1, 2, 12, 13, 3]
    # a file out of time order: every row still arrives once, the stragglers are counted as late
    c = tmp_path / "BTCUSDT-trades-c.csv"
    times = list(range(1_000, 2_000))
    times[500], times[900] = 5, 7  # two stragglers, blocks (>= 4 KB) apart
    c.write_text("".join(f"{i},10,1,10,{t},True,True\n" for i, t in enumerate(times)))
    batches = list(merge_sources([c], chunk_rows=10, batch_rows=10))
    ids = [i for bt in batches for i in bt.parts[("trade", "BTCUSDT")].cols["trade_id"].tolist()]  # type: ignore[union-attr]
    assert sorted(ids) == list(range(1_000)) and sum(bt.late for bt in batches) == 2


def test_header_with_bom_extra_and_reordered_columns(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    path.write_bytes(
        b"\xef\xbb\xbf\nid,time,price,qty,is_buyer_maker,quote_qty,note\n"
        b"7,1723161255342,100.5,0.25,true,25.125,x\n"
        b"8,1723161255343,100.25,0.5,false,50.125,y,z\n"  # line 4: one field too many
    )
    assert detect_format(path) is FileFormat.UM_TRADES
    (c,) = list(iter_file(path))
    assert isinstance(c, SourceChunk)
    assert c.cols["trade_id"].tolist() == [7] and c.cols["price"].tolist() == [100.5]  # type: ignore[union-attr]
    assert c.time.tolist() == [1723161255342]
    assert [(b.line, b.reason) for b in c.bad] == [(4, "expected 7 fields, got 8")]
