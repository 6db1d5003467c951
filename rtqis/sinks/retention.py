"""Retention and disk use of the store, applied by the running sink without stopping it (#22).

Per kind, a number of days kept (settings; 0 = forever): ``RTQIS_RETAIN_TICKS_DAYS`` (trades, default
7), ``RTQIS_RETAIN_BOOK_DAYS`` (book tickers, 7), ``RTQIS_RETAIN_SIGNALS_DAYS`` (pair signals, ADF
results and alerts, forever) and ``RTQIS_RETAIN_CANDLES_DAYS`` (candles, forever). Days are counted back
from the store's **event clock** - the newest trade time it holds (:mod:`rtqis.sinks.marks`) - not from
the wall clock, so a replay of 2024 data keeps its week instead of being deleted as it is written;
without trades nothing is deleted. The high-water marks that de-duplicate the tick archive live in
their own table (``tick_marks``, :mod:`rtqis.sinks.marks`): deleting every tick of a quiet symbol keeps
its marks, so its old ticks re-published after a restart are still skipped.

:class:`Housekeeper` runs in the sink's loop: every ``every_s`` (60 s) one ``DELETE`` per kind with a
retention, in its own transaction (rows only ever leave whole time ranges, so it never touches the
offsets' effectively-once argument: a deleted row is older than anything a restart re-reads). Once a
minute a pass removes about a minute of data, a few milliseconds of the write lock; the first pass on
an archive older than its retention deletes the backlog at once. DuckDB reuses the freed blocks, so the
file stops growing at about the retention window's size (it does not shrink: ``CHECKPOINT`` and a
copy would, at the cost of a whole-file write).

Disk use (:func:`disk_use`: the database and its WAL, the free space of their file system) is logged
every ``report_s`` (10 min) and a warning is logged on every pass while the free space is below
``RTQIS_DISK_WARN_FREE_MB``: the sink stops being able to commit when the disk is full.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rtqis.settings import Settings
from rtqis.sinks.schema import ADF_RESULTS, ALERTS, BOOK_TICKERS, CANDLES, SIGNALS, TRADES, Table
from rtqis.sinks.store import Store

__all__ = ["DiskUse", "Housekeeper", "apply_retention", "disk_use", "retention_rules"]

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000


@dataclass(frozen=True)
class DiskUse:
    """Bytes of the database file and its WAL, and of the file system that holds them."""

    db_bytes: int
    free_bytes: int
    total_bytes: int

    def line(self) -> str:
        """One line for logs and status: ``store 812 MB, disk 41.2 GB free of 100.0 GB``."""
        return (
            f"store {self.db_bytes / 1e6:,.0f} MB, disk {self.free_bytes / 1e9:,.1f} GB free"
            f" of {self.total_bytes / 1e9:,.1f} GB"
        )


def disk_use(db_path: Path) -> DiskUse:
    """The disk use of the store at ``db_path`` (its file and WAL; 0 if absent)."""
    size = sum(p.stat().st_size for p in (db_path, db_path.with_name(db_path.name + ".wal")) if p.exists())
    du = shutil.disk_usage(db_path.parent if db_path.parent.exists() else Path("."))
    return DiskUse(size, du.free, du.total)


def retention_rules(settings: Settings) -> list[tuple[Table, str, float]]:
    """(table, time column, days kept) of every kind with a retention (days > 0)."""
    rules = [
        (TRADES, "trade_time", settings.retain_ticks_days),
        (BOOK_TICKERS, "recv_time", settings.retain_book_days),
        (SIGNALS, "time", settings.retain_signals_days),
        (ADF_RESULTS, "time", settings.retain_signals_days),
        (ALERTS, "time", settings.retain_signals_days),
        (CANDLES, "open_time", settings.retain_candles_days),
    ]
    return [(t, col, d) for t, col, d in rules if d > 0]


def apply_retention(store: Store, settings: Settings) -> dict[str, int]:
    """Delete what is older than its kind's retention, counted back from the store's event clock;
    ``{table: rows deleted}`` (empty without a clock)."""
    clock = max(store.tick_marks().trade_time.values(), default=None)
    if clock is None:
        return {}
    out: dict[str, int] = {}
    for table, col, days in retention_rules(settings):
        out[table.name] = store.delete_older(table, col, clock - int(days * _DAY_MS))
    return out


@dataclass
class Housekeeper:
    """Retention every ``every_s`` and a disk-use line every ``report_s``, from the sink's loop
    (:meth:`run_due`); a warning on each pass while the disk is short of ``settings.disk_warn_free_mb``."""

    settings: Settings
    store: Store
    every_s: float = 60.0
    report_s: float = 600.0
    deleted: dict[str, int] = field(default_factory=dict)
    last_use: DiskUse | None = None
    _next: float = 0.0
    _next_report: float = 0.0

    def run_due(self, now: float | None = None) -> None:
        """One pass if it is due (``now``: a ``time.monotonic()`` value)."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return
        self._next = now + self.every_s
        for name, n in apply_retention(self.store, self.settings).items():
            if n:
                self.deleted[name] = self.deleted.get(name, 0) + n
                log.info("retention: %d %s rows deleted", n, name)
        self.last_use = use = disk_use(self.store.path)
        if use.free_bytes < self.settings.disk_warn_free_mb * 1_000_000:
            log.warning(
                "disk almost full: %s (warning below %d MB free); the sink cannot store anything once it is"
                " full: free space or lower RTQIS_RETAIN_TICKS_DAYS",
                use.line(),
                self.settings.disk_warn_free_mb,
            )
        elif now >= self._next_report:
            log.info("%s", use.line())
        if now >= self._next_report:
            self._next_report = now + self.report_s
