"""Readers served by the process that owns the data (#22): the sink's history server answers what a
read-only Store would, sees every committed batch at once (no snapshot copy), refuses anything but
its read methods, and open_history picks the server or the file. No broker is needed."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import polars as pl
import polars.testing
import pytest

from rtqis.errors import RtqisError
from rtqis.sinks.history import open_history
from rtqis.sinks.readers import HistoryClient, socket_path
from rtqis.sinks.serve import HistoryServer
from rtqis.sinks.sink import sink_paths
from rtqis.sinks.store import Store, StoreError
from tests.conftest import make_settings
from tests.test_store import T0, adf, alert, book_frame, candle, signal, trade_frame

PAIR = "BTCUSDT/ETHUSDT"


def fill(st: Store) -> None:
    st.write_batch(
        candles=[candle(T0 + i * 60_000) for i in range(5)],
        trades=[trade_frame("BTCUSDT", 0, 50)],
        books=[book_frame("BTCUSDT", 0, 10)],
        signals=[signal(T0 + i) for i in range(3)],
        adf=[adf(T0)],
        alerts=[alert(T0, "x")],
        offsets={("ticks.trade", 0): 7},
    )


def test_the_server_answers_what_the_store_would(tmp_path: Path) -> None:
    with Store(tmp_path / "db.duckdb") as st:
        fill(st)
        path = socket_path(st.path)
        with HistoryServer(st, path), HistoryClient(path) as c:
            pl.testing.assert_frame_equal(
                c.candles("BTCUSDT", "1m", T0, T0 + 180_000), st.candles("BTCUSDT", "1m", T0, T0 + 180_000)
            )
            pl.testing.assert_frame_equal(c.candles("BTCUSDT", "1m"), st.candles("BTCUSDT", "1m"))
            pl.testing.assert_frame_equal(c.signals(PAIR), st.signals(PAIR))
            pl.testing.assert_frame_equal(c.adf(PAIR), st.adf(PAIR))
            pl.testing.assert_frame_equal(c.alerts(PAIR), st.alerts(PAIR))
            pl.testing.assert_frame_equal(c.trades("BTCUSDT", T0 + 10, T0 + 20), st.trades("BTCUSDT", T0 + 10, T0 + 20))
            pl.testing.assert_frame_equal(c.book_tickers("BTCUSDT"), st.book_tickers("BTCUSDT"))
            assert c.counts() == st.counts()
            assert c.load_offsets() == st.load_offsets() == {("ticks.trade", 0): 7}
            assert c.missing_minutes("BTCUSDT", T0, T0 + 600_000) == st.missing_minutes("BTCUSDT", T0, T0 + 600_000)
            assert c.signals("NOPE/NOPE").height == 0
        assert not path.exists()  # removed on close


def test_a_committed_batch_is_visible_to_the_next_query_while_writes_go_on(tmp_path: Path) -> None:
    with Store(tmp_path / "db.duckdb") as st:
        path = socket_path(st.path)
        with HistoryServer(st, path), HistoryClient(path) as c:
            assert c.counts()["trades"] == 0
            seen: list[tuple[int, int]] = []
            stop = threading.Event()

            def read() -> None:
                while not stop.is_set():
                    with HistoryClient(path) as r:
                        n = r.counts()["trades"]
                        offs = r.load_offsets()
                    seen.append((n, offs.get(("t", 0), 0)))

            t = threading.Thread(target=read)
            t.start()
            for b in range(20):  # rows and offsets in one transaction: a reader sees both or neither
                st.write_batch(trades=[trade_frame("BTCUSDT", b * 100, 100)], offsets={("t", 0): (b + 1) * 100})
                assert c.counts()["trades"] == (b + 1) * 100  # at once: no snapshot to wait for
            stop.set()
            t.join(10)
            assert seen and all(n <= o for n, o in seen)  # offsets read after the rows: never behind them
            assert all(n % 100 == 0 for n, _ in seen)  # never half a batch


def test_the_server_refuses_anything_but_its_read_methods(tmp_path: Path) -> None:
    with Store(tmp_path / "db.duckdb") as st:
        fill(st)
        path = socket_path(st.path)
        with HistoryServer(st, path), HistoryClient(path) as c:
            for method, args in (("write_batch", []), ("close", []), ("_c", []), ("candles", [{"x": 1}])):
                with pytest.raises(StoreError):
                    c._call(method, *args)
            with pytest.raises(StoreError, match="IntervalError|Error"):
                c._call("candles", "BTCUSDT")  # a missing argument: answered, the connection stays usable
            assert c.counts()["candles"] == 5
            # an oversized request is refused before it is read
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.connect(str(path))
                raw.sendall(struct.pack(">I", 10**9))
                tag = raw.recv(1)
                assert tag == b"E"
            # garbage that is not JSON: an error answer, not a dead server
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.connect(str(path))
                raw.sendall(struct.pack(">I", 5) + b"\x00\xff{[x")
                assert raw.recv(1) == b"E"
            assert c.counts()["candles"] == 5
        assert st.counts()["candles"] == 5  # and nothing was written


def test_open_history_asks_the_running_sink_else_opens_the_file(tmp_path: Path) -> None:
    s = make_settings("localhost:1", tmp_path)
    with pytest.raises(RtqisError, match="no candle history yet"):
        open_history(s)
    live, sock = sink_paths(s)
    assert sock == socket_path(live) and len(str(sock)) < 100  # a Unix socket path must be short
    with Store(live) as st:
        fill(st)
        # the file is held and nobody answers: a bounded wait, then one clear line
        t0 = time.monotonic()
        with pytest.raises(RtqisError, match="does not answer history queries"):
            open_history(s, wait_s=0.3)
        assert time.monotonic() - t0 < 5
        with HistoryServer(st, sock), open_history(s) as r:
            assert isinstance(r, HistoryClient) and r.counts()["candles"] == 5
            st.write_batch(candles=[candle(T0 + 3600_000)])
            assert r.candles("BTCUSDT", "1m").height == 6
    # no sink: the file, read-only
    with open_history(s) as r:
        assert isinstance(r, Store) and r.read_only and r.counts()["candles"] == 6
    # a socket file left by a killed sink does not stand in the way
    sock.parent.mkdir(parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()
    assert sock.exists()
    with open_history(s) as r:
        assert isinstance(r, Store) and r.counts()["candles"] == 6
    with Store(live) as st, HistoryServer(st, sock), open_history(s) as r:  # the next sink replaces it
        assert isinstance(r, HistoryClient)
