"""The sink's history server: readers query the process that owns the data (#22).

:class:`HistoryServer` listens on the Unix socket :func:`~rtqis.sinks.readers.socket_path` of the
database (the wire format and why are in :mod:`rtqis.sinks.readers`). Each connection gets a thread and
a read cursor of the sink's own DuckDB connection (:meth:`~rtqis.sinks.store.Store.reader`): DuckDB runs
it concurrently with the sink's writes and each query sees every batch committed before it started (a
batch and its offsets are one transaction, so a reader never sees half of one). Publishing new data
therefore costs nothing, and a query costs what it reads: the 24 h of candles and signals the
dashboard asks for, whatever the file holds.

Only :data:`~rtqis.sinks.readers.READ_METHODS` can be called, with JSON scalars as arguments (the
Store's queries take them as SQL parameters); requests are bounded (:data:`~rtqis.sinks.readers.MAX_REQUEST`);
an error is answered with its message and the connection stays usable. The socket's directory is
private (mode 0700) and nothing listens on a network port. A socket file left by a killed sink is
replaced by the next sink (it holds the database lock, so no other sink can be serving it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import logging
import os
import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from rtqis.sinks.readers import MAX_REQUEST, READ_METHODS, recv_exact
from rtqis.sinks.store import Store, StoreError

__all__ = ["HistoryServer"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")

_TRIM_BYTES = 1 << 20
"""An answer at least this large (bytes) is followed by :func:`_trim`."""


def _load_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library: nothing to do)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_MALLOC_TRIM = _load_trim()


def _trim() -> None:
    """Give the memory freed after a large answer back to the system (#22). Each reader connection is
    a thread, and glibc keeps what a thread freed in that thread's arena: without this the sink held
    ~100 MB more after a few 24 h reads (20 MB of signals each), RSS that grew over a day of dashboard
    reads though nothing was kept."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _answer(result: Any) -> tuple[bytes, bytes | memoryview]:
    """(tag, payload) of one method's result (a frame's Arrow IPC bytes are not copied: a day of
    signals is ~20 MB)."""
    if isinstance(result, pl.DataFrame):
        buf = io.BytesIO()
        result.write_ipc(buf)
        return b"D", buf.getbuffer()
    if isinstance(result, dict) and result and isinstance(next(iter(result)), tuple):  # load_offsets
        return b"J", orjson.dumps([[*k, v] for k, v in result.items()])
    return b"J", orjson.dumps(result)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        reader = self.server.store.reader()
        with self.server.lock:
            self.server.readers.add(reader)
        try:
            while True:
                try:
                    (n,) = _HEADER.unpack(recv_exact(sock, _HEADER.size))
                except (ConnectionError, OSError):
                    return
                if n > MAX_REQUEST:
                    self._send(sock, b"E", f"request of {n} bytes refused (at most {MAX_REQUEST})".encode())
                    return
                try:
                    req = orjson.loads(recv_exact(sock, n))
                    method, args = req["m"], req["a"]
                    if method not in READ_METHODS or not isinstance(args, list):
                        raise ValueError(f"unknown history method {str(method)[:40]!r}")
                    if any(isinstance(a, (dict, list)) for a in args):
                        raise ValueError("history arguments are strings and numbers")
                    tag, payload = _answer(getattr(reader, method)(*args))
                except (ConnectionError, OSError):
                    return
                except Exception as e:  # noqa: BLE001 - any failure is answered, the sink goes on
                    tag, payload = b"E", f"{type(e).__name__}: {e}".encode()[:4000]
                self._send(sock, tag, payload)
                if len(payload) >= _TRIM_BYTES:
                    del payload
                    _trim()
        finally:
            with self.server.lock:
                self.server.readers.discard(reader)
            reader.close()

    @staticmethod
    def _send(sock: socket.socket, tag: bytes, payload: bytes | memoryview) -> None:
        try:
            sock.sendall(tag + _HEADER.pack(len(payload)))
            sock.sendall(payload)
        except OSError:
            pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    store: Store
    readers: set[Store]
    lock: threading.Lock


class HistoryServer:
    """Serves read-only history queries on ``path`` from ``store`` (open read-write by this process) in
    a background thread, until :meth:`close`. Close it before the store."""

    def __init__(self, store: Store, path: Path) -> None:
        store.require_writable()
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if hasattr(os, "getuid") and self.path.parent.stat().st_uid != os.getuid():
            raise StoreError(f"{self.path.parent} belongs to another user: refusing to serve history there")
        os.chmod(self.path.parent, 0o700)
        self.path.unlink(missing_ok=True)  # left by a killed sink of this database
        self._srv = _Server(str(self.path), _Handler)
        self._srv.store = store
        self._srv.readers = set()
        self._srv.lock = threading.Lock()
        self._thread = threading.Thread(target=self._srv.serve_forever, args=(0.2,), name="history", daemon=True)
        self._thread.start()
        log.info("serving history to readers on %s", self.path)

    def use(self, store: Store) -> None:
        """Serve from ``store`` from now on (the sink reopened its store after DuckDB dropped the
        connection, :class:`~rtqis.sinks.writer.StoreWriter`). Open connections keep cursors of the old
        one: they are closed, so those readers get an error answer and connect again."""
        store.require_writable()
        with self._srv.lock:
            readers, self._srv.readers = list(self._srv.readers), set()
            self._srv.store = store
        for r in readers:
            try:
                r.close()
            except Exception:  # noqa: BLE001 - a cursor of a connection DuckDB already invalidated
                log.debug("closing a reader of the old store", exc_info=True)

    def close(self) -> None:
        """Stop listening and remove the socket file (idempotent)."""
        if self._thread.is_alive():
            self._srv.shutdown()
            self._thread.join(5)
        self._srv.server_close()
        with self._srv.lock:  # the cursors must not outlive the store's connection
            readers, self._srv.readers = list(self._srv.readers), set()
        for r in readers:
            r.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> HistoryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
