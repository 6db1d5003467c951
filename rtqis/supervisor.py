"""``rtqis up``: the embedded broker (unless one is configured), the topics, and every service as a
child process, watched. A child that dies stops the whole system with its exit code and log tail."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from rtqis.errors import RtqisError
from rtqis.kafka.admin import create_topics
from rtqis.kafka.embedded import EmbeddedBroker
from rtqis.settings import Settings

__all__ = ["Child", "Supervisor"]

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )

    def tail(self, n: int = 15) -> str:
        try:
            with self.log_path.open("rb") as f:
                return b"".join(deque(f, maxlen=n)).decode("utf-8", "replace").rstrip()
        except OSError:
            return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killing it", self.name, timeout_s)
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def rss_mb(self) -> float:
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        try:
            return psutil.Process(self.proc.pid).memory_info().rss / 1e6
        except psutil.Error:
            return 0.0


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
        self.broker: EmbeddedBroker | None = None
        self.children: list[Child] = []
        self.stop_event = threading.Event()
        self.memory_report_s = 60.0
        self._warned_memory = False

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _child_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rtqis", *args]

    def plan(self) -> list[Child]:
        logs = self.settings.log_dir
        if self.source == "synthetic":
            producer = self._child_argv("produce", "synthetic")
        elif self.source == "binance":
            producer = self._child_argv("produce", "binance")
        elif self.source == "file":
            from rtqis.producers.files import inspect_file

            for p in self.paths:
                inspect_file(p)  # a bad file fails `up` before anything starts
            producer = self._child_argv("produce", "file", *self.paths, "--speed", self.speed)
        else:
            raise RtqisError(f"unknown source {self.source!r}")
        return [
            Child("producer", producer, logs / "producer.log"),
            Child("worker", self._child_argv("worker"), logs / "worker.log"),
            # live Binance: fill holes in the last 24 h of 1m candles from REST first (warns if offline)
            Child(
                "sink",
                self._child_argv("sink", *(["--backfill-hours", "24"] if self.source == "binance" else [])),
                logs / "sink.log",
            ),
            Child("ui", self._child_argv("ui"), logs / "ui.log"),  # the dashboard (panel serve)
        ]

    def start(self) -> None:
        s = self.settings
        s.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if s.embedded:
            self.broker = EmbeddedBroker(s.broker_host, s.broker_port, s.broker_bin, s.log_dir / "broker.log")
            self.broker.start()
            self.say(f"broker     embedded Tansu on {self.broker.bootstrap} (memory only; log {self.broker.log_path})")
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
            self.say(f"{child.name:<10} pid {child.proc.pid if child.proc else '?'}, log {child.log_path}")
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
            self.stop_event.set()

        signal.signal(signal.SIGINT, _handler)
        signal.signal(signal.SIGTERM, _handler)

    def _watch(self) -> int:
        next_mem = time.monotonic() + self.memory_report_s
        while not self.stop_event.wait(0.5):
            for child in self.children:
                code = child.proc.poll() if child.proc else None
                if code is not None:
                    self.say(f"\n{child.name} exited with code {code}; last lines of {child.log_path}:")
                    self.say(child.tail())
                    return code or 1
            if self.broker is not None and not self.broker.alive():
                self.say("\nthe embedded broker died; see " + str(self.broker.log_path))
                return 1
            if time.monotonic() >= next_mem:
                self.report_memory()
                next_mem += self.memory_report_s
        self.say("\nstopping ...")
        return 0

    def report_memory(self) -> None:
        parts = [f"{c.name} {c.rss_mb():.0f} MB" for c in self.children]
        if self.broker is not None:
            mb = self.broker.rss_bytes() / 1e6
            parts.insert(0, f"broker {mb:.0f} MB")
            limit = self.settings.broker_memory_limit_mb
            if mb > limit and not self._warned_memory:
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
