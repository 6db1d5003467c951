"""``rtqis replay``: recorded ticks through the unchanged worker and sink, isolated, to a provable end.

A replay publishes the ticks of Binance data files (every format ``rtqis produce file`` reads), or of
the live sink's tick archive between two times (:mod:`rtqis.replay.archive`, which documents the
archive's layout: the span is exported read-only to Parquet files that are then replayed as files), into
the topics of its own namespace (``replay.NAME.*``), runs the real ``rtqis worker`` and ``rtqis sink`` as
child processes (:class:`~rtqis.process.ChildProcess`: they die with the replay, stop cleanly) under
that namespace, and ends by itself once

1. every input tick is processed: the worker's committed offsets equal the true end offsets
   (:mod:`rtqis.kafka.offsets`) of every input partition (trades, book tickers, pair legs); the worker
   commits only after its outputs and changelogs are flushed, so its outputs are then all on the broker;
2. every output is durable: the sink's committed offsets equal the true ends of every output topic (it
   commits to Kafka only after the DuckDB transaction that stores the rows together with their
   offsets), and, once the sink has stopped, the offsets stored in the replay's DuckDB equal them too.

Isolation: the namespace has its own topics, consumer groups, Faust tables and DuckDB file
(``DATA_DIR/rtqis-NAME.duckdb``); nothing live is read or written. A replay starts from a clean slate:
a namespace that already exists on the broker is reset first (its topics, changelogs and consumer
groups deleted, its DuckDB files removed), so the same command gives the same result twice. With no
broker configured a fresh embedded one (memory only) is started on a free port for the replay and
stopped after it: the replay's outputs then live on in its DuckDB file only.

Default namespace: ``r`` + the first 10 hex digits of the SHA-256 of the inputs' file names and sizes
(in the order given) and the sorted symbols (of an archive span: of its times and the symbols), so the
same inputs map to the same name (and replace its previous replay) and different inputs never collide.
The configured (live) namespace is refused as a replay's: a replay resets its namespace first.

The digest (:func:`digest`) is a SHA-256 over the replay's outputs read back from its DuckDB in a
canonical order and encoding, so two runs compare by one string.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from rtqis.errors import RtqisError
from rtqis.settings import Settings

if TYPE_CHECKING:
    from rtqis.kafka.offsets import PartitionOffsets
    from rtqis.process import ChildProcess

# Kafka, DuckDB, polars and the sink's schema are imported where used: every `rtqis` command builds
# this subcommand's parser and should not pay for them.

__all__ = [
    "DIGEST_TABLES",
    "REPLAY_FRAME_MAX_TICKS",
    "REPLAY_SINK_FLUSH_ROWS",
    "ReplayError",
    "ReplayResult",
    "default_namespace",
    "digest",
    "add_parser",
    "FeedPlan",
    "feed_plan",
    "cmd_replay",
    "run_archive_replay",
    "run_replay",
    "summary_counts",
    "worker_inputs",
]

log = logging.getLogger(__name__)

#: a child gets this long to stop cleanly after SIGTERM (a worker flushes, the sink writes its batch) (s)
_STOP_TIMEOUT_S = 30.0
#: no progress of the worker nor of the sink for this long fails the replay (s)
_STALL_S = 300.0
_POLL_S = 0.25
#: ticks per frame at most when the replay runs as fast as possible. The live cap (500) bounds a
#: live frame's latency; a replay has none to bound, so its frames are cut by event time (see
#: :func:`feed_plan`) and this only caps their size: 5,000 trades are about 350 KB of JSON, a third
#: of Kafka's 1 MB message limit. Fewer, larger frames: a day of two symbols at 25 trades/s each goes
#: from 9,000 frames of 500 to 6,000 of 750 (30 s), and 1 M trades took 8.5 - 8.9 s after the worker's
#: start instead of 11.3 - 11.4 s, with the same digest (the outputs do not depend on the framing).
REPLAY_FRAME_MAX_TICKS = 5_000
#: rows per write of a replay's sink (unless configured higher): as fast as the feed goes, a live sink's
#: 10,000 meant a DuckDB transaction every 0.1 s, each with a fixed cost (its commit, the offsets and
#: tick marks); 50,000 stores the same ticks for about half the sink's CPU (bench: 1.5 M trades, 2.6
#: against 1.3 CPU s), which the worker, the replay's bottleneck on 2 cores, gets. What it costs: the
#: sink's peak memory grows by ~45 MB while it holds a batch
REPLAY_SINK_FLUSH_ROWS = 50_000
#: the line a Faust worker logs once it has joined its group and recovered its tables
_WORKER_READY = b"Worker]: Ready"

#: (table, SQL filter, columns left out) of the digest, in digest order. Left out: ``candles.updated_at``
#: (the sink's wall clock) and the still-open bars (``closed = false``): the worker publishes an open bar
#: at most every ``live_candle_ms`` of wall-clock time, so which version of it is stored last depends on
#: timing; every closed bar, signal, alert and ADF result depends on the input alone.
DIGEST_TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("candles", "closed", ("updated_at",)),
    ("signals", "TRUE", ()),
    ("alerts", "TRUE", ()),
    ("adf_results", "TRUE", ()),
)


class ReplayError(RtqisError):
    """A replay that cannot run or did not finish (one readable line)."""


@dataclass
class ReplayResult:
    """What a replay did; :meth:`summary` is the JSON summary (``rtqis replay --json``)."""

    namespace: str
    database: Path
    ticks: int
    seconds: float
    counts: dict[str, int]
    digest: str
    worker_restarts: int = 0
    worker_ready_s: float | None = None
    #: when (s after the start) the last tick was published and the worker had committed every input
    published_s: float | None = None
    worker_done_s: float | None = None
    inputs: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    pairs: list[str] = field(default_factory=list)
    #: an archive replay's span ``[from, to)`` (epoch ms); None for files
    span_ms: tuple[int, int] | None = None

    def summary(self) -> dict[str, Any]:
        span = {} if self.span_ms is None else {"from_ms": self.span_ms[0], "to_ms": self.span_ms[1]}
        return {
            "namespace": self.namespace,
            "database": str(self.database),
            "inputs": self.inputs,
            **span,
            "symbols": self.symbols,
            "pairs": self.pairs,
            "ticks": self.ticks,
            **self.counts,
            "seconds": round(self.seconds, 3),
            "ticks_per_s": round(self.ticks / self.seconds, 1) if self.seconds > 0 else None,
            # the worker's start-up (imports, group join, table recovery) is in ``seconds``; without it:
            "worker_ready_s": None if self.worker_ready_s is None else round(self.worker_ready_s, 3),
            "ticks_per_s_after_start": round(self.ticks / (self.seconds - self.worker_ready_s), 1)
            if self.worker_ready_s is not None and self.seconds > self.worker_ready_s
            else None,
            # where the time went: ticks all published, all processed by the worker, all stored (seconds)
            "phases_s": {
                "worker_ready": None if self.worker_ready_s is None else round(self.worker_ready_s, 3),
                "published": None if self.published_s is None else round(self.published_s, 3),
                "worker_done": None if self.worker_done_s is None else round(self.worker_done_s, 3),
                "sink_done": round(self.seconds, 3),
            },
            "worker_restarts": self.worker_restarts,
            "digest": self.digest,
        }


def default_namespace(paths: list[str], symbols: list[str]) -> str:
    """``r`` + 10 hex digits of the SHA-256 of the inputs' names and sizes (in order) and the symbols."""
    h = hashlib.sha256()
    for p in paths:
        path = Path(p)
        h.update(f"{path.name}\0{path.stat().st_size if path.is_file() else -1}\0".encode())
    h.update(",".join(sorted(symbols)).encode())
    return "r" + h.hexdigest()[:10]


# --- digest ----------------------------------------------------------------------------------------


def _encode_value(v: Any) -> bytes:
    """One value, canonically: N (null), T/F, i<decimal>, f<IEEE-754 big-endian hex> (every NaN as one
    pattern), s<utf-8 length>:<utf-8>, l<count>:<items>; each followed by ``;``."""
    if v is None:
        return b"N;"
    if isinstance(v, bool):
        return b"T;" if v else b"F;"
    if isinstance(v, int):
        return b"i%d;" % v
    if isinstance(v, float):
        return b"f" + (b"7ff8000000000000" if v != v else struct.pack(">d", v).hex().encode()) + b";"
    if isinstance(v, str):
        b = v.encode()
        return b"s%d:" % len(b) + b + b";"
    if isinstance(v, list | tuple):
        return b"l%d:" % len(v) + b"".join(_encode_value(x) for x in v) + b";"
    raise TypeError(f"no canonical encoding for {type(v).__name__}")


def digest(db_path: Path) -> str:
    """SHA-256 (hex) of the replay's outputs in ``db_path``: for each table of :data:`DIGEST_TABLES` in
    that order, its name and column names, then its rows ordered by its primary key, every value
    encoded by :func:`_encode_value` (floats as their exact IEEE-754 bits), columns in the schema's
    order. Independent of the namespace, the broker, the wall clock and the run's timing."""
    import duckdb

    from rtqis.sinks.schema import TABLES

    by_name = {t.name: t for t in TABLES}
    h = hashlib.sha256(b"rtqis-replay-digest-v1\n")
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        for name, where, skip in DIGEST_TABLES:
            table = by_name[name]
            cols = [c for c in table.columns if c not in skip]
            h.update(f"table {table.name} ({','.join(cols)})\n".encode())
            sel = ", ".join(f'"{c}"' for c in cols)
            order = ", ".join(f'"{c}"' for c in table.key)
            cur = con.execute(f'SELECT {sel} FROM "{table.name}" WHERE {where} ORDER BY {order}')  # noqa: S608  # module constants
            while rows := cur.fetchmany(10_000):
                h.update(b"".join(b"".join(_encode_value(v) for v in r) + b"\n" for r in rows))
    finally:
        con.close()
    return h.hexdigest()


def summary_counts(db_path: Path) -> dict[str, int]:
    """Rows of the replay's outputs: ``candles`` (closed bars), ``signals``, ``alerts``, ``adf``."""
    import duckdb

    con = duckdb.connect(str(db_path), read_only=True)
    try:

        def one(sql: str) -> int:
            row = con.execute(sql).fetchone()
            return int(row[0]) if row else 0

        return {
            "candles": one("SELECT count(*) FROM candles WHERE closed"),
            "signals": one("SELECT count(*) FROM signals"),
            "alerts": one("SELECT count(*) FROM alerts"),
            "adf": one("SELECT count(*) FROM adf_results"),
        }
    finally:
        con.close()


# --- the run ---------------------------------------------------------------------------------------


def _sink_group(namespace: str) -> str:
    return f"rtqis-sink-{namespace}"


def _reset_namespace(s: Settings) -> None:
    """Delete what an earlier replay of this namespace left: topics, changelogs, groups, DuckDB files."""
    from rtqis.errors import BrokerError
    from rtqis.kafka.admin import admin_client, list_topics
    from rtqis.sinks.sink import sink_paths
    from rtqis.topics import ALL_TOPICS
    from rtqis.topics.registry import app_id, changelog_topics

    mine = {t.full_name(s.namespace) for t in ALL_TOPICS} | set(changelog_topics(s.namespace))
    there = [t.name for t in list_topics(s) if t.name in mine]
    if there:
        log.info("namespace %s exists on the broker: deleting its %d topics and groups", s.namespace, len(there))
        admin = admin_client(s)  # held until every future has answered (its handle must outlive them)
        for name, fut in admin.delete_topics(there, operation_timeout=30, request_timeout=30).items():
            try:
                fut.result()
            except Exception as e:  # confluent-kafka raises KafkaException, or others from the broker
                raise BrokerError(f"cannot reset namespace {s.namespace}: topic {name} not deleted ({e})") from None
        groups = [app_id(s.namespace), _sink_group(s.namespace)]
        for g, fut in admin.delete_consumer_groups(groups, request_timeout=30).items():
            try:
                fut.result()
            except Exception as e:  # a group that never existed is fine
                log.debug("consumer group %s not deleted: %s", g, e)
        deadline = time.monotonic() + 30
        while {t.name for t in list_topics(s)} & mine and time.monotonic() < deadline:
            time.sleep(0.2)
    db, sock = sink_paths(s)
    for f in (db, db.with_name(db.name + ".wal"), sock):
        f.unlink(missing_ok=True)


def _offsets(s: Settings, names: tuple[str, ...], group: str) -> list[PartitionOffsets]:
    """True ends and ``group``'s committed offsets of the namespace's topics ``names``."""
    from rtqis.kafka.offsets import topic_offsets
    from rtqis.topics.registry import topic_name

    return topic_offsets(s, [topic_name(n, s.namespace) for n in names], group=group)


def worker_inputs(s: Settings) -> tuple[str, ...]:
    """The topics the worker consumes (registry names) in settings ``s``: its committed offsets reach
    their true ends when every tick is processed. Trades always; best bid/ask only for mid-price pairs
    (else nobody reads them but the sink); pair legs only when the pairs are not computed in the tick
    agent."""
    return (
        ("ticks.trade",)
        + (("ticks.book",) if s.pair_price == "mid" else ())
        + (() if s.pairs_colocated else ("pairs.legs",))
    )


def _lag(rows: list[PartitionOffsets]) -> int:
    return sum(r.lag or 0 for r in rows)


class _Progress:
    """The progress line on a terminal: ticks published, share processed (the worker's committed input
    offsets), event-time position of the last committed frame, processing rate since the start."""

    def __init__(self, out: TextIO | None) -> None:
        self.out, self.t0, self.last = out, time.monotonic(), 0.0

    def due(self) -> bool:
        return self.out is not None and time.monotonic() - self.last >= 1.0

    def show(self, published: int, done_frac: float, event_ms: int | None) -> None:
        if self.out is None:
            return
        now = self.last = time.monotonic()
        at = datetime.fromtimestamp(event_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if event_ms else "-"
        rate = done_frac * published / max(now - self.t0, 1e-9)  # processed (the share is by frames)
        self.out.write(
            f"\r{published:,} ticks published, {100 * done_frac:5.1f}% processed, at {at} UTC, "
            f"{rate:,.0f} ticks/s processed "
        )
        self.out.flush()

    def done(self) -> None:
        if self.out is not None:
            self.out.write("\n")
            self.out.flush()


def _event_time_at(s: Settings, rows: list[PartitionOffsets]) -> int | None:
    """The event time (record timestamp, ms) of the last trade frame the worker committed, if any."""
    from confluent_kafka import Consumer, TopicPartition

    from rtqis.kafka.clients import consumer_config

    tps = [TopicPartition(r.topic, r.partition, r.committed - 1) for r in rows if r.committed]
    if not tps:
        return None
    probe: dict[str, Any] = {"fetch.wait.max.ms": 10}
    c = Consumer(consumer_config(s, **probe))
    try:
        c.assign(tps[:1])
        msg = c.poll(1.0)
        return None if msg is None or msg.error() else int(msg.timestamp()[1])
    finally:
        c.close()


def _child(s: Settings, name: str, *args: str) -> ChildProcess:
    """``rtqis ARGS...`` in the replay's settings, its log in ``LOG_DIR/replay-NAME-<name>.log``."""
    from rtqis.process import ChildProcess, rtqis_argv, settings_env

    path = s.log_dir / f"replay-{s.namespace}-{name}.log"
    # at least info: the worker's "Ready" line times its start-up (the log is a file, not the terminal)
    level = s.log_level if s.log_level == "debug" else "info"
    return ChildProcess(name, rtqis_argv(*args), path, stop_timeout_s=_STOP_TIMEOUT_S).start(
        settings_env(s.model_copy(update={"log_level": level})), append=False
    )


def _logged_at(child: ChildProcess, marker: bytes) -> float | None:
    """When (epoch s) ``child`` logged the first line holding ``marker``, from that line's timestamp
    (``[YYYY-mm-dd HH:MM:SS,mmm]``, local time, as Faust's log format writes it); None if not (yet).

    The line's own time, not when this process happened to read it: while the feed publishes, the
    replay's polling loop can lag by seconds (it reported the worker ready when the feed ended)."""
    try:
        text = child.log_path.read_bytes() if child.log_path is not None else b""
    except OSError:
        return None
    at = text.find(marker)
    if at < 0:
        return None
    line = text[text.rfind(b"\n", 0, at) + 1 : at]
    try:
        stamp = line[line.index(b"[") + 1 : line.index(b"]")].decode()
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()  # local time
    except ValueError:  # not the expected format: when it was read is the best there is
        return time.time()


def _check_alive(kids: list[ChildProcess]) -> None:
    for k in kids:
        code = k.poll()
        if code is not None:
            raise ReplayError(f"the replay's {k.name} exited with code {code}: see {k.log_path}")


class FeedPlan(NamedTuple):
    """How the replay's file feed runs (:func:`rtqis.producers.feed.run_files` arguments)."""

    speed: float | None  # None: as fast as possible
    slice_ms: int | None  # event time per slice (None: the settings' frame_max_ms when paced)
    max_ticks: int  # ticks per frame at most


def feed_plan(s: Settings, speed: float | None) -> FeedPlan:
    """How the replay's file feed runs.

    Paced (``speed`` given): as configured, like a live feed. As fast as possible: no frame may span
    more than half of ``align_wait_s`` of event time (30 s by default; the settings' 10 s bound on
    ``frame_max_ms`` is for a live feed's latency). Why: a feed that cuts frames by count only lets a
    sparse symbol's frame cover minutes (500 trades of a symbol at 2 trades/s: 250 s); the worker then
    holds one leg's samples far ahead of the other's, beyond the aligner's wait, and the pair goes on
    with the late leg's stale price: signals flagged ``stale_leg`` that a live run (frames cut every
    20 ms) never makes. Measured: 300,000 synthetic trades at 25/s per symbol in frames of 5,000 gave
    3,636 stale signals of 5,999 and another digest. Within that bound, frames hold up to
    :data:`REPLAY_FRAME_MAX_TICKS` ticks (or the configured cap if larger), so that the time bound, not
    the live feed's latency cap, cuts them."""
    if speed is not None:
        return FeedPlan(speed, None, s.frame_max_ticks)
    span_ms = max(1, int(s.align_wait_s * 1000 / 2))
    return FeedPlan(None, span_ms, max(s.frame_max_ticks, REPLAY_FRAME_MAX_TICKS))


def replay_symbols(settings: Settings, symbols: list[str] | None) -> list[str]:
    """``symbols`` upper-cased without blanks, or the configured ones."""
    return [x.strip().upper() for x in symbols if x.strip()] if symbols else list(settings.symbols)


def replay_settings(settings: Settings, paths: list[str], namespace: str | None, symbols: list[str] | None) -> Settings:
    """The replay's settings: its namespace (default :func:`default_namespace`), its symbols (default:
    the configured ones) and the configured pairs of those symbols, its own worker web port, and the
    sink's larger batches (:data:`REPLAY_SINK_FLUSH_ROWS`)."""
    from rtqis.process import free_port

    syms = replay_symbols(settings, symbols)
    pairs = [p for p in settings.pairs if all(leg in syms for leg in p.split("/"))]
    ns = namespace or default_namespace(paths, syms)
    if ns == settings.namespace:
        raise ReplayError(f"namespace {ns!r} is the configured (live) one: a replay resets its namespace, give another")
    values = settings.model_dump() | {
        "namespace": ns,
        "symbols": syms,
        "pairs": pairs,
        "worker_web_port": free_port(),
        "sink_flush_rows": max(settings.sink_flush_rows, REPLAY_SINK_FLUSH_ROWS),
    }
    try:
        return Settings.model_validate(values)
    except ValueError as e:
        raise ReplayError(f"replay settings: {str(e).splitlines()[-1].strip()}") from None


def run_replay(
    settings: Settings,
    paths: list[str],
    *,
    namespace: str | None = None,
    symbols: list[str] | None = None,
    speed: float | None = None,
    progress: TextIO | None = None,
    kill_worker_after: int | None = None,
    on_ready: Callable[[Settings], None] | None = None,
) -> ReplayResult:
    """Replay ``paths`` (Binance data files) in ``namespace`` (default: :func:`default_namespace`) and
    return its result once every output is durable in the replay's DuckDB.

    ``symbols``: only these (default: the configured ones); the pairs are the configured pairs of those
    symbols. ``speed``: None = as fast as possible, 1 = real time. ``progress``: a stream for the
    progress line (a terminal). ``kill_worker_after`` (a test seam): SIGKILL the worker once it has
    committed at least this many input messages but not all, and start a new one, once. ``on_ready``
    is called with the replay's settings (broker included) before the first tick is published.
    """
    from rtqis.kafka.admin import create_topics
    from rtqis.kafka.embedded import EmbeddedBroker
    from rtqis.process import free_port
    from rtqis.producers.feed import FeedStats, run_files
    from rtqis.producers.files import inspect_file
    from rtqis.sinks.sink import SINK_TOPICS, sink_paths
    from rtqis.topics.registry import app_id

    if not paths:
        raise ReplayError("nothing to replay: give at least one FILE")
    for p in paths:
        inspect_file(p)  # a bad file fails before anything starts (SourceFormatError, one line)
    s = replay_settings(settings, paths, namespace, symbols)
    if not s.namespace:
        raise ReplayError("a replay needs a namespace (the live topics are never replayed into)")
    ns, sink_topics = s.namespace, tuple(t.name for t in SINK_TOPICS)
    s.log_dir.mkdir(parents=True, exist_ok=True)
    broker: EmbeddedBroker | None = None
    kids: list[ChildProcess] = []
    restarts = 0
    stop = threading.Event()
    feeder: threading.Thread | None = None
    try:
        if s.embedded:  # a fresh memory-only broker of its own, on a free port
            broker = EmbeddedBroker(s.broker_host, free_port(), s.broker_bin, s.log_dir / f"replay-{ns}-broker.log")
            broker.start()
            s = s.model_copy(update={"bootstrap_servers": broker.bootstrap})
        _reset_namespace(s)
        create_topics(s)
        if on_ready is not None:
            on_ready(s)
        kids = [_child(s, "worker", "worker"), _child(s, "sink", "sink")]
        fed: list[FeedStats] = []
        failure: list[BaseException] = []
        live = {"ticks": 0}
        published_at: list[float] = []  # monotonic time the feed returned

        def on_feed(st: FeedStats, _done: int, _total: int) -> None:
            live["ticks"] = st.trades + st.books

        plan = feed_plan(s, speed)

        def publish() -> None:
            try:
                fed.append(
                    run_files(
                        s,
                        paths,
                        speed=plan.speed,
                        slice_ms=plan.slice_ms,
                        max_ticks=plan.max_ticks,
                        symbols=set(s.symbols),
                        stop=stop,
                        on_progress=on_feed,
                    )
                )
                published_at.append(time.monotonic())
            except BaseException as e:  # re-raised in the main thread  # noqa: BLE001
                failure.append(e)

        t0, t0_wall = time.monotonic(), time.time()
        feeder = threading.Thread(target=publish, name="replay-feed", daemon=True)
        feeder.start()
        bar = _Progress(progress)
        worker_group = app_id(ns)
        last_change, last_seen = time.monotonic(), (-1, -1)
        ready_s = published_s = worker_done_s = None
        while True:
            time.sleep(_POLL_S)
            if ready_s is None and (at := _logged_at(kids[0], _WORKER_READY)) is not None:
                ready_s = max(0.0, at - t0_wall)
            if failure:
                raise failure[0]
            _check_alive(kids)
            done_feeding = not feeder.is_alive()
            if done_feeding and published_s is None:
                published_s = (published_at or [time.monotonic()])[0] - t0
            w = _offsets(s, worker_inputs(s), worker_group)
            done_msgs, total_msgs = sum(r.committed or 0 for r in w), sum(r.end for r in w)
            if bar.due():
                at = _event_time_at(s, [r for r in w if r.topic.endswith(".ticks.trade")])
                bar.show(live["ticks"], done_msgs / max(total_msgs, 1), at)
            if kill_worker_after is not None and restarts == 0 and kill_worker_after <= done_msgs < total_msgs:
                log.warning("test seam: SIGKILL to the replay's worker (pid %s) at %d messages", kids[0].pid, done_msgs)
                os.killpg(kids[0].pid or 0, signal.SIGKILL)
                kids[0].wait(10)
                kids[0] = _child(s, "worker2", "worker")
                restarts += 1
                continue
            worker_done = done_feeding and _lag(w) == 0
            if worker_done and worker_done_s is None:
                worker_done_s = time.monotonic() - t0
            # the sink's offsets only once the worker is done: while the broker is busy, a lookup of the
            # output topics' true ends took up to 7.7 s, and the progress line froze that long
            sink_msgs = last_seen[1]
            if worker_done:
                o = _offsets(s, sink_topics, _sink_group(ns))
                sink_msgs = sum(r.committed or 0 for r in o)
            seen = (done_msgs, sink_msgs)
            if seen != last_seen:
                last_seen, last_change = seen, time.monotonic()
            elif time.monotonic() - last_change > _STALL_S:
                raise ReplayError(f"no progress for {_STALL_S:.0f} s: see the replay's logs in {s.log_dir}")
            # the sink's ends are read after the worker's commits, which follow its flushed outputs
            if worker_done and _lag(o) == 0:
                break
        seconds = time.monotonic() - t0
        bar.done()
        kids[0].stop()
        # anything the stopping worker published must be stored too before the sink stops
        deadline = time.monotonic() + 60
        while _lag(o := _offsets(s, sink_topics, _sink_group(ns))) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        kids[1].stop()
        _check_durable(sink_paths(s)[0], o)
    finally:
        stop.set()
        if feeder is not None:
            feeder.join(30)
        for k in reversed(kids):
            k.stop()
        if broker is not None:
            broker.stop()
    db = sink_paths(s)[0]
    return ReplayResult(
        namespace=ns,
        database=db,
        ticks=fed[0].trades + fed[0].books,
        seconds=seconds,
        counts=summary_counts(db),
        digest=digest(db),
        worker_restarts=restarts,
        worker_ready_s=ready_s,
        published_s=published_s,
        worker_done_s=worker_done_s,
        inputs=[str(p) for p in paths],
        symbols=list(s.symbols),
        pairs=list(s.pairs),
    )


def run_archive_replay(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    *,
    namespace: str | None = None,
    symbols: list[str] | None = None,
    speed: float | None = None,
    progress: TextIO | None = None,
    window_ms: int | None = None,
) -> ReplayResult:
    """Replay the live tick archive (of ``settings``: the live store) between ``start_ms`` and
    ``end_ms`` (epoch ms, half-open) exactly as files are replayed (:mod:`rtqis.replay.archive`).

    ``namespace`` defaults to :func:`~rtqis.replay.archive.archive_namespace`; ``window_ms`` is how
    much of the archive is read at a time (default an hour); the rest as :func:`run_replay`."""
    import tempfile

    from rtqis.replay.archive import WINDOW_MS, ArchiveError, archive_namespace, export_archive, iso

    syms = replay_symbols(settings, symbols)
    ns = namespace or archive_namespace(start_ms, end_ms, syms)
    replay_settings(settings, [], ns, syms)  # a bad namespace or symbol fails before the archive is read
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"replay-{ns}-archive-", dir=settings.data_dir) as tmp:
        try:
            exp = export_archive(settings, start_ms, end_ms, syms, Path(tmp), window_ms=window_ms or WINDOW_MS)
        except ArchiveError as e:
            raise ReplayError(str(e)) from None
        paths = [str(p) for p in exp.paths]
        res = run_replay(settings, paths, namespace=ns, symbols=syms, speed=speed, progress=progress)
    res.inputs = [f"archive {iso(start_ms)} .. {iso(end_ms)}"]
    res.span_ms = (start_ms, end_ms)
    return res


def _check_durable(db: Path, ends: list[PartitionOffsets]) -> None:
    """The offsets stored in the replay's DuckDB (with their rows) reach every output partition's true end."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute('SELECT topic, "partition", next_offset FROM consumer_offsets').fetchall()
    finally:
        con.close()
    stored = {(t, p): o for t, p, o in rows}
    short = [
        f"{r.topic}[{r.partition}]"
        for r in ends
        if r.end > r.earliest and stored.get((r.topic, r.partition), 0) < r.end
    ]
    if short:
        raise ReplayError(f"outputs not durable in {db}: {', '.join(short)} short of the end")


# --- the command -----------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """The ``replay`` subcommand (hooked into ``rtqis`` by :mod:`rtqis.cli`)."""
    c = sub.add_parser(
        "replay",
        help="replay Binance data files or the live tick archive through the worker and sink, isolated; "
        "JSON summary with a digest",
        description=(
            "Publish the ticks of Binance data files (every format `rtqis produce file` reads), or with --from "
            "[--to] those the live sink archived between two times, into the topics of a namespace of their "
            "own (replay.NAME.*), run the real worker and sink on them, and stop once every tick is processed "
            "and every output is stored in DATA_DIR/rtqis-NAME.duckdb. A namespace replayed before is reset "
            "first. Prints (and with --json writes) a summary: ticks, candles (closed), signals, alerts, adf, "
            "seconds, ticks_per_s and digest, a SHA-256 of the outputs that equals between runs of the same "
            "input. Without a configured broker a fresh embedded one is started for the replay."
        ),
    )
    c.add_argument("paths", nargs="*", metavar="FILE", help="Binance data files, merged by event time")
    c.add_argument(
        "--from", dest="start", metavar="T",
        help="replay the live tick archive from T (ISO-8601 UTC, e.g. 2024-08-09T00:00:00Z, or epoch ms)",
    )  # fmt: skip
    c.add_argument("--to", dest="end", metavar="T", help="... up to T, excluded (default: now)")
    c.add_argument("--symbols", help="only these symbols (comma-separated; default: RTQIS_SYMBOLS)")
    c.add_argument("--namespace", metavar="NAME", help="default: r + 10 hex digits derived from the inputs")
    c.add_argument("--speed", default="max", help="1 = real time, 60 = 60x, max = as fast as possible (default)")
    c.add_argument("--json", metavar="OUT", help="also write the summary to this file")
    c.set_defaults(func=cmd_replay)


def cmd_replay(settings: Settings, a: Any) -> int:
    """Run ``rtqis replay``: the summary as JSON on stdout (and in ``--json OUT``)."""
    import json

    from rtqis.replay.archive import parse_span

    if a.paths and (a.start is not None or a.end is not None):
        raise ReplayError("give FILE... or --from/--to, not both")
    if a.end is not None and a.start is None:
        raise ReplayError("--to goes with --from")
    if not a.paths and a.start is None:
        raise ReplayError("nothing to replay: give FILE... or --from T [--to T]")
    span = parse_span(a.start, a.end) if a.start is not None else None
    speed: float | None = None
    if a.speed != "max":
        try:
            speed = float(a.speed)
        except ValueError:
            raise ReplayError(f"--speed takes a number or max, not {a.speed!r}") from None
        if not speed > 0:
            raise ReplayError(f"--speed must be > 0, got {a.speed}")
    if a.json and not Path(a.json).resolve().parent.is_dir():
        raise ReplayError(f"--json {a.json}: its folder does not exist")
    common: dict[str, Any] = {
        "namespace": a.namespace,
        "symbols": a.symbols.split(",") if a.symbols else None,
        "speed": speed,
        "progress": sys.stderr if sys.stderr.isatty() else None,
    }
    res = run_archive_replay(settings, *span, **common) if span else run_replay(settings, a.paths, **common)
    text = json.dumps(res.summary(), indent=2)
    sys.stdout.write(text + "\n")
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0
