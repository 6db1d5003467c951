"""How readers (the dashboard, the CLI) read history while the sink writes it: the client side.

DuckDB lets one process open a file for writing, and then nobody else can open it, not even read-only.
Until #22 the sink copied the WHOLE file to a snapshot every 5 s (a cost linear in all history, paid
17,280 times a day, under the write lock). Now the process that owns the data answers the readers: the
sink serves history queries on a Unix socket (:mod:`rtqis.sinks.serve`) from read cursors of its own
DuckDB connection, so publishing new data costs nothing (a committed batch is visible to the next query)
and a query costs what it reads, not what the file holds.

* :class:`HistoryReader` is the one seam: the read methods the dashboard and the CLI use. A
  :class:`~rtqis.sinks.store.Store` opened read-only (no sink running) and a :class:`HistoryClient`
  (a sink running) both have them; :func:`rtqis.sinks.history.open_history` picks one.
* The socket lives in a private directory (``$TMPDIR/rtqis-<uid>``, mode 0700; a Unix socket path is
  limited to ~100 bytes, so it is not next to the database) under a name derived from the database's
  absolute path (:func:`socket_path`): the sink and its readers find the same one, two data
  directories never share one. Nothing listens on a network port.
* Wire format, one request at a time per connection: request = 4-byte big-endian length + JSON
  ``{"m": method, "a": [args]}`` (at most :data:`MAX_REQUEST` bytes); answer = 1 tag byte (``D``: a
  polars DataFrame in Arrow IPC, ``J``: JSON, ``E``: an error message) + 4-byte length + payload.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import struct
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import orjson
import polars as pl

from rtqis.sinks.schema import StoreError

__all__ = ["MAX_REQUEST", "READ_METHODS", "HistoryClient", "HistoryReader", "recv_exact", "socket_path"]

MAX_REQUEST = 64 * 1024
"""Largest request the sink reads (bytes): a request is a method name and a few numbers."""

READ_METHODS: tuple[str, ...] = (
    "candles",
    "signals",
    "adf",
    "alerts",
    "trades",
    "book_tickers",
    "counts",
    "load_offsets",
    "missing_minutes",
)
"""The :class:`~rtqis.sinks.store.Store` methods a reader may call through the socket (nothing else)."""

_HEADER = struct.Struct(">I")


class HistoryReader(Protocol):
    """What the dashboard and the CLI read history through (a read-only Store or a :class:`HistoryClient`).

    Times are epoch ms UTC, ranges half-open ``[start_ms, end_ms)``; frames are sorted by time."""

    def candles(
        self, symbol: str, interval: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> pl.DataFrame: ...
    def signals(self, pair: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame: ...
    def adf(self, pair: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame: ...
    def alerts(self, pair: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame: ...
    def trades(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame: ...
    def book_tickers(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame: ...
    def counts(self) -> dict[str, int]: ...
    def load_offsets(self) -> dict[tuple[str, int], int]: ...
    def missing_minutes(self, symbol: str, start_ms: int, end_ms: int) -> list[tuple[int, int]]: ...
    def close(self) -> None: ...
    def __enter__(self) -> HistoryReader: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def socket_path(db_path: Path) -> Path:
    """The Unix socket on which the sink of ``db_path`` serves its readers (see the module docstring)."""
    key = hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:20]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"rtqis-{uid}" / f"{key}.sock"


def recv_exact(sock: socket.socket, n: int) -> bytearray:
    """Exactly ``n`` bytes from ``sock``, received in place (an answer can be tens of MB: no chunk
    joining, no copies); :class:`ConnectionError` if the peer closes first."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], min(n - got, 1 << 20))
        if not k:
            raise ConnectionError("the peer closed the connection")
        got += k
    return buf


class HistoryClient:
    """A :class:`HistoryReader` answered by the running sink over its socket (:mod:`rtqis.sinks.serve`).

    Connecting raises :class:`OSError` when no sink listens (a socket file left by a killed sink)."""

    def __init__(self, path: Path, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout_s)
            self._sock.connect(str(self.path))
        except OSError:
            self._sock.close()
            raise

    def _call(self, method: str, *args: Any) -> Any:
        if self._sock is None:
            raise StoreError(f"history client {self.path} is closed")
        req = orjson.dumps({"m": method, "a": list(args)})
        try:
            self._sock.sendall(_HEADER.pack(len(req)) + req)
            tag = recv_exact(self._sock, 1)
            (n,) = _HEADER.unpack(recv_exact(self._sock, _HEADER.size))
            payload = recv_exact(self._sock, n)
        except OSError as e:
            raise StoreError(f"the sink stopped answering on {self.path}: {e}") from e
        if tag == b"D":
            return pl.read_ipc(io.BytesIO(payload))
        if tag == b"J":
            return orjson.loads(payload)
        raise StoreError(payload.decode(errors="replace"))

    def candles(
        self, symbol: str, interval: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> pl.DataFrame:
        """See :meth:`rtqis.sinks.store.Store.candles`."""
        df: pl.DataFrame = self._call("candles", symbol, interval, start_ms, end_ms)
        return df

    def signals(self, pair: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """See :meth:`rtqis.sinks.store.Store.signals`."""
        df: pl.DataFrame = self._call("signals", pair, start_ms, end_ms)
        return df

    def adf(self, pair: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """See :meth:`rtqis.sinks.store.Store.adf`."""
        df: pl.DataFrame = self._call("adf", pair, start_ms, end_ms)
        return df

    def alerts(self, pair: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """See :meth:`rtqis.sinks.store.Store.alerts`."""
        df: pl.DataFrame = self._call("alerts", pair, start_ms, end_ms)
        return df

    def trades(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """See :meth:`rtqis.sinks.store.Store.trades` (a range at a time: a day is ~1 GB as a frame)."""
        df: pl.DataFrame = self._call("trades", symbol, start_ms, end_ms)
        return df

    def book_tickers(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> pl.DataFrame:
        """See :meth:`rtqis.sinks.store.Store.book_tickers`."""
        df: pl.DataFrame = self._call("book_tickers", symbol, start_ms, end_ms)
        return df

    def counts(self) -> dict[str, int]:
        """See :meth:`rtqis.sinks.store.Store.counts`."""
        return {str(k): int(v) for k, v in self._call("counts").items()}

    def load_offsets(self) -> dict[tuple[str, int], int]:
        """See :meth:`rtqis.sinks.store.Store.load_offsets`."""
        return {(str(t), int(p)): int(o) for t, p, o in self._call("load_offsets")}

    def missing_minutes(self, symbol: str, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """See :meth:`rtqis.sinks.store.Store.missing_minutes`."""
        return [(int(a), int(b)) for a, b in self._call("missing_minutes", symbol, start_ms, end_ms)]

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> HistoryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HistoryClient({str(self.path)!r})"
