"""The ``rtqis`` command: a thin layer over library functions (everything here can be done from Python).

Errors the user can fix print one line (``rtqis: error: ...``) and exit non-zero; bugs keep their
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import orjson
from pydantic import SecretStr

from rtqis import __version__
from rtqis.bench import ALL_SECTIONS, DEFAULT_SECTIONS
from rtqis.errors import ConfigError, RtqisError
from rtqis.settings import Settings, load_settings
from rtqis.times import parse_time

log = logging.getLogger("rtqis")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# --- commands -----------------------------------------------------------------------------------------


def cmd_config(s: Settings, a: argparse.Namespace) -> int:
    d = s.masked()
    if a.json:
        print(orjson.dumps(d, option=orjson.OPT_INDENT_2).decode())
    elif a.env:
        # an env file (docker compose env_file, `env $(cat FILE)`): unset and secret values commented out
        for k, v in d.items():
            shown = ",".join(map(str, v)) if isinstance(v, list) else v
            if v is None or isinstance(getattr(s, k), SecretStr):
                print(f"# RTQIS_{k.upper()}=")
            else:
                print(f"RTQIS_{k.upper()}={str(shown).lower() if isinstance(v, bool) else shown}")
    else:
        for k, v in d.items():
            shown = ",".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
            print(f"RTQIS_{k.upper():<26} {shown}")
    return 0


def cmd_broker(s: Settings, a: argparse.Namespace) -> int:
    from rtqis.kafka.admin import create_topics
    from rtqis.kafka.embedded import local_broker

    stop = threading.Event()
    _stop_on_signals(stop)
    if a.nodes is not None:
        s = s.model_copy(update={"kafka_nodes": a.nodes})
    with local_broker(s, a.port) as b:
        print(f"{b.label} ready on {b.bootstrap}, pid {b.pid} ({b.details}); Ctrl-C stops it", flush=True)
        if a.create_topics:
            created = create_topics(s.model_copy(update={"bootstrap_servers": b.bootstrap}))
            print(f"created {len(created)} topics", flush=True)
        while not stop.wait(0.5):
            if not b.alive():
                raise RtqisError("the broker process exited unexpectedly; see " + str(b.log_path))
    print("broker stopped")
    return 0


def cmd_topics(s: Settings, a: argparse.Namespace) -> int:
    from rtqis.kafka.admin import create_topics, list_topics

    if a.topics_cmd == "create":
        created = create_topics(s)
        print(f"created {len(created)} topics" + (": " + ", ".join(created) if created else " (all existed)"))
    elif a.topics_cmd == "list":
        for t in list_topics(s):
            print(f"{t.name:<40} partitions={t.partitions}")
    elif a.topics_cmd == "offsets":
        return _offsets(s, a)
    return 0


def _offsets(s: Settings, a: argparse.Namespace) -> int:
    from rtqis.kafka.admin import list_topics
    from rtqis.kafka.offsets import topic_offsets
    from rtqis.kafka.tail import resolve_topic

    names = [resolve_topic(s, t)[0] for t in a.topics] or [t.name for t in list_topics(s)]
    at = parse_time(a.time) if a.time else None
    rows = topic_offsets(s, names, group=a.group, at_time_ms=at)
    for r in rows:
        d = r.as_dict(group=a.group is not None, at_time=at is not None)
        if a.json:
            print(orjson.dumps(d).decode())
        else:
            print(" ".join(f"{k}={v}" for k, v in d.items()))
    return 0


def cmd_produce(s: Settings, a: argparse.Namespace) -> int:
    from rtqis.producers.feed import install_stop_signals, run_files, run_synthetic

    stop = threading.Event()
    install_stop_signals(stop)
    if a.source == "binance":
        from rtqis.producers.binance_live import run_binance

        if a.no_depth:
            s = s.model_copy(update={"binance_depth": False})
        st = run_binance(s, handle_signals=True)
        print(
            f"sent {st.trades} trades and {st.books} book tickers in {st.frames} frames, "
            f"{st.depth_published} depth snapshots; {st.dead_lettered} bad frames sent to deadletter"
        )
        return 0
    if a.source == "file":
        speed = None if a.speed == "max" else _positive_float(a.speed, "--speed")
        progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
        stats = run_files(
            s,
            a.paths,
            speed=speed,
            limit=a.limit,
            start_ms=parse_time(a.start) if a.start else None,
            end_ms=parse_time(a.end) if a.end else None,
            symbols={x.strip().upper() for x in a.symbols.split(",")} if a.symbols else None,
            stop=stop,
            on_progress=progress,
        )
        if progress:
            progress.done()
        print(
            f"sent {stats.trades} trades and {stats.books} book tickers in {stats.frames} frames; "
            f"{stats.dead_lettered} bad rows sent to deadletter"
        )
        return 0
    max_rate = a.rate == "max"
    rate = None if (a.rate is None or max_rate) else _positive_float(a.rate, "--rate")
    stats = run_synthetic(s, rate=rate, max_rate=max_rate, limit=a.limit, duration_s=a.duration, stop=stop)
    print(f"sent {stats.trades} trades and {stats.books} book tickers in {stats.frames} frames")
    return 0


class _Progress:
    """A one-line progress display on a terminal: percent of bytes read, ticks sent, rate."""

    def __init__(self, out: Any) -> None:
        import time

        self.out, self.t0, self.last, self._time = out, time.monotonic(), 0.0, time.monotonic

    def __call__(self, stats: Any, done: int, total: int) -> None:
        now = self._time()
        if now - self.last < 0.2:
            return
        self.last = now
        ticks = stats.trades + stats.books
        pct = 100.0 * done / total if total else 0.0
        rate = ticks / max(now - self.t0, 1e-9)
        self.out.write(f"\r{pct:5.1f}%  {stats.trades:,} trades  {stats.books:,} book tickers  {rate:,.0f} ticks/s ")
        self.out.flush()

    def done(self) -> None:
        self.out.write("\n")


def cmd_worker(s: Settings, a: argparse.Namespace) -> int:
    from rtqis.agents.app import create_app, make_worker

    app = create_app(s)
    level = {"warning": "warn"}.get(s.log_level, s.log_level)
    # SIGINT/SIGTERM: stop at a frame boundary, flush, commit, exit (see make_worker)
    make_worker(app, level).execute_from_commandline()
    return 0


def cmd_up(s: Settings, a: argparse.Namespace) -> int:
    from rtqis.supervisor import Supervisor

    if a.source == "file" and not a.paths:
        raise RtqisError("--source file needs at least one PATH")
    if a.source != "file" and a.paths:
        raise RtqisError("PATH arguments go with --source file")
    return Supervisor(s, source=a.source, paths=a.paths, speed=a.speed).run()


def cmd_bench(s: Settings, a: argparse.Namespace) -> int:
    from pathlib import Path

    from rtqis.bench.runner import run_bench

    sections = tuple(a.only.split(",")) if a.only else DEFAULT_SECTIONS
    unknown = set(sections) - set(ALL_SECTIONS)
    if unknown:
        raise RtqisError(f"unknown bench section(s) {sorted(unknown)}: use {', '.join(ALL_SECTIONS)}")
    json_path = Path(a.json) if a.json else Path("bench/results") / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    _interrupt_on_signals()  # the sections' `finally` blocks stop their broker, workers and feed
    run_bench(
        s,
        ticks=a.ticks,
        runs=a.runs,
        sections=sections,
        latency_seconds=a.latency_seconds,
        latency_runs=a.latency_runs,
        latency_rate=a.latency_rate,
        soak_seconds=a.soak_seconds,
        signals_seeds=a.signals_seeds,
        signals_hours=a.signals_hours,
        day_hours=a.day_hours,
        day_days=a.day_days,
        day_rate=a.day_rate,
        day_dashboard=a.day_dashboard,
        workerday_hours=a.workerday_hours,
        workerday_rate=a.workerday_rate,
        json_path=json_path,
    )
    return 0


def cmd_sink(s: Settings, a: argparse.Namespace) -> int:
    from rtqis.sinks.sink import run_sink, sink_paths

    stop = threading.Event()
    _stop_on_signals(stop, SINK_STOP_LIMIT_S, "rtqis sink")
    if a.backfill_hours:
        from rtqis.sinks.history import backfill

        backfill(s, lookback_h=a.backfill_hours)
    print(f"sink writing {sink_paths(s)[0]} (readers served on {sink_paths(s)[1]})", flush=True)
    st = run_sink(s, stop)
    print(f"sink stopped: {st.rows} rows in {st.batches} batches")
    return 0


def cmd_backfill(s: Settings, a: argparse.Namespace) -> int:
    from rtqis.sinks.history import backfill

    n = backfill(s, lookback_h=a.hours)
    print(f"back-filled {n} 1m candles (5m derived) over the last {a.hours:g} h")
    return 0


def cmd_candles(s: Settings, a: argparse.Namespace) -> int:
    """``candles import`` / ``candles export``: the symbol and interval are checked against the configured
    sets first (:mod:`rtqis.sinks.history`), so an unknown series is one error line and a non-zero exit,
    never an empty file."""
    from rtqis.sinks.candle_files import export_candles
    from rtqis.sinks.history import check_export, check_symbol, import_candles, open_history

    symbol = a.symbol.strip().upper()
    if a.candles_cmd == "import":
        r = import_candles(s, a.file, symbol=symbol, interval=a.interval)
        print(r.summary(symbol, a.interval))
        return 0
    start = parse_time(a.start) if a.start else None
    end = parse_time(a.end) if a.end else None
    if a.format == "parquet" and not a.output:
        raise RtqisError("--format parquet needs -o FILE")
    check_symbol(s, symbol)  # before the database is opened: its absence is not the first thing to say
    with open_history(s) as store:
        check_export(s, store, symbol, a.interval)
        if a.output:
            n = export_candles(store, symbol, a.interval, start, end, fmt=a.format, out=Path(a.output))
            print(f"exported {n} candles to {a.output}", file=sys.stderr)
        else:
            export_candles(store, symbol, a.interval, start, end, fmt="csv", out=sys.stdout)
    return 0


def cmd_ui(s: Settings, a: argparse.Namespace) -> int:
    from rtqis.ui.server import check_port, dashboard_url, serve

    host, port = a.host or s.ui_host, a.port or s.ui_port
    check_port(host, port)
    print(f"dashboard at {dashboard_url(host, port)} (Ctrl-C stops it)", flush=True)
    return serve(s, host=host, port=port, origins=a.allow_websocket_origin or ())


def cmd_tail(s: Settings, a: argparse.Namespace) -> int:
    from rtqis.kafka.tail import tail

    stop = threading.Event()
    _stop_on_signals(stop)
    tail(
        s,
        a.topic,
        sys.stdout,
        sys.stderr,
        from_beginning=a.from_beginning,
        from_time_ms=parse_time(a.from_time) if a.from_time else None,
        limit=a.limit,
        as_json=a.json,
        until_end=a.until_end,
        stop=stop,
    )
    return 0


#: ``rtqis sink`` exits at most this long after SIGTERM/SIGINT, finished or not (s)
SINK_STOP_LIMIT_S = 30.0


def _stop_on_signals(stop: threading.Event, limit_s: float | None = None, what: str = "rtqis") -> None:
    """SIGINT/SIGTERM set ``stop``. With ``limit_s``, the stop is bounded: a command still running
    ``limit_s`` seconds after the signal (its last flush or group leave waiting on a broker that is gone)
    exits there with one line, and a second signal exits at once. Only for commands that are safe to
    end at any moment (the sink: rows and offsets commit together in DuckDB; what is not stored is read
    again on restart), so that a parent that died never leaves them behind."""
    import os
    import signal

    from rtqis.process import set_from_signal_handler

    def _exit(why: str) -> None:
        print(f"{what}: {why}: exiting now; what was stored is kept, the rest is read again", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)

    def _h(_n: int, _f: Any) -> None:
        if limit_s is not None and stop.is_set():
            _exit("a second signal while stopping")
        if limit_s is not None and not stop.is_set():
            timer = threading.Timer(limit_s, _exit, args=(f"still stopping {limit_s:.0f} s after the signal",))
            timer.daemon = True
            timer.start()
        set_from_signal_handler(stop)

    signal.signal(signal.SIGINT, _h)
    signal.signal(signal.SIGTERM, _h)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt (a BaseException: no ``except Exception`` swallows
    it) so that ``finally`` blocks stop the children; ``rtqis`` then exits 143 (128 + SIGTERM)."""


def _interrupt_on_signals() -> None:
    """For a command that runs straight-line code with children stopped in ``finally`` blocks (``rtqis
    bench``): SIGTERM unwinds it as Ctrl-C does, instead of killing the interpreter on the spot (which
    ran no ``finally`` and left the children running); SIGINT raises KeyboardInterrupt even when the
    command was started with SIGINT ignored (a background job of a script)."""
    import signal

    def _h(_n: int, _f: Any) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, _h)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _positive_float(text: str, flag: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise RtqisError(f"{flag} takes a number or 'max', not {text!r}") from None
    if not v > 0:
        raise RtqisError(f"{flag} must be > 0")
    return v


def _positive_number(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number > 0")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


# --- parser -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rtqis",
        description="RT-QIS: real-time quantitative intelligence for crypto markets. "
        "Configuration comes from RTQIS_* environment variables or rtqis.toml (see `rtqis config`).",
    )
    p.add_argument("--version", action="version", version=f"rtqis {__version__}")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default: RTQIS_LOG_LEVEL (info)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    c = sub.add_parser("up", help="run the whole system: broker, topics, producer, worker (Ctrl-C stops all)")
    c.add_argument(
        "--source", default="synthetic", choices=["synthetic", "file"], help="tick source (default: synthetic)"
    )
    c.add_argument("paths", nargs="*", metavar="PATH", help="with --source file: Binance data files to replay")
    c.add_argument("--speed", default="1", help="with --source file: 1 = real time (default), 60, or max")
    c.set_defaults(func=cmd_up)

    c = sub.add_parser("config", help="print the effective configuration (secrets masked)")
    fmt = c.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="as JSON")
    fmt.add_argument(
        "--env", action="store_true", help="as an env file (RTQIS_NAME=value lines, e.g. for deploy/rtqis.env)"
    )
    c.set_defaults(func=cmd_config)

    c = sub.add_parser(
        "broker",
        help="run the local broker in the foreground (RTQIS_BROKER: auto, the default: Apache Kafka where java is, "
        "else Tansu; tansu, embedded; kafka, Apache Kafka)",
    )
    c.add_argument("--port", type=_positive_int, help="port (default: RTQIS_BROKER_PORT, 9092)")
    c.add_argument("--create-topics", action="store_true", help="create every registry topic once it is up")
    c.add_argument(
        "--nodes",
        type=_positive_int,
        help="kafka only: a loopback cluster of N nodes (3: replication factor 3, min ISR 2; "
        "default: RTQIS_KAFKA_NODES, 1)",
    )
    c.set_defaults(func=cmd_broker)

    c = sub.add_parser("topics", help="create, list and inspect topics")
    tsub = c.add_subparsers(dest="topics_cmd", metavar="ACTION", parser_class=_Parser)
    tsub.required = True
    tsub.add_parser("create", help="create every topic of the registry that is missing")
    tsub.add_parser("list", help="list topics with their partition counts")
    o = tsub.add_parser("offsets", help="earliest and true end offset per partition (lag with --group)")
    o.add_argument("topics", nargs="*", metavar="TOPIC", help="topics (default: all)")
    o.add_argument("--group", help="consumer group: adds committed offset and lag")
    o.add_argument("--time", metavar="T", help="adds at_time: first offset with timestamp >= T (ISO-8601 or ms)")
    o.add_argument("--json", action="store_true", help="one JSON object per line")
    c.set_defaults(func=cmd_topics)

    c = sub.add_parser("produce", help="publish ticks to the tick topics")
    psub = c.add_subparsers(dest="source", metavar="SOURCE", parser_class=_Parser)
    psub.required = True
    ps = psub.add_parser("synthetic", help="seeded synthetic market (BTC random walk, ETH cointegrated)")
    ps.add_argument("--rate", help="trades/s per symbol, or 'max' for load (default: RTQIS_SYNTHETIC_RATE, 20)")
    ps.add_argument("--limit", type=_positive_int, help="stop after this many trades")
    ps.add_argument("--duration", type=float, help="stop after this many seconds")
    pb = psub.add_parser(
        "binance", help="live Binance trades, best bid/ask and order book (RTQIS_BINANCE_WS_URL, RTQIS_SYMBOLS)"
    )
    pb.add_argument("--no-depth", action="store_true", help="skip the order book (ticks.depth)")
    pf = psub.add_parser(
        "file",
        help="Binance data files: archive trades/aggTrades/bookTicker CSV or zip, Parquet, raw WebSocket captures",
    )
    pf.add_argument("paths", nargs="+", metavar="PATH", help="files, merged by event time")
    pf.add_argument("--speed", default="max", help="1 = real time, 60 = 60x, max = as fast as possible (default)")
    pf.add_argument("--limit", type=_positive_int, help="stop after this many trades")
    pf.add_argument("--start", metavar="T", help="skip ticks before T (ISO-8601 UTC or epoch ms)")
    pf.add_argument("--end", metavar="T", help="stop at T (exclusive)")
    pf.add_argument("--symbols", help="only these symbols (comma-separated; default: all in the files)")
    c.set_defaults(func=cmd_produce)

    c = sub.add_parser("worker", help="run the Faust worker (agents and tables)")
    c.set_defaults(func=cmd_worker)

    c = sub.add_parser("sink", help="store candles, analytics and the tick archive in DuckDB (effectively once)")
    c.add_argument("--backfill-hours", type=float, default=0.0, help="first fill 1m candle holes from Binance REST")
    c.set_defaults(func=cmd_sink)

    c = sub.add_parser("backfill", help="fill holes in the 1m candles from Binance REST klines (5m derived)")
    c.add_argument("--hours", type=float, default=24.0, help="look-back (default 24)")
    c.set_defaults(func=cmd_backfill)

    c = sub.add_parser("candles", help="import or export candles")
    csub = c.add_subparsers(dest="candles_cmd", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    ci = csub.add_parser("import", help="load an OHLC CSV (Binance klines or generic header) in one transaction")
    ci.add_argument("file", metavar="FILE")
    ci.add_argument("--symbol", required=True)
    ci.add_argument("--interval", default="1m")
    ce = csub.add_parser("export", help="write candles as CSV or Parquet, sorted by open_time")
    ce.add_argument("--symbol", required=True)
    ce.add_argument("--interval", default="1m")
    ce.add_argument("--start", metavar="T", help="ISO-8601 UTC or epoch ms (inclusive)")
    ce.add_argument("--end", metavar="T", help="ISO-8601 UTC or epoch ms (exclusive)")
    ce.add_argument("--format", choices=["csv", "parquet"], default="csv")
    ce.add_argument("-o", "--output", metavar="FILE", help="default: CSV to standard output")
    c.set_defaults(func=cmd_candles)

    c = sub.add_parser(
        "bench",
        help="measure the pipeline: end-to-end throughput, latency, raw-consumer baseline, kernels, scaling",
        description="Sections: codec (JSON vs Avro), kernels (per-update cost of each analytic), raw "
        "(confluent-kafka consume rate: the ceiling), e2e (ticks through producer -> worker -> sink), "
        "scaling (1 vs 100 pairs, 1 vs 4 partitions, 1 vs 2 workers, on --ticks/5; latency at 100 pairs), "
        "latency (steady live-like feed, --latency-runs runs on fresh embedded brokers); not in the default set: "
        "shapes (worker by tick shape and recovery fix), soak (worker, sink and broker RSS under the "
        "steady feed for --soak-seconds; e.g. --only soak) and signals (what the pair signals are worth: the "
        "issue #20 evaluation on the seeded synthetic market whose true spread is known, figure against "
        "target, no broker, a few minutes; --only signals) and replay (`rtqis replay` of --ticks synthetic trades "
        "written as Binance trade files, with the raw consumer ceiling in the same run; --only replay) and day (a "
        "simulated day at --day-rate ticks/s of event time through the sink's storage path: RSS, disk, cost of "
        "making new data visible, history query time, dashboard server RSS and a new browser session's time to "
        "first chart at simulated hours 1, 6, 12, 24; --day-days 7 fills a week first; no broker; --only day) "
        "and workerday (a real `rtqis worker` on its own Apache Kafka fed --workerday-hours of trades at "
        "--workerday-rate trades/s of event time, as fast as it goes: its RSS, CPU seconds and the broker's disk at "
        "simulated hours 1, 6, 12, 24; --only workerday) "
        "and scale (1 vs 2 workers on 4 partitions, 20 symbols / 10 pairs and 100 "
        "pairs: ticks/s and CPU seconds per process; --only scale).",
    )
    c.add_argument("--ticks", type=_positive_int, default=1_000_000, help="ticks per throughput run (default 1000000)")
    c.add_argument("--runs", type=_positive_int, default=3, help="runs per figure: median, min, max (default 3)")
    c.add_argument("--only", help=f"comma-separated sections (default: {','.join(DEFAULT_SECTIONS)})")
    c.add_argument("--latency-seconds", type=_positive_number, default=60.0, help="steady-feed duration (default 60)")
    c.add_argument(
        "--latency-rate", type=_positive_number, default=2000.0, help="trades/s in the steady feed (default 2000)"
    )
    c.add_argument(
        "--latency-runs",
        type=_positive_int,
        default=2,
        help="steady runs, each on a fresh embedded broker; per path the median (default 2)",
    )
    c.add_argument(
        "--soak-seconds", type=_positive_number, default=600.0, help="soak duration at --latency-rate (default 600)"
    )
    c.add_argument(
        "--signals-seeds", type=_positive_int, default=8, help="signals: synthetic markets (seeds 1..N; default 8)"
    )
    c.add_argument(
        "--signals-hours",
        type=_positive_number,
        default=4.0,
        help="signals: hours per seed, the first for calibration (default 4)",
    )
    c.add_argument("--day-hours", type=_positive_number, default=24.0, help="day: simulated hours (default 24)")
    c.add_argument(
        "--day-days",
        type=_positive_int,
        default=1,
        help="day: days on disk, the earlier ones written directly (default 1)",
    )
    c.add_argument("--day-rate", type=_positive_number, default=250.0, help="day: ticks/s of event time (default 250)")
    c.add_argument(
        "--day-dashboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="day: also run `rtqis ui` and headless Chromium for the dashboard's RSS and first chart (default on)",
    )
    c.add_argument(
        "--workerday-hours", type=_positive_number, default=24.0, help="workerday: simulated hours (default 24)"
    )
    c.add_argument(
        "--workerday-rate",
        type=_positive_number,
        default=150.0,
        help="workerday: trades/s of event time over all symbols (default 150)",
    )
    c.add_argument("--json", metavar="FILE", help="default: bench/results/bench-<UTC time>.json")
    c.set_defaults(func=cmd_bench)

    c = sub.add_parser("tail", help="print a topic's messages as they arrive (frames: one tick per line)")
    c.add_argument("topic", metavar="TOPIC", help="e.g. ticks.trade, analytics.ticker, deadletter")
    c.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    c.add_argument("--from-time", metavar="T", help="start at the first record with timestamp >= T")
    c.add_argument("--limit", type=_positive_int, help="stop after N lines")
    c.add_argument("--until-end", action="store_true", help="stop at the end offsets seen at start")
    c.add_argument("--json", action="store_true", help="one JSON object per line")
    c.set_defaults(func=cmd_tail)

    c = sub.add_parser("ui", help="serve the live dashboard (panel serve; default http://127.0.0.1:5006/dashboard)")
    c.add_argument("--host", help="bind address (default: RTQIS_UI_HOST, 127.0.0.1)")
    c.add_argument("--port", type=_positive_int, help="port (default: RTQIS_UI_PORT, 5006)")
    c.add_argument(
        "--allow-websocket-origin",
        action="append",
        metavar="HOST[:PORT]",
        help="origin browsers may connect from (repeatable; default: the bind address and localhost)",
    )
    c.set_defaults(func=cmd_ui)

    from rtqis.backtest_report import add_parser as add_backtest_parser  # rtqis backtest (#20)

    add_backtest_parser(sub)
    from rtqis.replay import add_parser as add_replay_parser  # rtqis replay (#23)

    add_replay_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides: dict[str, Any] = {}
        if args.log_level:
            overrides["log_level"] = args.log_level
        settings = load_settings(**overrides)
        if args.cmd != "worker":  # Faust configures logging for the worker
            _setup_logging(settings.log_level)
        return int(args.func(settings, args) or 0)
    except ConfigError as e:
        print(f"rtqis: error: {e}", file=sys.stderr)
        return e.exit_code
    except RtqisError as e:
        print(f"rtqis: error: {e}", file=sys.stderr)
        return e.exit_code
    except _Terminated:
        return 143
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
