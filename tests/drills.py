"""Crash drills (#21): SIGKILL the pipeline's processes at random moments of a replay of real trades,
restart them, and compare what DuckDB holds at the end with a clean run over the same input.

Real parts only: an embedded Tansu broker, ``rtqis produce file`` replaying real Binance trades
(BTCUSDT and ETHUSDT spot, so the pair ETHUSDT/BTCUSDT has signals and alerts), ``rtqis worker``,
``rtqis sink``, ``rtqis ui`` and ``rtqis up --source file``. The kill schedule is drawn from a seeded
:class:`random.Random` (the seed is printed and recorded), so a failing drill can be re-run with the
same schedule (``RTQIS_CHAOS_SEED``); the processes' own timing is not reproducible, which is the point.

Completion is never a sleep: a drill is done when the producer has exited 0, the worker's consumer group
has committed the true end of its input topics (:func:`rtqis.kafka.offsets.topic_offsets`), and then the
sink has committed the true end of every topic it reads; after the sink is stopped, the offsets it
stored in DuckDB must equal those true ends.

What "equal" means per table (:data:`TABLES`): the same rows, every column compared exactly (floats bit
for bit, NaN equal to NaN) - trades (the tick archive), PairSignals, ADF results, alerts and the closed
1m and 5m candles - except ``candles.updated_at`` (the wall-clock time of the write). The forming
candle is a live preview published at most every ``live_candle_ms`` of wall time, so its last stored
state depends on timing, also in clean runs: it is checked by :func:`forming_candles_ok` instead (at
most one per series, after every closed one). No table holds a duplicate: count(*) == count(DISTINCT
key).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import duckdb
import psutil

from rtqis.errors import BrokerError
from rtqis.kafka.offsets import topic_offsets
from rtqis.process import die_with_parent, settings_env
from rtqis.settings import Settings
from rtqis.sinks.sink import SINK_TOPICS, sink_paths
from rtqis.sinks.store import Store
from rtqis.topics import LEGS, TRADES
from rtqis.topics.registry import app_id
from tests.conftest import Procs

__all__ = [
    "INPUT",
    "KINDS",
    "TABLES",
    "DrillReport",
    "Services",
    "TableRule",
    "TableState",
    "UpRuns",
    "clean_run",
    "compare",
    "db_path",
    "descendants",
    "drill_seed",
    "env_for",
    "first_difference",
    "forming_candles_ok",
    "http_ok",
    "kill_schedule",
    "read_tables",
    "services_drill",
    "stored_offsets",
    "total_kills",
    "up_drill",
    "wait_drained",
    "wait_gone",
]

_DATA = Path(__file__).resolve().parent / "data" / "binance" / "trades"
INPUT: tuple[Path, ...] = tuple(next(_DATA.glob(f"{s}-spot-trades-*.csv")) for s in ("BTCUSDT", "ETHUSDT"))
"""The replayed input: 10 min 50 s of real BTCUSDT and ETHUSDT spot trades (34,419 trades)."""

KINDS: tuple[str, ...] = ("worker", "sink", "producer", "ui")
"""The services a drill kills and restarts; the `rtqis up` drill kills ``up`` itself too (its children
get SIGTERM from the parent-death signal and its memory-only broker is gone) or one of its children
(then `up` stops everything with that exit code)."""

SEED_ENV = "RTQIS_CHAOS_SEED"
KILLS_ENV = "RTQIS_CHAOS_KILLS"


@dataclass(frozen=True)
class TableRule:
    """How one stored table is compared: the rows of ``query`` (ordered by ``key``), all columns but
    ``ignored``; ``key`` must be unique; ``why`` is the rule in words (recorded in the report)."""

    query: str
    key: tuple[str, ...]
    ignored: tuple[str, ...] = ()
    why: str = "every column of every row, exactly (floats bit for bit)"


TABLES: dict[str, TableRule] = {
    "candles_1m": TableRule(
        "SELECT * FROM candles WHERE \"interval\" = '1m' AND closed",
        ("symbol", "open_time"),
        ("updated_at",),
        "closed candles: every column but updated_at (the wall-clock time of the write), exactly; the forming "
        "candle is a live preview published at most every live_candle_ms of wall time, so its last stored "
        "state depends on timing: at most one per series, after every closed one (forming_candles_ok)",
    ),
    "candles_5m": TableRule(
        "SELECT * FROM candles WHERE \"interval\" = '5m' AND closed",
        ("symbol", "open_time"),
        ("updated_at",),
        "as candles_1m",
    ),
    "signals": TableRule("SELECT * FROM signals", ("pair", "time"), why="PairSignals bit-identical, every column"),
    "alerts": TableRule("SELECT * FROM alerts", ("pair", "time", "kind")),
    "adf_results": TableRule("SELECT * FROM adf_results", ("pair", "time", "request_id")),
    "trades": TableRule("SELECT * FROM trades", ("symbol", "trade_id"), why="the tick archive, every column exactly"),
}


def drill_seed(default: int | None = None) -> int:
    """The schedule's seed: ``$RTQIS_CHAOS_SEED``, else ``default``, else a fresh one (printed by the drill)."""
    text = os.environ.get(SEED_ENV)
    if text:
        return int(text)
    return default if default is not None else random.SystemRandom().randrange(1, 2**31)


def total_kills(default: int = 50) -> int:
    """Kills over all drills: ``$RTQIS_CHAOS_KILLS`` (``make chaos``: more), else ``default`` (CI)."""
    return int(os.environ.get(KILLS_ENV, default))


def kill_schedule(
    rng: random.Random, weights: Mapping[str, float], kills: int, window_s: float, least: Mapping[str, int]
) -> list[tuple[float, str]]:
    """``kills`` moments in ``[0, window_s)`` s, sorted, each with the kind of process to kill then: each
    kind at least ``least[kind]`` times, the rest drawn by ``weights``."""
    names = sorted(weights)
    targets = [k for k in names for _ in range(least.get(k, 0))]
    if kills < len(targets):
        raise ValueError(f"{kills} kills are fewer than the {len(targets)} required ({dict(least)})")
    targets += rng.choices(names, weights=[weights[k] for k in names], k=kills - len(targets))
    rng.shuffle(targets)
    times = sorted(rng.uniform(0.0, window_s) for _ in targets)
    return list(zip(times, targets, strict=True))


# --- processes -------------------------------------------------------------------------------------------


@dataclass
class Service:
    """One named ``rtqis`` child: its command line and the current process (None before the first start)."""

    name: str
    args: tuple[str, ...]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0


class Services:
    """The ``rtqis`` children of one drill, each in its own session, logging to ``tmp/<name>-<n>.log``;
    they die with the test run (parent-death signal). :meth:`stop_all` stops whatever is left."""

    def __init__(self, tmp: Path, env: Mapping[str, str]) -> None:
        self.tmp = tmp
        self.env = dict(env)
        self.services: dict[str, Service] = {}

    def add(self, name: str, *args: str) -> None:
        self.services[name] = Service(name, args)

    def start(self, name: str) -> subprocess.Popen[bytes]:
        svc = self.services[name]
        log = self.tmp / f"{name}-{svc.starts}.log"
        with log.open("wb") as out:
            svc.proc = subprocess.Popen(
                [sys.executable, "-m", "rtqis", *svc.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        svc.starts += 1
        return svc.proc

    def proc(self, name: str) -> subprocess.Popen[bytes]:
        p = self.services[name].proc
        if p is None:
            raise RuntimeError(f"{name} was never started")
        return p

    def kill(self, name: str) -> bool:
        """SIGKILL ``name``'s process group and reap it; False if it was not running."""
        p = self.proc(name)
        if p.poll() is not None:
            return False
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(10)
        return True

    def stop(self, name: str, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait up to ``timeout_s`` (a process still running then is stuck: SIGKILL, and -9)."""
        return Procs.stop(self.proc(name), timeout_s=timeout_s)

    def stop_all(self) -> None:
        for name in reversed(list(self.services)):
            if self.services[name].proc is not None:
                self.stop(name, 20.0)

    def check_running(self) -> None:
        """Raise if a service exited by itself (a crash): only a producer may end, with code 0."""
        for name, svc in self.services.items():
            code = svc.proc.poll() if svc.proc is not None else None
            if code is not None and not (name == "producer" and code == 0):
                raise AssertionError(f"{name} exited by itself with code {code}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, n: int = 20) -> str:
        svc = self.services[name]
        log = self.tmp / f"{name}-{svc.starts - 1}.log"
        try:
            return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def wait_gone(procs: Iterable[psutil.Process], timeout_s: float) -> list[int]:
    """Wait until every process of ``procs`` has exited; the pids still running after ``timeout_s``."""
    left = list(procs)
    deadline = time.monotonic() + timeout_s
    while left and time.monotonic() < deadline:
        left = [p for p in left if _running(p)]
        if left:
            time.sleep(0.1)
    return [p.pid for p in left if _running(p)]


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def http_ok(port: int) -> bool:
    """True if the dashboard server on 127.0.0.1:``port`` answers ``/`` (its redirect to the app: no
    session is rendered, which takes seconds on a busy machine)."""
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        con.request("GET", "/")
        return con.getresponse().status in (200, 302)
    except OSError:
        return False
    finally:
        con.close()


# --- completion ------------------------------------------------------------------------------------------


def _lag(settings: Settings, topics: list[str], group: str) -> int:
    return sum(r.lag or 0 for r in topic_offsets(settings, topics, group=group))


def sink_topics(settings: Settings) -> list[str]:
    return [t.full_name(settings.namespace) for t in SINK_TOPICS]


def wait_drained(
    settings: Settings, producer_done: Callable[[], bool], timeout_s: float, alive: Callable[[], None] = lambda: None
) -> dict[tuple[str, int], int]:
    """Block until the pipeline has processed and stored everything; return the sink topics' true ends.

    Done when ``producer_done()`` and then the worker's group has committed the true end of its input
    topics and then the sink's group the true end of every sink topic (the sink commits only after
    the rows and offsets are durable in DuckDB; the worker only after its outputs are delivered).
    ``alive()`` is called on every round and raises if a process died. Raises AssertionError at the
    timeout, naming the stage still waited on."""
    worker_topics = [t.full_name(settings.namespace) for t in (TRADES, LEGS)]
    sink_group = f"rtqis-sink-{settings.namespace}" if settings.namespace else "rtqis-sink"
    deadline = time.monotonic() + timeout_s
    state = "producer"
    while time.monotonic() < deadline:
        alive()
        try:
            if state == "producer" and producer_done():
                state = "worker"
            if state == "worker" and _lag(settings, worker_topics, app_id(settings.namespace)) == 0:
                state = "sink"
            if state == "sink":
                names = sink_topics(settings)
                rows = topic_offsets(settings, names, group=sink_group)
                if sum(r.lag or 0 for r in rows) == 0:
                    return {(r.topic, r.partition): r.end for r in rows}
        except BrokerError:
            pass  # a broker starting or stopping: ask again
        time.sleep(0.2)
    raise AssertionError(f"the pipeline did not drain within {timeout_s:.0f} s (waiting on the {state})")


def stored_offsets(db: Path) -> dict[tuple[str, int], int]:
    with Store(db, read_only=True) as st:
        return st.load_offsets()


# --- comparison ------------------------------------------------------------------------------------------


def _norm(v: Any) -> Any:
    """A value made comparable exactly: floats by their bits (NaN == NaN), lists as tuples."""
    if isinstance(v, float):
        return ("f64", struct.pack("<d", v)) if not math.isnan(v) else ("f64", "nan")
    if isinstance(v, list):
        return tuple(_norm(x) for x in v)
    return v


@dataclass
class TableState:
    """One table as read: its rows (normalised, key first), the count and the count of distinct keys."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    count: int
    distinct_keys: int


def read_tables(db: Path) -> dict[str, TableState]:
    """Every table of :data:`TABLES` from the DuckDB file ``db`` (opened read-only)."""
    out: dict[str, TableState] = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for name, rule in TABLES.items():
            cur = con.execute(rule.query)
            cols = [d[0] for d in cur.description]
            keep = [i for i, c in enumerate(cols) if c not in rule.ignored]
            key_idx = [cols.index(k) for k in rule.key]
            raw = cur.fetchall()
            rows = sorted(
                (tuple(_norm(r[i]) for i in key_idx) + tuple(_norm(r[i]) for i in keep) for r in raw),
                key=repr,
            )
            keys = {tuple(r[i] for i in key_idx) for r in raw}
            out[name] = TableState([cols[i] for i in keep], rows, len(raw), len(keys))
    return out


def compare(clean: Mapping[str, TableState], got: Mapping[str, TableState]) -> dict[str, dict[str, Any]]:
    """Per table: rows in the clean run, rows now, missing (in clean, not now), extra (now, not in
    clean), duplicates (count - distinct keys) and ``equal``."""
    out: dict[str, dict[str, Any]] = {}
    for name in TABLES:
        a, b = clean[name], got[name]
        sa, sb = set(a.rows), set(b.rows)
        out[name] = {
            "clean_rows": a.count,
            "rows": b.count,
            "missing": len(sa - sb),
            "extra": len(sb - sa),
            "duplicates": b.count - b.distinct_keys,
            "equal": a.rows == b.rows and b.count == b.distinct_keys,
        }
    return out


def forming_candles_ok(db: Path) -> list[str]:
    """What is wrong with the forming (not closed) candles of ``db``: more than one per series, or one
    at or before a closed candle of its series (a stale preview written over a closed bar). [] = fine."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            'SELECT symbol, "interval", count(*) FILTER (WHERE NOT closed), '
            "max(open_time) FILTER (WHERE NOT closed), max(open_time) FILTER (WHERE closed) "
            'FROM candles GROUP BY symbol, "interval" ORDER BY 1, 2'
        ).fetchall()
    bad = []
    for sym, iv, n_forming, forming_at, closed_at in rows:
        if n_forming > 1:
            bad.append(f"{sym} {iv}: {n_forming} forming candles")
        elif n_forming == 1 and closed_at is not None and forming_at <= closed_at:
            bad.append(f"{sym} {iv}: the forming candle {forming_at} is not after the last closed one {closed_at}")
    return bad


def first_difference(clean: TableState, got: TableState) -> str:
    """The first row (by key) that differs, for the failure message."""
    sa, sb = set(clean.rows), set(got.rows)
    miss, extra = sorted(sa - sb, key=repr)[:2], sorted(sb - sa, key=repr)[:2]
    return f"columns {clean.columns}; missing {miss}; extra {extra}"


# --- report ----------------------------------------------------------------------------------------------


@dataclass
class DrillReport:
    """What one drill did and found; written as JSON next to its logs and printed."""

    drill: str
    seed: int
    planned_kills: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    schedule: list[tuple[float, str]] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update({k: dict(d[k]) for k in ("kills", "restarts", "skipped")})
        d["total_kills"] = self.total_kills
        d["rules"] = {name: rule.why for name, rule in TABLES.items()}
        d["schedule"] = [[round(t, 3), k] for t, k in self.schedule]
        return d

    def write(self, path: Path) -> str:
        text = json.dumps(self.as_dict(), indent=1, sort_keys=True)
        path.write_text(text)
        return text


def env_for(settings: Settings) -> dict[str, str]:
    return settings_env(settings)


def db_path(settings: Settings) -> Path:
    return sink_paths(settings)[0]


# --- the drills ------------------------------------------------------------------------------------------


def _wait_for(cond: Callable[[], bool], timeout_s: float, what: str, check: Callable[[], None] = lambda: None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        check()
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _clock_past(t: float) -> Callable[[], bool]:
    """A condition: the monotonic clock has passed ``t``."""
    return lambda: time.monotonic() >= t


def _check_offsets(report: DrillReport, db: Path, ends: Mapping[tuple[str, int], int]) -> None:
    """The offsets the sink stored in DuckDB must be the true ends it drained to (no empty partition)."""
    stored = stored_offsets(db)
    wrong = {f"{t}[{p}]": (stored.get((t, p)), e) for (t, p), e in ends.items() if e and stored.get((t, p)) != e}
    report.notes.append(f"stored offsets == true ends on {sum(1 for e in ends.values() if e)} partitions")
    assert not wrong, f"stored offsets (stored, true end) differ: {wrong}"


def clean_run(settings: Settings, tmp: Path, timeout_s: float = 180.0) -> dict[str, TableState]:
    """The reference: the whole input at full speed through one worker and one sink, nothing killed."""
    sv = Services(tmp, env_for(settings))
    sv.add("worker", "worker")
    sv.add("sink", "sink")
    sv.add("producer", "produce", "file", *map(str, INPUT), "--speed", "max")
    try:
        for name in sv.services:
            sv.start(name)
        ends = wait_drained(settings, lambda: sv.proc("producer").poll() == 0, timeout_s, sv.check_running)
        codes = {name: sv.stop(name) for name in ("worker", "sink")}
        assert codes == {"worker": 0, "sink": 0}, codes
        _check_offsets(DrillReport("clean", 0), db_path(settings), ends)
        assert not forming_candles_ok(db_path(settings))
        return read_tables(db_path(settings))
    finally:
        sv.stop_all()


def services_drill(
    settings: Settings,
    tmp: Path,
    *,
    seed: int,
    kills: int,
    speed: float,
    window_s: float,
    weights: Mapping[str, float],
    least: Mapping[str, int],
    timeout_s: float = 300.0,
) -> tuple[DrillReport, dict[str, TableState]]:
    """The producer (``--speed``), worker, sink and dashboard as separate processes on one broker; the
    seeded schedule SIGKILLs one of them ``kills`` times over ``window_s`` s, each restarted at once
    (a killed producer replays the file from its beginning again, as a user re-running it does; while
    the window is open a finished one is started again too, so every producer kill lands mid-replay).
    Then everything drains, the dashboard must answer, and every process must stop cleanly on SIGTERM."""
    rng = random.Random(seed)
    report = DrillReport("services", seed, planned_kills=kills)
    report.schedule = kill_schedule(rng, weights, kills, window_s, least)
    sv = Services(tmp, env_for(settings))
    sv.add("worker", "worker")
    sv.add("sink", "sink")
    sv.add("ui", "ui")
    sv.add("producer", "produce", "file", *map(str, INPUT), "--speed", f"{speed:g}")
    t0 = time.monotonic()
    window_end = t0 + window_s

    def check() -> None:
        sv.check_running()
        if time.monotonic() < window_end and sv.proc("producer").poll() == 0:
            sv.start("producer")  # replay again: the next producer kill lands mid-replay
            report.restarts["producer (replay again)"] += 1

    try:
        for name in sv.services:
            sv.start(name)
        for at, kind in report.schedule:
            _wait_for(_clock_past(t0 + at), window_s + 5, "the next kill", check)
            if sv.kill(kind):
                report.kills[kind] += 1
            else:
                report.skipped[kind] += 1
            sv.start(kind)
            report.restarts[kind] += 1
        report.timings["kills"] = time.monotonic() - t0
        ends = wait_drained(settings, lambda: sv.proc("producer").poll() == 0, timeout_s, sv.check_running)
        report.timings["drained"] = time.monotonic() - t0
        _wait_for(lambda: http_ok(settings.ui_port), 60, "the dashboard to answer", sv.check_running)
        codes = {name: sv.stop(name) for name in ("producer", "ui", "worker", "sink")}
        report.seconds = time.monotonic() - t0
        assert set(codes.values()) == {0}, f"exit codes on SIGTERM (-9: stuck, killed): {codes}"
        _check_offsets(report, db_path(settings), ends)
        bad = forming_candles_ok(db_path(settings))
        assert not bad, bad
        return report, read_tables(db_path(settings))
    finally:
        sv.stop_all()


ORPHAN_DEADLINE_S = 20.0
"""How long the processes of a killed `up` may take to go (s): SIGTERM from the parent-death signal, then a
clean stop (tests/test_orphans.py allows 15 s; 5 s more for a machine this drill loads)."""

UP_ARGV = (sys.executable, "-m", "rtqis", "up", "--source", "file")


class UpRuns:
    """``rtqis up --source file INPUT --speed S`` started again and again on the same ports and data
    directory, as a user restarts it; the output of run ``n`` is ``tmp/up-<n>.out``."""

    def __init__(self, tmp: Path, env: Mapping[str, str], speed: float) -> None:
        self.tmp, self.env, self.speed = tmp, dict(env), speed
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.tmp / f"up-{self.runs - 1}.out"

    def start(self) -> subprocess.Popen[bytes]:
        out = self.tmp / f"up-{self.runs}.out"
        with out.open("wb") as f:
            self.proc = subprocess.Popen(
                [*UP_ARGV, *map(str, INPUT), "--speed", f"{self.speed:g}"],
                env=self.env,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent(),
            )
        self.runs += 1
        return self.proc

    def text(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""

    def pid_of(self, child: str) -> int | None:
        """The pid `up` printed for ``child`` ("worker     pid 123, log ...")."""
        for line in self.text().splitlines():
            if line.startswith(f"{child} ") and " pid " in line:
                return int(line.split(" pid ")[1].split(",")[0])
        return None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"rtqis up exited by itself with code {self.proc.returncode}:\n{self.text()[-3000:]}")


def _kill(up: subprocess.Popen[bytes], runs: UpRuns, kind: str, report: DrillReport) -> str:
    """SIGKILL ``kind`` (`up` itself or its child of that name) and return what was killed.

    A producer that has finished its replay cannot be killed: then `up` is killed instead and the
    producer's kill is counted as skipped. It may finish before the kill (`up` said so already), just
    before it (its process group is gone) or during it (the kill reached an exited process that `up`
    had not reaped yet: `up` then reports the replay finished and, rightly, keeps running; a CI run and
    a clean-clone run timed out on those two)."""

    def kill_up_instead() -> str:
        report.skipped[kind] += 1
        up.kill()
        return "up"

    if kind == "up":
        up.kill()
        return kind
    if kind == "producer" and "finished the replay" in runs.text():
        return kill_up_instead()
    pid = runs.pid_of(kind)
    assert pid is not None, runs.text()
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return kill_up_instead()
    if kind == "producer":
        _wait_for(
            lambda: up.poll() is not None or "finished the replay" in runs.text(), 120, "`up` to react to the kill"
        )
        if up.poll() is None:
            return kill_up_instead()
    return kind


def up_drill(
    settings: Settings,
    tmp: Path,
    *,
    seed: int,
    kills: int,
    speed: float,
    max_delay_s: float,
    least: Mapping[str, int],
    weights: Mapping[str, float],
    timeout_s: float = 300.0,
) -> tuple[DrillReport, dict[str, TableState]]:
    """`rtqis up --source file` with its own embedded broker (``settings``: empty bootstrap servers, fixed
    ports and data directory). Each of ``kills`` rounds starts `up`, waits a seeded random time (from
    the start for a kill of `up`, from "all started" for a child's), SIGKILLs `up` or one child, checks
    that `up` and every process it started are gone within :data:`ORPHAN_DEADLINE_S` (no orphan; a
    killed child makes `up` stop everything and exit non-zero), and starts it again. Every restart
    begins with an empty broker and replays the file from its beginning; the sink must notice the new
    broker.
    The last run is left alone: it must replay, process and store everything, keep running after the
    producer finished, serve the dashboard, and stop on SIGINT with exit code 0."""
    rng = random.Random(seed)
    report = DrillReport("up", seed, planned_kills=kills)
    report.schedule = [
        (rng.uniform(0.0, max_delay_s), kind) for _, kind in kill_schedule(rng, weights, kills, 1.0, least)
    ]
    runs = UpRuns(tmp, settings_env(settings), speed)
    t0 = time.monotonic()
    try:
        for delay, kind in report.schedule:
            p = runs.start()
            if kind != "up":
                _wait_for(lambda: "Stop everything" in runs.text(), 90, "`rtqis up` to start", runs.check_alive)
            _wait_for(_clock_past(time.monotonic() + delay), max_delay_s + 5, "the kill", runs.check_alive)
            tree = descendants(p.pid)
            kind = _kill(p, runs, kind, report)
            code = p.wait(120)  # after a child's death `up` stops the others: up to 15 s each
            report.kills[kind] += 1
            if kind != "up":
                assert code != 0 and f"{kind} exited with code -9" in runs.text(), runs.text()[-3000:]
            left = wait_gone(tree, ORPHAN_DEADLINE_S)
            assert not left, f"processes of the killed `rtqis up` still running {ORPHAN_DEADLINE_S:.0f} s later: {left}"
            report.restarts["up"] += 1
        report.timings["kills"] = time.monotonic() - t0
        p = runs.start()
        _wait_for(lambda: "finished the replay" in runs.text(), timeout_s, "the replay to end", runs.check_alive)
        ends = wait_drained(settings, lambda: True, timeout_s, runs.check_alive)
        report.timings["drained"] = time.monotonic() - t0
        _wait_for(lambda: http_ok(settings.ui_port), 60, "the dashboard to answer", runs.check_alive)
        tree = descendants(p.pid)
        p.send_signal(signal.SIGINT)
        code = p.wait(60)
        report.seconds = time.monotonic() - t0
        assert code == 0, runs.text()[-3000:]
        assert not wait_gone(tree, 10.0), "children of `rtqis up` outlived its clean stop"
        _check_offsets(report, db_path(settings), ends)
        bad = forming_candles_ok(db_path(settings))
        assert not bad, bad
        resets = (settings.log_dir / "sink.log").read_text(errors="replace").count("reading this partition again")
        report.notes.append(f"partitions the sink read again from their beginning (a new broker): {resets}")
        return report, read_tables(db_path(settings))
    finally:
        if runs.proc is not None and runs.proc.poll() is None:
            tree = descendants(runs.proc.pid)
            runs.proc.kill()
            runs.proc.wait(10)
            wait_gone(tree, 30.0)
