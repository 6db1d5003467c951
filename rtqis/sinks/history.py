"""History for the CLI and the dashboard while the sink may be running: read, import, back-fill.

DuckDB lets one process write a file. When the sink runs it holds the live database, so:
- reads (:func:`open_history`) ask the running sink over its socket (:mod:`rtqis.sinks.readers`: the
  sink answers from its own connection, so new data is visible as soon as it is committed), or open the
  live file read-only when no sink runs;
- ``candles import`` validates the whole file locally, then either writes it (sink not running) or
  publishes the rows to ``candles.<interval>`` with ``source=import`` for the sink to store; either way
  rows that would replace a closed streamed candle are skipped and counted (checked against the live
  database, or through the running sink);
- symbols and intervals given by a user are checked against the configured sets (:func:`check_symbol`,
  :func:`check_export`) before any query or file is touched;
- ``backfill`` (sink not running, or from the sink itself) fills holes in the 1m candles from
  Binance REST klines and derives the 5m candles from the 1m ones.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import polars as pl

from rtqis.analytics.candles import CandleAgg, resample, to_rows
from rtqis.errors import IntervalError, RtqisError
from rtqis.intervals import stored_interval_ms
from rtqis.settings import Settings
from rtqis.sinks.candle_files import ImportResult, read_candles_csv, streamed_open_times, write_import
from rtqis.sinks.readers import HistoryClient, HistoryReader
from rtqis.sinks.sink import sink_paths
from rtqis.sinks.store import Store, StoreError

__all__ = [
    "backfill",
    "check_export",
    "check_interval",
    "check_pair",
    "check_symbol",
    "import_candles",
    "import_rows",
    "open_history",
]

log = logging.getLogger(__name__)


def open_history(settings: Settings, wait_s: float = 10.0) -> HistoryReader:
    """The history, read-only: the running sink over its socket (:class:`HistoryClient`), else the live
    database opened read-only (:class:`Store`). While a sink holds the file but does not answer yet (it
    is starting), waits up to ``wait_s`` seconds. :class:`RtqisError` if there is no history at all."""
    live, sock = sink_paths(settings)
    deadline = time.monotonic() + wait_s
    while True:
        if sock.exists():
            try:
                return HistoryClient(sock)
            except OSError:
                pass  # a socket left by a killed sink, or one just starting: try the file
        if live.exists():
            try:
                return Store(live, read_only=True)
            except StoreError as e:  # held by another process (lock) or, open for writing, by this one
                if "lock" not in str(e).lower() and "different configuration" not in str(e):
                    raise
        elif not sock.exists():
            raise RtqisError(f"no candle history yet: {live} does not exist (run `rtqis up` or `rtqis sink`)")
        if time.monotonic() >= deadline:
            raise RtqisError(
                f"{live} is held by a process that does not answer history queries on {sock}"
                " (a sink still starting, or another program); try again"
            )
        time.sleep(0.05)


def check_symbol(settings: Settings, symbol: str) -> str:
    """``symbol`` if it is one of the configured symbols (``RTQIS_SYMBOLS``), else :class:`RtqisError`
    naming them: user input never reaches a query or a file name unchecked."""
    if symbol not in settings.symbols:
        raise RtqisError(f"unknown symbol {symbol!r}: the configured symbols are {', '.join(settings.symbols)}")
    return symbol


def check_pair(settings: Settings, pair: str) -> str:
    """``pair`` if it is one of the configured pairs (``RTQIS_PAIRS``), else :class:`RtqisError`."""
    if pair not in settings.pairs:
        raise RtqisError(f"unknown pair {pair!r}: the configured pairs are {', '.join(settings.pairs)}")
    return pair


def check_interval(settings: Settings, interval: str) -> str:
    """``interval`` if it is a configured candle interval (``RTQIS_CANDLE_INTERVALS``), else
    :class:`~rtqis.errors.IntervalError` naming them."""
    if interval not in settings.candle_intervals:
        raise IntervalError(
            f"unknown interval {interval!r}: the configured candle intervals are {', '.join(settings.candle_intervals)}"
        )
    return interval


def check_export(settings: Settings, store: HistoryReader, symbol: str, interval: str) -> None:
    """Refuse an export of an unknown series in one line (:class:`RtqisError`) instead of writing an empty
    file: ``symbol`` must be configured; ``interval`` a configured one, or another interval the store
    keeps (:mod:`rtqis.intervals`, e.g. imported ``1h`` or ``1w`` klines) of which ``symbol`` has rows."""
    check_symbol(settings, symbol)
    if interval in settings.candle_intervals:
        return
    stored_interval_ms(interval)  # a malformed name: IntervalError before any query
    if not store.candles(symbol, interval).height:
        raise IntervalError(
            f"no {interval} candles of {symbol} are stored: the configured candle intervals are "
            f"{', '.join(settings.candle_intervals)}; others exist only once imported"
        )


def import_candles(settings: Settings, path: str, *, symbol: str, interval: str = "1m") -> ImportResult:
    """Import an OHLC CSV (:func:`~rtqis.sinks.candle_files.read_candles_csv`, then :func:`import_rows`).

    ``symbol`` must be configured and ``interval`` one the store keeps, checked before the file is read.
    """
    check_symbol(settings, symbol)
    stored_interval_ms(interval)
    return import_rows(
        settings, read_candles_csv(path, symbol=symbol, interval=interval), symbol=symbol, interval=interval
    )


def import_rows(settings: Settings, df: pl.DataFrame, *, symbol: str, interval: str) -> ImportResult:
    """Store validated candle rows as ``source='import'``: written in one transaction when no sink holds
    the database, else published to the running sink (``candles.<interval>``). Rows that would replace a
    closed streamed candle are skipped and counted either way (see
    :func:`~rtqis.sinks.candle_files.write_import`); with a running sink they are asked of it,
    which answers from its own connection."""
    if not df.height:
        return ImportResult(0)
    live, _ = sink_paths(settings)
    try:
        store = Store(live)
    except StoreError:
        store = None
    if store is not None:
        with store:
            return write_import(store, df, symbol=symbol, interval=interval)
    # the sink runs: drop what it holds as streamed, then hand the rows to it through Kafka
    from rtqis.kafka.clients import MessageProducer
    from rtqis.schemas.models import Candle
    from rtqis.topics import by_name

    spec = by_name(f"candles.{interval}")
    if spec is None:
        raise RtqisError(f"the running sink only takes 1m and 5m candles through Kafka, not {interval}")
    try:
        snap = open_history(settings)
    except RtqisError:
        raise RtqisError(
            "the running sink does not answer history queries yet, so the import cannot check which candles "
            "were streamed; nothing was imported, try again in a few seconds"
        ) from None
    with snap:
        streamed = streamed_open_times(snap, symbol, interval, df["open_time"].to_numpy())
    if len(streamed):
        df = df.filter(~pl.col("open_time").is_in(streamed.tolist()))
    p = MessageProducer(settings)
    fields = Candle.model_fields
    for row in df.iter_rows(named=True):
        clean: dict[str, Any] = {k: v for k, v in row.items() if k in fields and v is not None}
        clean.update(source="import", closed=True)
        clean.setdefault("quote_volume", 0.0)
        clean.setdefault("trades", 0)
        clean.setdefault("taker_buy_volume", 0.0)
        clean.setdefault("taker_buy_quote_volume", 0.0)
        clean.setdefault("vwap", 0.0)
        p.send(spec, Candle(**clean), key=symbol, timestamp_ms=int(row["open_time"]))
    if p.flush():
        raise RtqisError("could not deliver every imported candle to the broker")
    return ImportResult(df.height, len(streamed), "published to the running sink", tuple(int(t) for t in streamed))


def _klines_to_agg(k: Any) -> CandleAgg:
    cols = k.columns() if callable(getattr(k, "columns", None)) else k.columns
    n = len(cols["open_time"])
    zeros = np.zeros(n, dtype=np.int64)
    return CandleAgg.from_columns(
        {
            "open_time": cols["open_time"],
            "open": cols["open"],
            "high": cols["high"],
            "low": cols["low"],
            "close": cols["close"],
            "volume": cols["volume"],
            "quote_volume": cols["quote_volume"],
            "taker_buy_volume": cols["taker_buy_volume"],
            "taker_buy_quote_volume": cols["taker_buy_quote_volume"],
            "trades": cols["trades"],
            "first_trade_id": zeros - 1,
            "last_trade_id": zeros - 1,
            "first_time": cols["open_time"],
            "last_time": cols["close_time"],
        }
    )


def backfill(
    settings: Settings, *, lookback_h: float = 24.0, now_ms: int | None = None, store: Store | None = None
) -> int:
    """Fill holes in the 1m candles of every symbol over the look-back from REST klines; derive 5m.

    Returns the 1m rows written. Offline (REST unreachable): warns once and returns 0.
    """
    from rtqis.producers.binance_rest import BinanceRest, RestError

    now = now_ms if now_ms is not None else int(time.time() * 1000)
    end = now - now % 60_000  # the current minute is still forming
    start = end - int(lookback_h * 3600_000)
    own = store is None
    st = store or Store(sink_paths(settings)[0])
    written = 0
    try:
        with BinanceRest(settings.binance_rest_url, max_retries=2) as rest:
            for sym in settings.symbols:
                for g0, g1 in st.missing_minutes(sym, start, end):
                    try:
                        k = rest.klines(sym, "1m", start_ms=g0, end_ms=g1 - 1)
                    except RestError as e:
                        log.warning("back-fill skipped (Binance REST unreachable or refused): %s", e)
                        return written
                    if not len(k):
                        continue
                    agg = _klines_to_agg(k)
                    keep = (agg.open_time >= g0) & (agg.open_time < g1)
                    agg = agg.take(keep)
                    rows = to_rows(agg, sym, "1m", closed_before_ms=end, source="backfill")
                    for r in rows:
                        r["first_trade_id"] = r["last_trade_id"] = None
                    written += st.upsert_candles(rows, source="backfill")
                    # 5m windows touched by the gap, rebuilt from the stored 1m candles
                    w0, w1 = g0 - g0 % 300_000, g1 - g1 % 300_000 + (300_000 if g1 % 300_000 else 0)
                    ones = st.candles(sym, "1m", w0, w1)
                    if ones.height:
                        five = resample(_frame_to_agg(ones), 60_000, 300_000)
                        full = five.take(five.open_time + 300_000 <= end)
                        rows5 = to_rows(full, sym, "5m", closed_before_ms=end, source="backfill")
                        for r in rows5:
                            r["first_trade_id"] = r["last_trade_id"] = None
                        st.upsert_candles(rows5, source="backfill")
    finally:
        if own:
            st.close()
    log.info("back-filled %d 1m candles over the last %.0f h", written, lookback_h)
    return written


def _frame_to_agg(df: pl.DataFrame) -> CandleAgg:
    def col(name: str, fill: float = 0.0) -> np.ndarray:
        return df[name].fill_null(fill).to_numpy()

    n = df.height
    return CandleAgg.from_columns(
        {
            "open_time": col("open_time").astype(np.int64),
            "open": col("open"),
            "high": col("high"),
            "low": col("low"),
            "close": col("close"),
            "volume": col("volume"),
            "quote_volume": col("quote_volume"),
            "taker_buy_volume": col("taker_buy_volume"),
            "taker_buy_quote_volume": col("taker_buy_quote_volume"),
            "trades": col("trades", 0).astype(np.int64),
            "first_trade_id": np.full(n, -1, dtype=np.int64),
            "last_trade_id": np.full(n, -1, dtype=np.int64),
            "first_time": col("open_time").astype(np.int64),
            "last_time": col("close_time").astype(np.int64),
        }
    )
