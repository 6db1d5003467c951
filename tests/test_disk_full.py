"""Disk full / unwritable DuckDB path (#21): the sink holds its batch, stops consuming and committing, says
why in one line, and resumes losing nothing when space returns; an unwritable data dir at start is one
line and a non-zero exit; a snapshot on a full disk leaves no partial file.

The data directory is a small tmpfs mounted for the test (we run as root here); without permission to
mount, the tests are skipped saying so.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtqis.kafka.admin import create_topics
from rtqis.kafka.offsets import topic_offsets
from rtqis.settings import Settings
from rtqis.sinks.history import open_history
from rtqis.sinks.sink import sink_group, sink_paths
from rtqis.sinks.snapshot import publish_snapshot
from rtqis.sinks.store import Store, StoreError
from rtqis.topics import TRADES
from tests.conftest import Procs, env_of, make_settings, wait_until
from tests.test_candles_pipeline import UM_ETH
from tests.test_cli import assert_one_line_error, run_cli

N_TRADES = len(gzip.decompress(UM_ETH.read_bytes()).splitlines()) - 1  # header


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` at ``path`` for the block; skips the test if mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_mb}M" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> Path:
    """Fill the filesystem of ``path`` to the last byte with one file; return it."""
    filler = path / "filler.bin"
    chunk = b"\0" * (1 << 16)
    with filler.open("wb", buffering=0) as f:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    f.write(chunk[:size])
            except OSError:
                pass
    return filler


def test_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", 1, read_only=True) as ro:
        s = make_settings("127.0.0.1:1", ro / "data")
        r = run_cli("sink", env=env_of(s), timeout=60)
        assert_one_line_error(r, str(ro / "data"), "Read-only file system")
        s = make_settings("127.0.0.1:1", ro)  # the directory exists, the database cannot be created in it
        r = run_cli("sink", env=env_of(s), timeout=60)
        assert_one_line_error(r, str(sink_paths(s)[0]))


def test_snapshot_on_a_full_disk_leaves_no_partial_file(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", 4) as d:
        store = Store(d / "live.duckdb")
        try:
            filler = fill(d)
            with pytest.raises(StoreError, match="snapshot") as e:
                publish_snapshot(store, d / "snap.duckdb")
            assert "\n" not in str(e.value)
            assert not [p.name for p in d.iterdir() if "snap" in p.name]  # no partial copy
            filler.unlink()
            store.close()
            store = Store(d / "live.duckdb")  # DuckDB may have dropped the connection at the checkpoint
            publish_snapshot(store, d / "snap.duckdb")
            with Store(d / "snap.duckdb", read_only=True) as snap:
                assert snap.counts()["trades"] == 0
        finally:
            store.close()


def _stored_trades(s: Settings) -> int:
    """Trades in the tick archive, read from the running sink (the archive drops re-published ids, so
    the count equal to the file's trades is every trade, once); 0 before the sink answers."""
    try:
        with open_history(s) as st:
            return st.counts()["trades"]
    except Exception:  # noqa: BLE001 - no sink answering yet
        return 0


def test_sink_holds_on_a_full_disk_and_resumes_losing_nothing(bootstrap: str, tmp_path: Path, procs: Procs) -> None:
    with tmpfs(tmp_path / "data", 24) as data:
        s = make_settings(bootstrap, data, candle_grace_ms=0, frame_max_ticks=50)
        create_topics(s)
        sink = procs.start(s, "sink", name="sink")
        try:
            sock = sink_paths(s)[1]
            wait_until(sock.exists, 60, "the sink serving readers")
            filler = fill(data)
            assert run_cli("produce", "file", str(UM_ETH), env=env_of(s), timeout=120).returncode == 0
            wait_until(lambda: "cannot write" in procs.log_of(sink), 60, "the sink to say it cannot write")
            log = procs.log_of(sink)
            line = next(x for x in log.splitlines() if "cannot write" in x)
            assert str(sink_paths(s)[0]) in line and "bytes free" in line and "No space left" in line, line
            time.sleep(5)  # two retries: still held, one error line, no crash, nothing committed
            assert sink.poll() is None
            assert procs.log_of(sink).count("cannot write") == 1
            assert "Traceback" not in procs.log_of(sink)
            rows = topic_offsets(s, [TRADES.full_name(s.namespace)], group=sink_group(s))
            assert all(r.committed is None for r in rows), rows  # no offset committed while held
            assert sum(r.lag or 0 for r in rows) > 0
            filler.unlink()
            wait_until(lambda: _stored_trades(s) >= N_TRADES, 90, f"all {N_TRADES} trades stored")
            assert _stored_trades(s) == N_TRADES
            assert "accepts writes again" in procs.log_of(sink)
            wait_until(
                lambda: all(r.lag == 0 for r in topic_offsets(s, [TRADES.full_name(s.namespace)], group=sink_group(s))),
                30,
                "the sink's lag back to 0",
            )
            assert Procs.stop(sink) == 0
            assert "Traceback" not in procs.log_of(sink)
        finally:
            procs.stop_all()  # before the unmount: the sink holds files in it
            os.sync()
