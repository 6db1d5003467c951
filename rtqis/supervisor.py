"""``rtqis up``: the local broker (unless one is configured; ``RTQIS_BROKER``: embedded Tansu or Apache
Kafka, see :func:`rtqis.kafka.embedded.local_broker`), the topics, and every service as a
child process, watched. A child that dies stops the whole system with its exit code and log tail; only
the producer of a file replay may end (exit 0): the others go on processing and showing what it sent.

Ctrl-C (SIGINT) or SIGTERM stops the services in reverse order, then the broker, each with SIGTERM and
SIGKILL after a timeout. If `up` itself is killed without a chance to do that (SIGKILL, a crash), the
kernel sends every child SIGTERM (Linux: :func:`rtqis.process.die_with_parent`), so nothing keeps
running or holds the ports for the next `up`.

If the local broker dies, `up` does not restart it. Apache Kafka keeps its
topics and offsets on disk, so a new `up` resumes. For Tansu: it is memory only, so everything it held is gone
with it (ticks the sink had not stored yet, the worker's table changelogs, outputs not stored yet) and a
new broker could not give the worker its state back. `up` stops the services (all at once, bounded by
:data:`_BROKER_LOSS_STOP_S`), says in one line what was lost and what DuckDB keeps (the latest stored
trade time), and exits with :data:`BROKER_LOST_EXIT`; `rtqis up` again starts fresh on the same data."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rtqis.errors import RtqisError
from rtqis.kafka.admin import create_topics
from rtqis.kafka.embedded import LocalBroker, local_broker
from rtqis.process import ChildProcess, rtqis_argv, set_from_signal_handler
from rtqis.settings import Settings

__all__ = ["BROKER_LOST_EXIT", "Supervisor", "latest_stored_trade_ms"]

log = logging.getLogger(__name__)

#: how long a service has to stop after SIGTERM before it is killed (s)
_STOP_TIMEOUT_S = 15.0
#: how long the services have to stop once the broker died (s): they have nothing left to deliver
_BROKER_LOSS_STOP_S = 8.0
#: exit code of `rtqis up` when the embedded broker died
BROKER_LOST_EXIT = 3


def _service(name: str, log_path: Path, *args: str) -> ChildProcess:
    """One service of `rtqis up`: ``rtqis ARGS...`` logging to ``log_path`` (appended across runs)."""
    return ChildProcess(name, rtqis_argv(*args), log_path, stop_timeout_s=_STOP_TIMEOUT_S)


class Supervisor:
    """Owns the broker and the children; :meth:`run` blocks until Ctrl-C/SIGTERM or a child dies."""

    def __init__(
        self,
        settings: Settings,
        source: str = "synthetic",
        out: Any = None,
        paths: list[str] | None = None,
        speed: str = "1",
    ) -> None:
        self.settings = settings
        self.source = source
        self.paths = [str(Path(p).resolve()) for p in paths or []]
        self.speed = speed
        self.out = out or sys.stdout
        self.broker: LocalBroker | None = None
        self.children: list[ChildProcess] = []
        self.stop_event = threading.Event()
        self.memory_report_s = 60.0
        self._warned_memory = False

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def plan(self) -> list[ChildProcess]:
        """The services to start, in order (stopped in reverse): producer, worker, sink, dashboard."""
        logs = self.settings.log_dir
        if self.source == "synthetic":
            producer: tuple[str, ...] = ("produce", "synthetic")
        elif self.source == "binance":
            producer = ("produce", "binance")
        elif self.source == "file":
            from rtqis.producers.files import inspect_file

            for p in self.paths:
                inspect_file(p)  # a bad file fails `up` before anything starts
            producer = ("produce", "file", *self.paths, "--speed", self.speed)
        else:
            raise RtqisError(f"unknown source {self.source!r}")
        return [
            _service("producer", logs / "producer.log", *producer),
            _service("worker", logs / "worker.log", "worker"),
            # live Binance: fill holes in the last 24 h of 1m candles from REST first (warns if offline)
            _service(
                "sink", logs / "sink.log", "sink", *(["--backfill-hours", "24"] if self.source == "binance" else [])
            ),
            _service("ui", logs / "ui.log", "ui"),  # the dashboard (panel serve)
        ]

    def start(self) -> None:
        s = self.settings
        s.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if s.embedded:
            self.broker = local_broker(s)
            self.broker.start()
            b = self.broker
            self.say(f"broker     {b.label} on {b.bootstrap} ({b.details}; log {b.log_path})")
            env["RTQIS_BOOTSTRAP_SERVERS"] = self.broker.bootstrap
        else:
            self.say(f"broker     {s.bootstrap}")
        # children must not start their own broker, and see the same data dir
        env["RTQIS_DATA_DIR"] = str(s.data_dir)
        live = s.model_copy(update={"bootstrap_servers": self.broker.bootstrap}) if self.broker else s
        created = create_topics(live)
        self.say(f"topics     {len(created)} created" + (f" ({', '.join(created)})" if created else " (all existed)"))
        for child in self.plan():
            child.start(env)
            self.children.append(child)
            self.say(f"{child.name:<10} pid {child.pid or '?'}, log {child.log_path}")
        self.say("")
        from rtqis.ui.server import dashboard_url

        self.say(f"Dashboard:         {dashboard_url(s.ui_host, s.ui_port)}   (open it in a browser)")
        self.say("Watch the ticks:   rtqis tail ticks.trade        (another terminal)")
        self.say("Watch the worker:  rtqis tail analytics.ticker   /   rtqis tail candles.1m")
        self.say("Candle history:    rtqis candles export --symbol BTCUSDT --interval 1m")
        self.say("Stop everything:   Ctrl-C")

    def run(self) -> int:
        """Start everything, watch it, stop it. Returns the exit code for ``rtqis up``."""
        self._install_signals()
        try:
            self.start()
            return self._watch()
        finally:
            self.shutdown()

    def _install_signals(self) -> None:
        def _handler(signum: int, _frame: Any) -> None:
            set_from_signal_handler(self.stop_event)

        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)

    def _watch(self) -> int:
        next_mem = time.monotonic() + self.memory_report_s
        finished: set[str] = set()
        while not self.stop_event.wait(0.5):
            for child in self.children:
                code = child.poll()
                if code is None or child.name in finished:
                    continue
                if code == 0 and child.name == "producer" and self.source == "file":
                    # a file replay ends: the worker, sink and dashboard still have its ticks to process,
                    # store and show (stopping them here lost every tick not stored yet, #21)
                    finished.add(child.name)
                    self.say("producer   finished the replay; the worker, sink and dashboard keep running")
                    continue
                self.say(f"\n{child.name} exited with code {code}; last lines of {child.log_path}:")
                self.say(child.tail())
                return code or 1
            if self.broker is not None and not self.broker.alive():
                return self._broker_lost()
            if time.monotonic() >= next_mem:
                self.report_memory()
                next_mem += self.memory_report_s
        self.say("\nstopping ...")
        return 0

    def _broker_lost(self) -> int:
        """The local broker died: stop the services at once, say in one line what is lost, exit code."""
        assert self.broker is not None
        code = self.broker.proc.poll() if self.broker.proc is not None else None
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        self._stop_children(_BROKER_LOSS_STOP_S)  # the sink stores what it holds first
        ms = latest_stored_trade_ms(self.settings)
        kept = f"up to trade time {_iso(ms)}" if ms is not None else "(no trade stored yet)"
        if self.broker.durable:  # Apache Kafka: its topics and offsets are on disk, a new `up` resumes
            self.say(
                f"\n{self.broker.label} died ({how}; log {self.broker.log_path}): its topics and committed offsets "
                f"are on disk, so `rtqis up` again resumes where the services stopped; DuckDB "
                f"({self.settings.data_dir}) keeps everything the sink stored, {kept}"
            )
            return BROKER_LOST_EXIT
        self.say(
            f"\nthe embedded broker died ({how}; log {self.broker.log_path}): it kept everything in memory only, "
            "so the ticks the sink had not stored, the worker's table changelogs and the outputs not yet stored "
            f"are lost; DuckDB ({self.settings.data_dir}) keeps everything the sink stored, {kept}; "
            "`rtqis up` again starts fresh"
        )
        return BROKER_LOST_EXIT

    def _stop_children(self, timeout_s: float) -> None:
        """Stop every child at the same time (SIGTERM, SIGKILL after ``timeout_s``) and wait for all."""
        threads = [threading.Thread(target=c.stop, args=(timeout_s,), daemon=True) for c in self.children]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout_s + 10)

    def report_memory(self) -> None:
        parts = [f"{c.name} {c.rss_mb():.0f} MB" for c in self.children]
        if self.broker is not None:
            mb = self.broker.rss_bytes() / 1e6
            parts.insert(0, f"broker {mb:.0f} MB")
            limit = self.settings.broker_memory_limit_mb
            if mb > limit and not self._warned_memory and not self.broker.durable:  # a JVM's heap is bounded
                self._warned_memory = True
                self.say(
                    f"WARNING: the embedded broker uses {mb:.0f} MB (> {limit} MB, RTQIS_BROKER_MEMORY_LIMIT_MB). "
                    "It keeps every message in memory while it runs: restart `rtqis up` to free it "
                    "(history is in DuckDB), or run Apache Kafka (docker-compose.yml) for long runs."
                )
        self.say("memory     " + ", ".join(parts))

    def shutdown(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.broker is not None:
            self.broker.stop()
        self.say("stopped")


def latest_stored_trade_ms(settings: Settings) -> int | None:
    """The latest ``trade_time`` (epoch ms) in the tick archive of DuckDB; None if none or unreadable.

    Called after the services stopped, so the sink no longer holds the file."""
    import duckdb

    from rtqis.sinks.sink import sink_paths

    path = sink_paths(settings)[0]
    if not path.exists():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            row = con.execute("SELECT max(trade_time) FROM trades").fetchone()
    except duckdb.Error:
        return None  # still held, or not a store yet
    return int(row[0]) if row and row[0] is not None else None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
