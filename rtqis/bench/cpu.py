"""Where the CPU goes in a benchmark run, and which partitions each worker held.

:class:`CpuMeter` reads the CPU time (user + system, s) of every process of a run — the producer (this
process), the broker when it listens on this machine, each worker, the sink — from ``/proc`` through
psutil, at the start and end of the run. On a machine of N cores the run cannot go faster than
``total CPU s / N`` of wall time: that is the ceiling the ``scale`` section reports.

:func:`assigned_partitions` reads a worker's partitions of a topic from its log (Faust logs every
assignment as a table); :func:`worker_shares` turns them into each worker's share of the input.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import psutil

from rtqis.kafka.offsets import topic_offsets
from rtqis.settings import Settings
from rtqis.topics import TRADES

__all__ = ["CpuMeter", "assigned_partitions", "broker_pid", "cpu_seconds", "worker_shares"]

log = logging.getLogger(__name__)

#: the line before each assignment table in a Faust worker's log
ASSIGNED_MARK = "Setting newly assigned partitions"
_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*\{([\d, -]*)\}\s*\|", re.M)


def _partition_set(text: str) -> set[int]:
    """Faust's partition set text, e.g. ``0-2, 5`` -> {0, 1, 2, 5}."""
    out: set[int] = set()
    for item in text.split(","):
        a, _, b = item.strip().partition("-")
        if a:
            out |= set(range(int(a), int(b or a) + 1))
    return out


def assigned_partitions(worker_log: str, topic: str) -> set[int] | None:
    """The partitions of ``topic`` (full name) in the last assignment of a Faust worker's log; None
    before its first assignment, an empty set when it got none of that topic."""
    last = worker_log.rfind(ASSIGNED_MARK)
    if last < 0:
        return None
    for name, parts in _ROW.findall(worker_log[last:]):
        if name == topic:
            return _partition_set(parts)
    return set()


def worker_shares(settings: Settings, logs: list[Path | None]) -> list[dict[str, Any]]:
    """Per worker (by its log): its ticks.trade partitions and the share of the topic's messages (frames)
    in them. A hash of few keys over few partitions can leave one worker most of the work."""
    topic = TRADES.full_name(settings.namespace)
    ends = {r.partition: r.end - r.earliest for r in topic_offsets(settings, [topic])}
    total = sum(ends.values()) or 1
    out = []
    for path in logs:
        text = path.read_text(errors="replace") if path is not None and path.exists() else ""
        parts = assigned_partitions(text, topic) or set()
        out.append({"partitions": sorted(parts), "share": sum(ends.get(p, 0) for p in parts) / total})
    return out


def broker_pid(bootstrap: str) -> int | None:
    """The pid of the process listening on the first bootstrap address's port on this machine, or None
    (a remote broker, or not allowed to see it)."""
    port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return int(c.pid)
    except (psutil.AccessDenied, PermissionError):
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far; None when it is gone."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return None
    # a child of a child (e.g. Kafka's JVM under a launcher) is not counted: the broker is found by port
    return float(t.user + t.system)


class CpuMeter:
    """CPU seconds of the run's processes between :meth:`start` and :meth:`stop` (the producer's, i.e.
    this process's, up to :meth:`mark`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pids: dict[str, int] = {}
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self, pids: dict[str, int | None]) -> None:
        """Start counting for ``pids`` (name -> pid), the broker found by its port, and this process."""
        b = broker_pid(self.settings.bootstrap)
        named = {"producer": psutil.Process().pid, **({"broker": b} if b else {}), **pids}
        self.pids = {k: v for k, v in named.items() if v is not None}
        self.before = self._now()

    def _now(self) -> dict[str, float]:
        return {k: c for k, pid in self.pids.items() if (c := cpu_seconds(pid)) is not None}

    def idle(self, seconds: float) -> dict[str, float]:
        """CPU % of one core per process over ``seconds`` of no input (call after :meth:`start`, before
        the feed): what the processes cost by the clock alone (fetch polls, heartbeats, timers)."""
        a = self._now()
        time.sleep(seconds)
        b = self._now()
        self.before = b
        return {k: round(100 * (b[k] - a[k]) / seconds, 1) for k in a if k in b and k != "producer"}

    def mark(self, name: str) -> None:
        """Stop counting ``name`` now (the producer once it has sent everything)."""
        now = cpu_seconds(self.pids[name])
        if now is not None and name in self.before:
            self.used[name] = now - self.before[name]

    def stop(self) -> dict[str, float]:
        """CPU seconds per process since :meth:`start` (those already marked keep their figure), and
        ``total``."""
        for name, pid in self.pids.items():
            if name in self.used or name not in self.before:
                continue
            now = cpu_seconds(pid)
            if now is not None:
                self.used[name] = now - self.before[name]
        return self.used | {"total": sum(self.used.values())}
