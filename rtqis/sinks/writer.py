"""The sink's store when the disk refuses a write: hold, pause, say why once, retry, resume.

A full disk, a read-only remount or an I/O error must neither crash-loop the sink nor lose a batch, and
Kafka offsets must move only after a successful write (the sink stores them with the rows, and commits
them to Kafka after). :class:`StoreWriter` wraps the sink's :class:`~rtqis.sinks.store.Store` for that.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from confluent_kafka import Consumer

from rtqis.sinks.store import Store, StoreError

__all__ = ["WRITE_RETRY_S", "StoreWriter", "free_bytes"]

log = logging.getLogger(__name__)

#: seconds between two tries of a write the disk refused
WRITE_RETRY_S = 2.0
#: what a write refused by the disk raises (DuckDB's IO/Fatal errors come wrapped or bare)
_DISK_ERRORS = (StoreError, OSError, duckdb.Error)


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem of ``path`` (its nearest existing parent); None if unknown."""
    for p in (path, *path.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


class StoreWriter:
    """The sink's store, and what happens when the disk refuses a write (full, read-only, I/O error).

    The failed batch is held as it is (rows and offsets: nothing is committed to Kafka or DuckDB), the
    consumer's partitions are paused (memory stays bounded, the group membership stays alive) and ONE
    error line says what, where and how many bytes are free. The write is tried again every ``retry_s``;
    when DuckDB invalidated its connection (a failed checkpoint is fatal to it) the store is reopened
    first. Once a write succeeds, one line says so and consumption resumes where it stopped: nothing
    is lost or stored twice (the batch's offsets are stored with its rows, as always).
    """

    def __init__(self, path: Path, store: Store, memory_mb: int | None, retry_s: float = WRITE_RETRY_S) -> None:
        self.path = path
        self.store: Store | None = store
        self.memory_mb = memory_mb
        self.retry_s = retry_s
        self.failing_since: float | None = None
        self.next_try = 0.0

    @property
    def held(self) -> bool:
        """True while a write is held because the disk refused it."""
        return self.failing_since is not None

    def ready(self) -> bool:
        """Whether a write may be tried now (always, unless one is held and its retry is not due)."""
        return self.failing_since is None or time.monotonic() >= self.next_try

    def flush(self, c: Consumer, write: Callable[[Store], None], rows: int, *, last: bool = False) -> bool:
        """``write(store)`` a batch of ``rows`` rows (which commits its offsets after the write); False
        (batch held, ``c`` paused unless this is the ``last`` write before stopping) if the disk refused."""
        try:
            write(self._open())
        except _DISK_ERRORS as e:
            self._failed(e, c, rows, last)
            return False
        if self.failing_since is not None:
            log.warning(
                "%s accepts writes again after %.0f s: the held %d rows are stored, consuming again",
                self.path,
                time.monotonic() - self.failing_since,
                rows,
            )
            self.failing_since = None
            if not last:
                c.resume(c.assignment())
        return True

    def close(self) -> None:
        if self.store is not None:
            try:
                self.store.close()
            except duckdb.Error as e:  # closing checkpoints: a full disk refuses it, the WAL keeps the rows
                log.warning("closing %s: %s (the write-ahead log keeps what was committed)", self.path, _one_line(e))
            self.store = None

    def _open(self) -> Store:
        if self.store is None:
            self.store = Store(self.path, memory_mb=self.memory_mb)
        return self.store

    def _check_connection(self) -> None:
        """Drop the store if DuckDB invalidated its connection (it is reopened before the next write)."""
        if self.store is None:
            return
        try:
            self.store.load_offsets()
        except _DISK_ERRORS:
            log.info("reopening %s: DuckDB invalidated its connection", self.path)
            self.close()

    def _failed(self, e: BaseException, c: Consumer, rows: int, last: bool) -> None:
        now = time.monotonic()
        self.next_try = now + self.retry_s
        self._check_connection()
        if self.failing_since is not None:
            log.debug("write to %s refused again: %s", self.path, _one_line(e))
            return
        self.failing_since = now
        log.error(
            "cannot write %d rows to %s: %s; %s bytes free there: holding them, not consuming and not "
            "committing offsets, trying again every %.0f s",
            rows,
            self.path,
            _one_line(e),
            free_bytes(self.path.parent),
            self.retry_s,
        )
        if not last:
            c.pause(c.assignment())


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
