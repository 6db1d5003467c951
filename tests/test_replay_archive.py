"""``rtqis replay --from --to``: the live sink's tick archive through the unchanged worker and sink, and
live-vs-replay parity.

The live run: real Binance spot trades AND book tickers of BTCUSDT + ETHUSDT (2 minutes of them,
~30,000 ticks) published at 30x real time (frames cut by time, as a live feed cuts them) into the worker and sink
of a namespace of their own, with pairs priced at the mid of best bid/ask so the worker's outputs
depend on how trades and book tickers interleave. Then the span is replayed from that run's archive
(through the socket of its running sink, as a replay next to a live system reads it) at full speed
(frames cut by count): every closed candle, PairSignal, alert and ADF row equals the live run's own.

Span choice: the full span of the live run holds every tick the live outputs depend on, so ALL outputs
must be equal (the digest too). An interior span starting mid-run starts the pair estimators (rolling
OLS, Kalman, z-score windows) from nothing, so its signals legitimately differ from live; its closed
candles depend on their own minute's trades only and must still equal the live ones.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

from rtqis.replay import DIGEST_TABLES, ReplayResult, _child, digest, run_archive_replay, run_replay
from rtqis.replay.archive import iso, parse_time
from rtqis.settings import Settings
from rtqis.sinks.schema import TABLES
from rtqis.sinks.sink import sink_paths
from rtqis.sinks.store import Store
from tests.conftest import BINANCE_DATA, env_of, make_settings
from tests.test_cli import assert_one_line_error, run_cli

pytestmark = [pytest.mark.broker, pytest.mark.integration]

TRADE_FILES = [str(next((BINANCE_DATA / "trades").glob(f"{s}-spot-trades-*.csv"))) for s in ("BTCUSDT", "ETHUSDT")]
BOOK_FILES = [str(next((BINANCE_DATA / "bookticker").glob(f"{s}-spot-bookTicker-*"))) for s in ("BTCUSDT", "ETHUSDT")]
#: the live run's excerpt of the four files (epoch ms): 2 minutes, ~30,000 ticks (a mid-priced worker
#: takes a few minutes over all 11 on a loaded 2-core machine)
EXCERPT = (parse_time("2024-08-08T23:59:30Z", "t"), parse_time("2024-08-09T00:01:30Z", "t"))
#: the whole live run: nothing its outputs depend on lies outside
FULL = (parse_time("2024-08-08T23:59:00Z", "--from"), parse_time("2024-08-09T00:02:00Z", "--to"))
#: an interior span: minute 00:00 closes inside it (00:01 only with a tick of 00:02, which is not there)
INTERIOR = (parse_time("2024-08-09T00:00:00Z", "--from"), parse_time("2024-08-09T00:01:30Z", "--to"))


def _excerpt(src: str, out_dir: Path) -> tuple[str, int]:
    """The rows of a trade CSV (time in ms, 5th column) or a bookTicker CSV (header; receive time in ns,
    1st column) inside :data:`EXCERPT`, as a CSV of the same name in ``out_dir``; (path, rows)."""
    import gzip

    path = Path(src)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        lines = f.read().splitlines()
    header, rows = (lines[:1], lines[1:]) if lines[0].startswith("local_recv_ns") else ([], lines)
    col, div = (0, 1_000_000) if header else (4, 1)
    keep = [r for r in rows if EXCERPT[0] <= int(r.split(",")[col]) // div < EXCERPT[1]]
    out = out_dir / path.name.removesuffix(".gz")
    out.write_text("\n".join(header + keep) + "\n")
    return str(out), len(keep)


def _rows(db: Path, table: str, where: str = "TRUE") -> list[tuple[Any, ...]]:
    """The rows of ``table`` as the digest sees them (its columns, ordered by the table's key)."""
    import duckdb

    spec = {t.name: t for t in TABLES}[table]
    skip = dict((n, s) for n, _, s in DIGEST_TABLES).get(table, ())
    cols = ", ".join(f'"{c}"' for c in spec.columns if c not in skip)
    order = ", ".join(f'"{c}"' for c in spec.key)
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f'SELECT {cols} FROM "{table}" WHERE {where} ORDER BY {order}').fetchall()  # noqa: S608
    finally:
        con.close()


def _wait_serving(s: Settings, timeout_s: float = 120.0) -> None:
    """Until the sink of ``s`` answers on its socket."""
    sock_path = sink_paths(s)[1]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sock_path.exists():
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                c.connect(str(sock_path))
                return
            except OSError:
                pass
            finally:
                c.close()
        time.sleep(0.2)
    raise AssertionError(f"the live sink does not serve {sock_path}")


@pytest.fixture(scope="module")
def live(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The live run (module docstring), then the full span replayed from its archive while its sink
    runs again and serves readers; the live store's row counts before and after that replay."""
    tmp = tmp_path_factory.mktemp("parity")
    files = [_excerpt(f, tmp) for f in TRADE_FILES + BOOK_FILES]
    base = make_settings(bootstrap, tmp, namespace="", pair_price="mid")
    run = run_replay(base, [p for p, _ in files], namespace="live", speed=30)
    s = base.model_copy(update={"namespace": "live"})
    db = sink_paths(s)[0]
    with Store(db, read_only=True) as st:
        before = st.counts()
    sink = _child(s, "live-sink", "sink")
    try:
        _wait_serving(s)
        replayed = run_archive_replay(s, *FULL, window_ms=120_000)  # 6 windows: their seams are crossed
    finally:
        sink.stop()
    with Store(db, read_only=True) as st:
        after = st.counts()
    ticks = sum(n for _, n in files)
    return {"settings": s, "run": run, "db": db, "replayed": replayed, "before": before, "after": after, "ticks": ticks}


def test_the_live_run_is_a_real_one(live: dict[str, Any]) -> None:
    run: ReplayResult = live["run"]
    assert run.ticks == live["ticks"] > 20_000  # every trade and book ticker of the excerpts
    assert run.counts["signals"] > 60 and run.counts["candles"] >= 4


def test_replay_of_the_live_archive_equals_the_live_outputs(live: dict[str, Any]) -> None:
    res: ReplayResult = live["replayed"]
    db: Path = live["db"]
    assert res.ticks == live["run"].ticks  # the archive holds every tick, each once
    assert res.summary()["from_ms"] == FULL[0] and res.inputs == [f"archive {iso(FULL[0])} .. {iso(FULL[1])}"]
    assert res.namespace not in ("", "live") and res.database != db
    for table, where, _ in DIGEST_TABLES:
        got, want = _rows(res.database, table, where), _rows(db, table, where)
        assert len(got) == len(want), table
        diff = next((i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b), None)
        assert diff is None, f"{table} row {diff}: replay {got[diff]} != live {want[diff]}"
    assert res.digest == digest(db)


def test_the_live_store_is_only_read(live: dict[str, Any]) -> None:
    assert live["after"] == live["before"]


def test_an_interior_span_gives_the_live_closed_candles(live: dict[str, Any]) -> None:
    res = run_archive_replay(live["settings"], *INTERIOR)
    assert res.ticks > 0 and res.namespace != live["replayed"].namespace
    got = _rows(res.database, "candles", "closed")
    assert len(got) >= 2  # 1m 00:00 of both symbols
    start, end = INTERIOR
    want = _rows(live["db"], "candles", f"closed AND open_time >= {start} AND open_time < {end}")
    assert set(got) <= set(want)
    assert {r[1] for r in got} >= {"1m"}


# --- the command's errors: one line, nothing started ----------------------------------------------


def test_cli_errors_are_one_line(bootstrap: str, tmp_path: Path) -> None:
    s = make_settings(bootstrap, tmp_path, namespace="")
    env = env_of(s)
    r = run_cli("replay", TRADE_FILES[0], "--from", "2024-08-09T00:00:00Z", env=env)
    assert_one_line_error(r, "not both")
    r = run_cli("replay", "--from", "yesterday", env=env)
    assert_one_line_error(r, "cannot read --from 'yesterday'")
    r = run_cli("replay", "--from", "2024-08-09T00:05:00Z", "--to", "2024-08-09T00:00:00Z", env=env)
    assert_one_line_error(r, "must be after --from")
    r = run_cli("replay", "--to", "2024-08-09T00:00:00Z", env=env)
    assert_one_line_error(r, "--to goes with --from")
    r = run_cli("replay", "--from", "2024-08-09T00:00:00Z", env=env)
    assert_one_line_error(r, "no live store", "rtqis.duckdb")
    with Store(sink_paths(s)[0]):
        pass  # an empty live store
    r = run_cli("replay", "--from", "1723161600000", "--to", "2024-08-09T01:00:00Z", env=env)
    assert_one_line_error(r, "no ticks stored between 2024-08-09T00:00:00.000Z and 2024-08-09T01:00:00.000Z")
    r = run_cli(
        "replay", "--from", "1723161600000", "--namespace", "x", env=env_of(s.model_copy(update={"namespace": "x"}))
    )
    assert_one_line_error(r, "namespace 'x' is the configured (live) one")
    assert not list(tmp_path.glob("rtqis-*.duckdb"))  # no replay started
