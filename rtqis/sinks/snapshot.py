"""Consistent copies of the live database while the sink writes it (a backup, an offline analysis).

Readers no longer use them (#22): the running sink answers history queries itself
(:mod:`rtqis.sinks.serve`), because a copy costs the size of all history and blocks writes while it
runs. What follows is why a copy must be made this way.

DuckDB allows ONE process to open a file read-write, and while it does, a read-only open from another
process fails ("Could not set lock on file"). So :func:`publish_snapshot` checkpoints, copies the
file, verifies the copy and moves it in place (atomic ``os.replace``); :func:`open_snapshot` opens it
read-only (many readers at once). A reader sees the data as of the copy; it re-opens to see a newer
one (an open handle keeps the file it opened, POSIX rename semantics). The copy runs under the writer's
lock, so writes wait for it.

DuckDB's file lock is a POSIX ``fcntl`` lock, which the OS drops as soon as the owning process closes ANY
descriptor of that file: the writer process must never open the live file by other means (``shutil.copy``,
``open()``); the copy reads through the descriptor the Store keeps open until it closes
(:meth:`~rtqis.sinks.store.Store.checkpointed`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import duckdb

from rtqis.sinks.store import Store, StoreError

__all__ = ["MIN_FREE_AFTER_SNAPSHOT", "open_snapshot", "publish_snapshot"]

log = logging.getLogger(__name__)

#: bytes that must stay free on the snapshot's filesystem after the copy (room for the live database)
MIN_FREE_AFTER_SNAPSHOT = 1 << 20


def publish_snapshot(store: Store, dst_path: str | Path) -> Path:
    """Publish a consistent read-only copy of ``store`` (open read-write) at ``dst_path``; return it.

    Checkpoint (so the file alone holds every committed row), copy it to a temporary file next to
    ``dst_path`` while holding the write lock (no write can interleave), fsync, open the copy once to
    check it, then ``os.replace`` it over ``dst_path``: readers see the old or the new snapshot, never
    a partial one. Writes wait while the file is copied (about 0.1 s per 50 MB on a local disk).

    A copy that would leave less than :data:`MIN_FREE_AFTER_SNAPSHOT` bytes free is not started (the
    live database needs that room more than readers need a fresh copy); a full or read-only disk raises
    :class:`StoreError` in one line and leaves no partial file. On a full disk the checkpoint itself can
    fail, and DuckDB then invalidates the store's connection: the writer reopens it (see the sink).
    """
    store.require_writable()
    dst = Path(dst_path)
    if dst.resolve() == store.path.resolve():
        raise StoreError("the snapshot path must differ from the database path")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    try:
        with store.checkpointed() as fd:
            _check_room(fd, dst.parent)
            _copy_fd_to(fd, tmp)
        with Store(tmp, read_only=True):
            pass
        os.replace(tmp, dst)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):  # a full or read-only disk: one line, the partial copy removed
            raise StoreError(f"snapshot {dst} not written: {e.strerror or e}") from None
        if isinstance(e, duckdb.Error):  # the checkpoint failed (on a full disk DuckDB drops the connection)
            raise StoreError(f"snapshot {dst} not written: checkpoint of {store.path} failed: {e}") from None
        raise
    _fsync_dir(dst.parent)
    log.debug("snapshot %s published in %.3f s", dst, time.perf_counter() - t0)
    return dst


def _check_room(src_fd: int, dst_dir: Path) -> None:
    """Raise :class:`StoreError` if copying the file behind ``src_fd`` into ``dst_dir`` would leave less
    than :data:`MIN_FREE_AFTER_SNAPSHOT` bytes free (a copy replacing an older snapshot frees that one
    only after the rename, so the whole size is needed)."""
    size = os.fstat(src_fd).st_size
    free = shutil.disk_usage(dst_dir).free
    if free - size < MIN_FREE_AFTER_SNAPSHOT:
        raise StoreError(
            f"snapshot not written: it needs {size} bytes and {free} are free in {dst_dir} "
            f"(at least {MIN_FREE_AFTER_SNAPSHOT} must stay free for the database)"
        )


def open_snapshot(path: str | Path) -> Store:
    """Open a snapshot published by :func:`publish_snapshot` for reading (many readers may)."""
    return Store(path, read_only=True)


def _copy_fd_to(src_fd: int, dst: Path) -> None:
    """Copy the whole file behind ``src_fd`` to ``dst`` and fsync it, without moving or closing ``src_fd``."""
    size = os.fstat(src_fd).st_size
    with dst.open("wb") as out:
        done = 0
        try:
            while done < size:  # in-kernel copy (and a reflink where the filesystem can)
                n = os.copy_file_range(src_fd, out.fileno(), size - done, done)
                if n <= 0:
                    break
                done += n
        except (AttributeError, OSError):  # not Linux, or not between these filesystems
            pass
        out.seek(done)
        while done < size:
            chunk = os.pread(src_fd, min(8 << 20, size - done), done)
            if not chunk:
                raise StoreError(f"snapshot copy: the database file shrank while copying ({done} of {size} bytes)")
            out.write(chunk)
            done += len(chunk)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every platform can fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
