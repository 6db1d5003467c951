"""Opt-in section ``day``: a simulated day (or week) of live-like data through the sink's storage path,
measured at simulated hours 1, 6, 12 and 24 (#22).

What runs: a child process does what ``rtqis sink`` does with what it consumes - the worker's
plausibility bounds and the high-water-mark de-duplication (:func:`~rtqis.sinks.marks.screen_frame`),
then :meth:`~rtqis.sinks.store.Store.write_batch` (ticks, closed 1m candles, one pair signal per second
and the offsets in one transaction) - while serving readers on its socket
(:class:`~rtqis.sinks.serve.HistoryServer`), as the sink does. Its input is synthetic, ``rate`` ticks per
second of event time (60 % trades, 40 % book tickers, over two symbols), with event time running as fast
as the writes go. The broker and the Faust worker are left out on purpose: 21.6 M ticks through the
whole pipeline on a shared 2-core machine is hours, not a run anyone repeats, and neither of them holds
history (the broker's growth is the Apache Kafka issue's; the worker's state is bounded windows).

At each simulated hour the writer pauses and the parent measures, as a reader:

* ``sink_rss_mb``: the writer's RSS; ``duckdb_mb``: what DuckDB holds of it (``duckdb_memory()``: its
  page cache of the tables, bounded by ``RTQIS_SINK_MEMORY_MB``, the indexes, uncheckpointed rows);
  ``cpu_s``: the writer's CPU seconds so far (its throughput on a loaded host, where wall time measures
  the other processes too); ``disk_bytes``: the database file and its WAL;
* ``visible_ms``: from asking the writer for one more batch to seeing it through the socket (what a
  dashboard waits for new data, write included); ``copy_before_s``: what the whole-file snapshot copy
  that readers needed before #22 (:func:`~rtqis.sinks.snapshot.publish_snapshot`) costs at this size,
  paid every 5 s under the write lock;
* ``history_24h_ms``: the 24 h history query (1,440 1m candles of each symbol and 86,400 pair signals,
  median of 5) and ``dashboard_load_ms``: the dashboard's own history load
  (:func:`rtqis.ui.data.load_history`: 600 bars and 1 h of signals) through :func:`open_history`;
* ``dashboard_rss_mb`` and ``first_chart_ms`` (``dashboard=True``, the default): the RSS of a real
  ``rtqis ui`` server reading the writer's socket, and the time a new headless Chromium session takes to
  show the candle chart with its history (:mod:`rtqis.bench.dashboard_probe`; None without Chromium or
  Playwright). No broker runs: the dashboard serves stored history without one.

Simulated time starts ``min(hours, 1)`` hours before the bench does, so it runs into the future after the
first hour (the plausibility screen is given the simulated clock): a new dashboard page asks for the
window ending at wall-clock now, and that window must hold data. It then holds the first simulated hour
and the bench's wall time so far (about 60-90 of its 600 1m bars, a full hour of signals), read from a
store of each mark's size; the 600-bar read at the simulated end is ``dashboard_load_ms``. The server
and the browser start while the writer writes its first hour (a few CPU seconds in hour 1's wall time).

``days > 1`` writes ``days`` minus the simulated hours straight into the archive with DuckDB (ticks,
candles and signals at the same rates) before the simulation starts, so reads are measured with a week
stored (``days=7, hours=1``: 6 days 23 h written, 1 h simulated). ``legacy_keys`` puts the v3
primary keys back on the tick tables: the "before" figure of the memory the keys cost. The JSON goes
under ``bench/results/`` with the other sections'.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import statistics
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from rtqis.bench.dashboard_probe import DashboardProbe
from rtqis.bench.harness import Say
from rtqis.process import rss_bytes
from rtqis.schemas.frames import BOOK_FRAME, TRADE_FRAME, Frame
from rtqis.settings import Settings
from rtqis.sinks.history import open_history
from rtqis.sinks.marks import screen_frame
from rtqis.sinks.readers import HistoryClient
from rtqis.sinks.serve import HistoryServer
from rtqis.sinks.sink import sink_paths
from rtqis.sinks.snapshot import publish_snapshot
from rtqis.sinks.store import Store

__all__ = ["MARK_HOURS", "bench_day"]

log = logging.getLogger(__name__)

MARK_HOURS: tuple[float, ...] = (1.0, 6.0, 12.0, 24.0)
"""Simulated hours at which the figures are taken (those within the run's length)."""

SYMBOLS = ("BTCUSDT", "ETHUSDT")
PAIR = "BTCUSDT/ETHUSDT"
_BATCH_MS = 40_000  # event time per write: 10,000 ticks at 250/s, the sink's flush_rows
_MIN = 60_000
_HOUR = 3_600_000


def _day_frames(rng: np.random.Generator, w0: int, w1: int, rate: float, ids: dict[str, list[int]]) -> list[Frame]:
    """Synthetic trade and book-ticker frames of every symbol for event times ``[w0, w1)``."""
    out: list[Frame] = []
    per = rate * (w1 - w0) / 1000 / len(SYMBOLS)
    for k, sym in enumerate(SYMBOLS):
        base = 60_000.0 if k == 0 else 3_000.0
        for kind, share in ((TRADE_FRAME, 0.6), (BOOK_FRAME, 0.4)):
            n = int(per * share)
            t = np.sort(rng.integers(w0, w1, n)).astype(np.int64)
            p = base * (1 + 0.001 * np.sin(t / 3.6e6)) + rng.normal(0, base * 1e-5, n)
            slot = 0 if kind is TRADE_FRAME else 1
            i = np.arange(ids[sym][slot], ids[sym][slot] + n, dtype=np.int64)
            ids[sym][slot] += n
            if kind is TRADE_FRAME:
                cols: dict[str, Any] = {"trade_id": i, "price": p, "qty": rng.uniform(0.001, 1, n), "trade_time": t,
                                        "event_time": t, "recv_time": t + 5, "buyer_maker": (i % 2) == 0}  # fmt: skip
            else:
                cols = {"update_id": i, "bid_price": p - 0.01, "bid_qty": np.ones(n), "ask_price": p + 0.01,
                        "ask_qty": np.ones(n), "event_time": t, "recv_time": t + 5}  # fmt: skip
            out.append(Frame.build(kind, sym, cols))
    return out


def _candles(m0: int, m1: int) -> pl.DataFrame:
    """Closed 1m candles of every symbol for the minutes opening in ``[m0, m1)``."""
    opens = np.arange(m0, m1, _MIN, dtype=np.int64)
    n = len(opens)
    frames = []
    for k, sym in enumerate(SYMBOLS):
        px = (60_000.0 if k == 0 else 3_000.0) * (1 + 0.001 * np.sin(opens / 3.6e6))
        frames.append(pl.DataFrame({
            "symbol": [sym] * n, "interval": ["1m"] * n, "open_time": opens, "close_time": opens + _MIN - 1,
            "open": px, "high": px * 1.0005, "low": px * 0.9995, "close": px, "volume": np.full(n, 5.0),
            "quote_volume": px * 5, "trades": np.full(n, 9000, dtype=np.int64), "taker_buy_volume": np.full(n, 2.5),
            "taker_buy_quote_volume": px * 2.5, "vwap": px, "closed": [True] * n, "source": ["stream"] * n,
        }))  # fmt: skip
    return pl.concat(frames)


def _signals(s0: int, s1: int) -> list[dict[str, Any]]:
    """One pair signal per second of ``[s0, s1)``."""
    return [
        {
            "time": int(t),
            "pair": PAIR,
            "x": 60_000.0,
            "y": 3_000.0,
            "zscore": float(np.sin(t / 6e5)),
            "spread": 0.1,
            "n_obs": 3600,
            "flags": [],
        }  # fmt: skip
        for t in range(s0, s1, 1000)
    ]


def _bulk_archive(path: Path, start: int, end: int, rate: float) -> None:
    """Ticks, 1m candles and 1 s signals for ``[start, end)`` written straight into the archive (the
    days of a week before the simulated one), generated by DuckDB in one statement per table."""
    sym = "CASE WHEN i % 2 = 0 THEN 'BTCUSDT' ELSE 'ETHUSDT' END"
    step = 1000.0 / rate  # ms between two ticks
    with duckdb.connect(str(path)) as con:
        n = int((end - start) / step)
        nt, nb = int(n * 0.6), n - int(n * 0.6)
        con.execute(
            f"INSERT INTO trades SELECT {sym}, i // 2 - ?, 60000 + (i % 97), 0.5,"  # noqa: S608  # constants
            f" ? + CAST(i * ? AS BIGINT), ? + CAST(i * ? AS BIGINT), ? + CAST(i * ? AS BIGINT) + 5, i % 3 = 0"
            " FROM range(?) t(i)",
            [nt, start, (end - start) / nt, start, (end - start) / nt, start, (end - start) / nt, nt],
        )
        con.execute(
            f"INSERT INTO book_tickers SELECT {sym}, i // 2 - ?, 59999, 1, 60001, 1,"  # noqa: S608  # constants
            " ? + CAST(i * ? AS BIGINT), ? + CAST(i * ? AS BIGINT) + 5 FROM range(?) t(i)",
            [nb, start, (end - start) / nb, start, (end - start) / nb, nb],
        )
        con.execute(
            "INSERT INTO candles SELECT s.sym, '1m', o, o + 59999, 60000, 60030, 59970, 60000, 5, 300000, 9000,"
            " 2.5, 150000, 60000, NULL, NULL, true, 'stream', NULL FROM range(?, ?, 60000) r(o),"
            " (VALUES ('BTCUSDT'), ('ETHUSDT')) s(sym)",
            [start, end],
        )
        con.execute(
            'INSERT INTO signals ("time", pair, x, y, zscore, spread, n_obs, flags)'
            " SELECT t, ?, 60000, 3000, sin(t / 6e5), 0.1, 3600, []::VARCHAR[] FROM range(?, ?, 1000) r(t)",
            [PAIR, start, end],
        )


def _writer(settings: Settings, start: int, hours: float, rate: float, legacy_keys: bool, conn: Connection) -> None:
    """The child: write ``hours`` of simulated data as the sink does, pausing at each mark for the parent."""
    db, sock = sink_paths(settings)
    if legacy_keys:  # v3's keys back, to measure what they cost
        with Store(db):
            pass
        with duckdb.connect(str(db)) as con:
            con.execute("ALTER TABLE trades ADD PRIMARY KEY (symbol, trade_id)")
            con.execute("ALTER TABLE book_tickers ADD PRIMARY KEY (symbol, update_id)")
    rng = np.random.default_rng(7)
    with Store(db, memory_mb=settings.sink_memory_mb) as store:
        marks = store.tick_marks()
        ids = {s: [marks.trade_id.get(s, 0) + 1, marks.update_id.get(s, 0) + 1] for s in SYMBOLS}
        server = HistoryServer(store, sock)
        try:
            end = start + int(hours * _HOUR)
            todo = [start + int(h * _HOUR) for h in MARK_HOURS if h <= hours] or [end]
            w, off, wall, cpu, refused = start, 0, time.perf_counter(), time.process_time(), 0
            while w < end:
                w1 = min(w + _BATCH_MS, end)
                kept: list[Frame] = []
                for f in _day_frames(rng, w, w1, rate, ids):
                    got, bad, _ = screen_frame(marks, f, now_ms=end + _HOUR)
                    refused += len(bad)
                    if got is not None:
                        kept.append(got)
                m0, m1 = -(-w // _MIN) * _MIN, -(-w1 // _MIN) * _MIN
                off += 1
                store.write_batch(trades=[f for f in kept if f.type is TRADE_FRAME],
                                  books=[f for f in kept if f.type is BOOK_FRAME],
                                  candles=_candles(m0, m1) if m1 > m0 else None,
                                  signals=_signals(-(-w // 1000) * 1000, w1), offsets={("day", 0): off})  # fmt: skip
                w = w1
                if todo and w >= todo[0]:
                    todo.pop(0)
                    conn.send({
                        "sim_ms": w - start, "wall_s": time.perf_counter() - wall, "refused": refused,
                        "cpu_s": time.process_time() - cpu, "duckdb_mb": store.memory_bytes() / 1e6,
                    })  # fmt: skip
                    while (cmd := conn.recv()) != "go":
                        if cmd == "probe":
                            off += 1
                            store.write_batch(offsets={("day", 0): off})
                            conn.send(off)
                        elif cmd == "copy":
                            t0 = time.perf_counter()
                            snap = publish_snapshot(store, db.with_name(db.stem + "-copy.duckdb"))
                            conn.send(time.perf_counter() - t0)
                            snap.unlink()
                    marks = store.tick_marks()
        finally:
            server.close()
    conn.send("done")


def _median_ms(fn: Any, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def _measure(settings: Settings, pid: int, conn: Connection, now: int) -> dict[str, Any]:
    """The figures of one mark, taken while the writer waits."""
    from rtqis.ui.data import load_history  # the dashboard's own read

    db, sock = sink_paths(settings)
    res: dict[str, Any] = {"sink_rss_mb": round(rss_bytes(pid) / 1e6, 1), "load_avg_1m": os.getloadavg()[0]}
    res["disk_bytes"] = sum(p.stat().st_size for p in (db, db.with_name(db.name + ".wal")) if p.exists())
    with HistoryClient(sock) as c:
        before = c.load_offsets().get(("day", 0), 0)
        t0 = time.perf_counter()
        conn.send("probe")
        want = conn.recv()
        while c.load_offsets().get(("day", 0), 0) < want:
            pass
        res["visible_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        assert want > before

        def day() -> None:
            for s in SYMBOLS:
                assert c.candles(s, "1m", now - 86_400_000, now).height
            c.signals(PAIR, now - 86_400_000, now)

        res["history_24h_ms"] = _median_ms(day)
        res["signals_24h_rows"] = c.signals(PAIR, now - 86_400_000, now).height
    res["dashboard_load_ms"] = _median_ms(
        lambda: load_history(
            settings, symbol=SYMBOLS[0], interval="1m", pair=PAIR, end_ms=now, bars=600, signals_ms=3_600_000
        )  # fmt: skip
    )
    conn.send("copy")
    res["copy_before_s"] = round(conn.recv(), 3)
    with open_history(settings) as h:
        res["rows"] = h.counts()
    return res


def _fmt(v: float | None, unit: str) -> str:
    return "n/a" if v is None else f"{v:.0f}{unit}"


def bench_day(
    settings: Settings,
    tmp: Path,
    *,
    hours: float = 24.0,
    days: int = 1,
    rate: float = 250.0,
    legacy_keys: bool = False,
    dashboard: bool = True,
    say: Say = print,
) -> dict[str, Any]:
    """Run the day bench (see the module docstring); the figures at each simulated hour mark.
    ``dashboard=False`` leaves out the dashboard server and browser (their figures are then absent)."""
    tag = uuid.uuid4().hex[:8]
    s = settings.model_copy(update={"namespace": "day" + tag, "data_dir": tmp / f"day-{tag}"})  # no broker
    s.data_dir.mkdir(parents=True, exist_ok=True)
    db, _ = sink_paths(s)
    now_wall = int(time.time() * 1000)
    start = (now_wall - int(min(hours, 1.0) * _HOUR)) // _MIN * _MIN  # data at wall-clock now: for the dashboard
    res: dict[str, Any] = {"hours": hours, "days": days, "rate_ticks_per_s": rate, "legacy_keys": legacy_keys,
                           "dashboard": dashboard}  # fmt: skip
    if days > 1:
        with Store(db):
            pass
        t0 = time.perf_counter()
        bulk_ms = days * 86_400_000 - int(hours * _HOUR)  # the simulated hours complete the ``days``
        _bulk_archive(db, start - bulk_ms, start, rate)
        res["bulk_days_s"] = round(time.perf_counter() - t0, 1)
        say(f"day: {bulk_ms / 86_400_000:.2f} earlier days written straight into the archive in {res['bulk_days_s']} s")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_writer, args=(s, start, hours, rate, legacy_keys, child), daemon=True)
    proc.start()
    child.close()  # so that a writer that dies ends parent.recv() with EOFError instead of a hang
    marks: list[dict[str, Any]] = []
    probe = DashboardProbe(s, SYMBOLS, PAIR, s.data_dir / "ui.log") if dashboard else None
    try:
        if probe is not None:
            probe.start()  # while the writer writes its first hour
        while True:
            msg = parent.recv()
            if msg == "done":
                break
            sim_h = msg["sim_ms"] / _HOUR
            fig = {"sim_hour": round(sim_h, 2), "wall_s": round(msg["wall_s"], 1), "cpu_s": round(msg["cpu_s"], 1),
                   "refused": msg["refused"], "duckdb_mb": round(msg["duckdb_mb"], 1)}  # fmt: skip
            fig |= _measure(s, proc.pid or 0, parent, start + msg["sim_ms"])
            if probe is not None:
                fig |= probe.measure()
            marks.append(fig)
            say(f"day h{sim_h:>4.0f}: sink RSS {fig['sink_rss_mb']:.0f} MB (DuckDB {fig['duckdb_mb']:.0f}), "
                f"disk {fig['disk_bytes'] / 1e6:.0f} MB, "
                f"24 h query {fig['history_24h_ms']:.0f} ms, dashboard load {fig['dashboard_load_ms']:.0f} ms, "
                f"new data visible in {fig['visible_ms']:.1f} ms (whole-file copy before: "
                f"{fig['copy_before_s']:.2f} s), {fig['wall_s']:.0f} s wall, {fig['cpu_s']:.0f} s CPU"
                + (f", dashboard RSS {_fmt(fig['dashboard_rss_mb'], ' MB')}, first chart "
                   f"{_fmt(fig['first_chart_ms'], ' ms')}" if probe is not None else ""))  # fmt: skip
            parent.send("go")
    finally:
        if probe is not None:
            probe.close()
            res["dashboard_note"] = probe.reason
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    res["marks"] = marks
    if len(marks) > 1:
        res["rss_growth_mb"] = round(marks[-1]["sink_rss_mb"] - marks[0]["sink_rss_mb"], 1)
        span_h = marks[-1]["sim_hour"]
        res["disk_bytes_per_day"] = int(marks[-1]["disk_bytes"] / max(span_h, 1e-9) * 24) if days == 1 else None
    return res
