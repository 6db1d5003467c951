"""Hostile files and strings at the CSV edges (#21): dashboard uploads (size before reading, type, all or
nothing, streamed candles kept), spreadsheet-safe downloads (formula cells neutralised, negative numbers
numeric), and symbols / pairs / file names that look like SQL. No browser: the data and action functions."""

from __future__ import annotations

import csv
import io
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import polars as pl
import pytest

from rtqis.errors import RtqisError
from rtqis.schemas import models as m
from rtqis.settings import Settings, load_settings
from rtqis.sinks.candle_files import EXPORT_COLUMNS, SKIPPED_STREAMED, spreadsheet_safe
from rtqis.sinks.sink import sink_paths
from rtqis.sinks.store import Store
from rtqis.ui import data
from rtqis.ui import tables as tb
from rtqis.ui.actions import Actions
from rtqis.ui.hub import CANDLE_FIELDS, SIGNAL_FIELDS

T0 = 1_723_161_600_000  # 2024-08-09T00:00:00Z
MIN = 60_000
SQLISH = "BTC'; DROP TABLE candles;--"
FORMULAS = ("=1+1", "+SUM(A1)", "-2+3", "@cmd", "\t=x", "\r=x", '=HYPERLINK("http://evil")')
GOOD = b"open_time,open,high,low,close,volume\n2024-08-09T00:00:00Z,1,2,0.5,1.5,3\n2024-08-09T00:01:00Z,1,2,0.5,1.2,3\n"


@pytest.fixture
def offline(tmp_path: Path) -> Settings:
    """Settings whose DuckDB is a file in tmp_path and whose broker nobody runs (no sink: direct writes)."""
    return load_settings(data_dir=tmp_path / "data", bootstrap_servers="127.0.0.1:1")


def _stored(settings: Settings, symbol: str = "BTCUSDT") -> pl.DataFrame:
    live = sink_paths(settings)[0]
    if not live.exists():
        return pl.DataFrame()
    with Store(live, read_only=True) as st:
        return st.candles(symbol, "1m")


def _streamed(settings: Settings, *times: int, closed: bool = True) -> None:
    sink_paths(settings)[0].parent.mkdir(parents=True, exist_ok=True)
    with Store(sink_paths(settings)[0]) as st:
        st.upsert_candles(
            [
                m.Candle(
                    symbol="BTCUSDT", interval="1m", open_time=t, close_time=t + MIN - 1, open=60_000.0,
                    high=60_010.0, low=59_990.0, close=60_005.0, volume=2.0, quote_volume=120_000.0, trades=9,
                    taker_buy_volume=1.0, taker_buy_quote_volume=60_000.0, vwap=60_000.0, closed=closed,
                )
                for t in times
            ]
        )  # fmt: skip


# ------------------------------------------------------------------------------------------ spreadsheet-safe


def test_spreadsheet_safe_neutralises_text_cells_only() -> None:
    df = pl.DataFrame(
        {
            "text": [*FORMULAS, "BTCUSDT", "", "a=b", "-1.5"],
            "num": [-1.5] * (len(FORMULAS) + 4),
            "count": [-3] * (len(FORMULAS) + 4),
            "flag": [False] * (len(FORMULAS) + 4),
        }
    )
    out = spreadsheet_safe(df)
    assert out["text"].to_list() == [*(f"'{f}" for f in FORMULAS), "BTCUSDT", "", "a=b", "'-1.5"]
    assert out.schema == df.schema
    for c in ("num", "count", "flag"):
        assert out[c].to_list() == df[c].to_list()
    rows = list(csv.reader(io.StringIO(out.write_csv())))
    assert rows[1][1:] == ["-1.5", "-3", "false"]  # negative numbers are written as numbers


def _csv_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode())))


def test_signal_download_neutralises_formula_flags_and_keeps_negative_numbers(offline: Settings) -> None:
    live = tb.rows_to_cols(
        [
            m.PairSignal(time=T0 + i * 1000, pair="ETHUSDT/BTCUSDT", x=100.0, y=50.0, spread=-1.5, zscore=-2.25,
                         n_obs=10, flags=[])
            for i in range(len(FORMULAS))
        ],
        SIGNAL_FIELDS,
    )  # fmt: skip
    live["flags"] = np.array(list(FORMULAS), dtype=object)
    body, n = data.signals_csv(offline, "ETHUSDT/BTCUSDT", live, None, None)
    rows = _csv_rows(body)
    assert n == len(FORMULAS) == len(rows)
    assert [r["flags"] for r in rows] == [f"'{f}" for f in FORMULAS]
    assert {r["spread"] for r in rows} == {"-1.5"} and {r["zscore"] for r in rows} == {"-2.25"}
    for r in rows:
        for k, v in r.items():
            assert not v.startswith(("=", "+", "-", "@", "\t", "\r")) or k in ("spread", "zscore"), (k, v)


def test_candle_download_has_closed_and_is_safe(offline: Settings) -> None:
    _streamed(offline, T0)
    live = tb.rows_to_cols(
        [{"open_time": T0 + MIN, "close_time": T0 + 2 * MIN - 1, "open": 1.0, "high": 2.0, "low": 0.5,
          "close": 1.5, "volume": 3.0, "quote_volume": 4.0, "trades": 2, "taker_buy_volume": 1.0, "vwap": -1.5,
          "closed": False}],
        CANDLE_FIELDS,
    )  # fmt: skip
    body, n = data.candles_csv(offline, "BTCUSDT", "1m", live, None, None)
    rows = _csv_rows(body)
    assert n == 2 and tuple(rows[0]) == EXPORT_COLUMNS
    assert [r["closed"] for r in rows] == ["true", "false"]  # the forming bar says so
    assert rows[1]["vwap"] == "-1.5"  # a negative number stays a number


def test_downloads_refuse_unknown_or_sql_looking_series(offline: Settings) -> None:
    _streamed(offline, T0)
    for sym, iv in ((SQLISH, "1m"), ("DOGEUSDT", "1m"), ("BTCUSDT", "1m'; --"), ("BTCUSDT", "1h"), ("=1+1", "1m")):
        with pytest.raises(RtqisError, match="unknown (symbol|interval)"):
            data.candles_csv(offline, sym, iv, {}, None, None)
    with pytest.raises(RtqisError, match="unknown pair"):
        data.signals_csv(offline, "a' OR '1'='1", {}, None, None)
    assert _stored(offline)["open_time"].to_list() == [T0]  # the table is intact


# ------------------------------------------------------------------------------------------ uploads


def test_upload_type_and_size_are_checked_and_nothing_is_imported(offline: Settings) -> None:
    bad_files = {
        "candles.xlsx": (GOOD, "not a CSV file"),
        "candles.csv.exe": (GOOD, "not a CSV file"),
        "klines.csv": (b"PK\x03\x04" + GOOD, "a zip archive"),
        "gz.csv": (b"\x1f\x8b\x08" + GOOD, "a gzip file"),
        "p.csv": (b"PAR1" + GOOD, "a Parquet file"),
        "nul.csv": (GOOD + b"\x00\x00", "binary content"),
        "latin.csv": (GOOD.replace(b"open_time", b"open_time\xe9"), "not UTF-8"),
        "../../etc/passwd": (GOOD, "passwd: not a CSV file"),
        "big.csv": (GOOD + b"9" * data.MAX_UPLOAD_BYTES, "upload limit"),
        "empty.csv": (b"open_time,open,high,low,close,volume\n", "no candles"),
        "garbage.csv": (b"\x7fELF garbage,,,\n1,2\n", "line 1"),
    }
    for name, (body, needle) in bad_files.items():
        with pytest.raises(data.UploadError) as ei:
            data.upload_candles(offline, name, body, symbol="BTCUSDT", interval="1m")
        msg = str(ei.value)
        assert needle in msg and "nothing was imported" in msg and "\n" not in msg, (name, msg)
    assert _stored(offline).is_empty()


def test_upload_refuses_sql_looking_symbols_and_treats_file_names_as_text(offline: Settings) -> None:
    for sym, iv in ((SQLISH, "1m"), ("DOGEUSDT", "1m"), ("BTCUSDT", "1w"), ("BTCUSDT", "1m'--")):
        with pytest.raises(data.UploadError, match="unknown (symbol|interval).*nothing was imported"):
            data.upload_candles(offline, "good.csv", GOOD, symbol=sym, interval=iv)
    assert _stored(offline).is_empty()
    r = data.upload_candles(offline, "x'); DROP TABLE candles;--.csv", GOOD, symbol="BTCUSDT", interval="1m")
    assert r.rows == 2 and _stored(offline)["close"].to_list() == [1.5, 1.2]
    assert not list(offline.data_dir.glob("*DROP*"))  # the name never became a file


def test_upload_keeps_closed_streamed_candles_and_says_so(offline: Settings) -> None:
    _streamed(offline, T0)  # the closed live minute the reported upload replaced
    r = data.upload_candles(offline, "one.csv", GOOD, symbol="BTCUSDT", interval="1m")
    assert (r.rows, r.skipped, r.how) == (1, 1, "written")
    assert r.candles["open_time"].tolist() == [T0 + MIN]  # the chart overlay does not get the skipped row
    c = _stored(offline)
    assert c["source"].to_list() == ["stream", "import"] and c["close"].to_list() == [60_005.0, 1.2]


# ------------------------------------------------------------------------------------------ the upload action


class _Msg:
    def __init__(self) -> None:
        self.shown: list[dict[str, Any]] = []
        self.param = SimpleNamespace(update=lambda **kw: self.shown.append(kw))


def _page(settings: Settings, value: Any, filename: str) -> tuple[Actions, SimpleNamespace]:
    controls = SimpleNamespace(
        upload=SimpleNamespace(value=value, filename=filename),
        upload_msg=_Msg(),
        up_symbol=SimpleNamespace(value="BTCUSDT"),
        up_interval=SimpleNamespace(value="1m"),
        symbol=SimpleNamespace(value="BTCUSDT"),
        interval=SimpleNamespace(value="1m"),
    )
    page = SimpleNamespace(
        settings=settings,
        controls=controls,
        state=SimpleNamespace(imported={}),
        tf=SimpleNamespace(tz="UTC"),
        reloads=0,
        threads=0,
    )

    def in_thread(fn: Any, done: Any) -> None:  # the session's pool, run inline
        page.threads += 1
        f: Future[Any] = Future()
        try:
            f.set_result(fn())
        except Exception as e:
            f.set_exception(e)
        done(f)

    def reload_candles() -> None:
        page.reloads += 1

    page.in_thread, page.reload_candles = in_thread, reload_candles
    actions = Actions.__new__(Actions)  # no widgets to wire: the handler alone
    actions.page = page  # type: ignore[assignment]
    return actions, page


def test_upload_action_refuses_an_oversized_file_before_any_work(
    offline: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_a: Any, **_k: Any) -> None:
        raise AssertionError("an oversized upload must not be decoded, parsed or imported")

    monkeypatch.setattr(data, "upload_candles", never)
    actions, page = _page(offline, b"x" * (data.MAX_UPLOAD_BYTES + 1), "big.csv")
    actions.on_upload()
    (shown,) = page.controls.upload_msg.shown
    assert shown["alert_type"] == "danger" and "upload limit" in shown["object"] and page.threads == 0


def test_upload_action_shows_one_line_and_the_skipped_rows(offline: Settings) -> None:
    actions, page = _page(offline, b"PK\x03\x04" + GOOD, "<b>x</b>.csv")
    actions.on_upload()
    last = page.controls.upload_msg.shown[-1]
    assert last["alert_type"] == "danger" and "zip archive" in last["object"] and "<b>" not in last["object"]
    assert _stored(offline).is_empty()

    _streamed(offline, T0)
    actions, page = _page(offline, GOOD, "one.csv")
    actions.on_upload()
    last = page.controls.upload_msg.shown[-1]
    assert last["alert_type"] == "warning"
    assert f"1 row skipped: {SKIPPED_STREAMED}" in last["object"] and "Imported 1" in last["object"]
    assert page.state.imported[("BTCUSDT", "1m")]["open_time"].tolist() == [T0 + MIN] and page.reloads == 1
