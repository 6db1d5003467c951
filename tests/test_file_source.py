"""`rtqis produce file` into a real broker: every valid row of the real Binance trade files arrives once,
in time order, with the right values; bad rows reach deadletter with file and line; bad files fail first."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from rtqis.settings import Settings
from rtqis.topics import DEADLETTER, TRADES
from tests.conftest import BINANCE_DATA, collect, env_of
from tests.test_cli import assert_one_line_error, run_cli

pytestmark = [pytest.mark.broker, pytest.mark.integration]

TRADES_DIR = BINANCE_DATA / "trades"
SPOT = {
    "BTCUSDT": TRADES_DIR / "BTCUSDT-spot-trades-2024-08-08T235415_to_2024-08-09T000505.csv",
    "ETHUSDT": TRADES_DIR / "ETHUSDT-spot-trades-2024-08-08T235415_to_2024-08-09T000505.csv",
}


def test_real_trade_files_arrive_once_in_order_with_right_values(settings: Settings) -> None:
    r = run_cli("produce", "file", *map(str, SPOT.values()), env=env_of(settings), timeout=120)
    assert r.returncode == 0, r.stderr
    expected: list[tuple[int, str, int, float, float, bool]] = []
    for sym, path in SPOT.items():
        with path.open() as f:
            for row in csv.reader(f):  # id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch
                expected.append((int(row[4]), sym, int(row[0]), float(row[1]), float(row[2]), row[5] == "True"))
    assert len(expected) == 19_904 + 14_515  # the data README's counts
    rows = collect(settings, TRADES.name, lambda rows: False, until_end=True)
    got = [(r["trade_time"], r["symbol"], r["trade_id"], r["price"], r["qty"], r["buyer_maker"]) for r in rows]
    assert len(got) == len(expected)
    assert sorted(got) == sorted(expected)  # every row once, same values
    for sym in SPOT:  # each symbol in event-time (and trade-id) order
        mine = [(g[0], g[2]) for g in got if g[1] == sym]
        assert mine == sorted(mine)
    # the files are merged, not concatenated: frames of both symbols interleave in time
    first_eth = next(i for i, g in enumerate(got) if g[1] == "ETHUSDT")
    last_btc = max(i for i, g in enumerate(got) if g[1] == "BTCUSDT")
    assert first_eth < last_btc


def test_bad_rows_go_to_deadletter_with_file_and_line(settings: Settings, tmp_path: Path) -> None:
    lines = SPOT["BTCUSDT"].read_text().splitlines()[:10]
    lines[3] = "123,notaprice,0.1,1,1723161255000,True,True"
    lines[6] = "124,-5.0,0.1,1,1723161255001,True,True"
    bad = tmp_path / "BTCUSDT-spot-trades-bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    r = run_cli("produce", "file", str(bad), env=env_of(settings), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "2 bad rows sent to deadletter" in r.stdout
    trades = collect(settings, TRADES.name, lambda rows: False, until_end=True)
    assert len(trades) == 8
    dls = collect(settings, DEADLETTER.name, lambda rows: len(rows) >= 2)
    assert [d["location"] for d in dls] == [f"{bad}:4", f"{bad}:7"]
    assert "price" in dls[0]["reason"] and dls[1]["payload"] == lines[6].encode()


def test_unknown_file_fails_with_one_line_before_publishing(settings: Settings, tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\nworld\n")
    r = run_cli("produce", "file", str(SPOT["BTCUSDT"]), str(junk), env=env_of(settings), timeout=60)
    assert_one_line_error(r, "notes.txt")
    rows = collect(settings, TRADES.name, lambda rows: False, until_end=True)
    assert rows == []  # the good file was not published either
