"""Configuration and the CLI's error exits: one readable line, non-zero, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rtqis.errors import ConfigError, RtqisError
from rtqis.settings import load_settings
from rtqis.times import parse_time


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RTQIS_")}
    base.update({k: v for k, v in (env or {}).items() if k.startswith("RTQIS_")} if env else {})
    return subprocess.run(
        [sys.executable, "-m", "rtqis", *args], capture_output=True, text=True, env=base, cwd=cwd, timeout=timeout
    )


def assert_one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_defaults() -> None:
    s = load_settings()
    assert s.embedded and s.bootstrap == "127.0.0.1:9092"
    assert s.symbols == ["BTCUSDT", "ETHUSDT"] and s.pairs == ["ETHUSDT/BTCUSDT"]
    assert (s.ui_port, s.worker_web_port, s.data_dir) == (5006, 6066, Path("var"))


def test_env_and_toml_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rtqis.toml").write_text(
        'broker_port = 9200\nsymbols = ["solusdt", "btcusdt"]\npairs = ["SOLUSDT/BTCUSDT"]\n'
    )
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.broker_port == 9200 and s.symbols == ["SOLUSDT", "BTCUSDT"]
    monkeypatch.setenv("RTQIS_BROKER_PORT", "9300")
    assert load_settings().broker_port == 9300
    assert load_settings(broker_port=9400).broker_port == 9400


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"RTQIS_BROKER_PORT": "abc"}, "broker_port (RTQIS_BROKER_PORT)"),
        ({"RTQIS_BROKER_PORT": "70000"}, "broker_port"),
        ({"RTQIS_DISPLAY_TZ": "Mars/Olympus"}, "unknown time zone"),
        ({"RTQIS_PAIRS": "ETHUSDT"}, "must look like Y/X"),
        ({"RTQIS_PAIRS": "SOLUSDT/BTCUSDT"}, "not in symbols"),
        ({"RTQIS_CODEC": "xml"}, "codec (RTQIS_CODEC)"),
    ],
)
def test_invalid_config_names_field_and_reason(
    env: dict[str, str], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match="invalid configuration") as e:
        load_settings()
    assert needle in str(e.value)


def test_cli_config_error_is_one_line() -> None:
    r = run_cli("config", env={"RTQIS_UI_PORT": "-1"})
    assert r.returncode == 2
    assert_one_line_error(r, "ui_port (RTQIS_UI_PORT)")


def test_config_masks_secrets() -> None:
    r = run_cli("config", env={"RTQIS_SASL_PASSWORD": "hunter2", "RTQIS_SASL_USERNAME": "me"})
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout and "********" in r.stdout and "RTQIS_SASL_USERNAME" in r.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nosuch"], "invalid choice"),
        (["tail"], "required: TOPIC"),
        (["tail", "ticks.trade", "--limit", "0"], "must be > 0"),
        (["produce", "synthetic", "--limit", "x"], "expected a whole number"),
        (["topics", "offsets", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], needle: str) -> None:
    r = run_cli(*args)
    assert r.returncode == 2
    assert_one_line_error(r, needle)


def test_help_lists_every_command() -> None:
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("up", "config", "broker", "topics", "produce", "worker", "tail"):
        assert cmd in r.stdout


def test_taken_port_gives_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("broker", "--port", str(port), env={"RTQIS_DATA_DIR": str(tmp_path), "RTQIS_BROKER": "tansu"})
    assert r.returncode == 1
    assert_one_line_error(r, f"port {port}", "already in use")


def test_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    r = run_cli("topics", "offsets", "ticks.trade", env={"RTQIS_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    assert_one_line_error(r, "127.0.0.1")


def test_bad_broker_binary_is_one_line(tmp_path: Path) -> None:
    r = run_cli(
        "broker",
        env={"RTQIS_BROKER_BIN": str(tmp_path / "nope"), "RTQIS_DATA_DIR": str(tmp_path), "RTQIS_BROKER": "tansu"},
    )
    assert_one_line_error(r, "RTQIS_BROKER_BIN")


def test_parse_time() -> None:
    assert parse_time("1723161600000") == 1_723_161_600_000
    assert parse_time("2024-08-09T00:00:00Z") == 1_723_161_600_000
    assert parse_time("2024-08-09T02:00:00+02:00") == 1_723_161_600_000
    assert parse_time("2024-08-09T00:00:00") == 1_723_161_600_000  # naive = UTC
    with pytest.raises(RtqisError, match="cannot read time"):
        parse_time("yesterday")


# --- candles import / export (#21) --------------------------------------------------------------------

T0 = 1_723_161_600_000  # 2024-08-09T00:00:00Z
MIN = 60_000
SQLISH = "BTC'; DROP TABLE candles;--"


def _candles_env(tmp_path: Path) -> dict[str, str]:
    """A data dir in tmp_path and a broker nobody runs: the commands use the database directly."""
    return {"RTQIS_DATA_DIR": str(tmp_path / "data"), "RTQIS_BOOTSTRAP_SERVERS": "127.0.0.1:1"}


def _seed(tmp_path: Path, *rows: tuple[int, bool]) -> Path:
    """Streamed BTCUSDT 1m candles (open time, closed) in the data dir's database; returns its path."""
    from rtqis.schemas.models import Candle
    from rtqis.sinks.store import Store

    db = tmp_path / "data" / "rtqis.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    with Store(db) as st:
        st.upsert_candles(
            [
                Candle(
                    symbol="BTCUSDT", interval="1m", open_time=t, close_time=t + MIN - 1, open=60_000.0,
                    high=60_010.0, low=59_990.0, close=60_005.0, volume=2.0, quote_volume=120_000.0, trades=9,
                    taker_buy_volume=1.0, taker_buy_quote_volume=60_000.0, vwap=60_000.0, closed=closed,
                )
                for t, closed in rows
            ]
        )  # fmt: skip
    return db


def _db_candles(db: Path) -> list[tuple[int, str, float]]:
    from rtqis.sinks.store import Store

    with Store(db, read_only=True) as st:
        c = st.candles("BTCUSDT", "1m")
        return list(zip(c["open_time"].to_list(), c["source"].to_list(), c["close"].to_list(), strict=True))


def test_candles_import_skips_rows_that_would_replace_streamed_candles(tmp_path: Path) -> None:
    db = _seed(tmp_path, (T0, True))  # a closed live minute
    f = tmp_path / "x'); DROP TABLE candles;--.csv"  # a file name is a path, never SQL
    f.write_text(f"open_time,open,high,low,close,volume\n{T0},1,1,1,1,1\n{T0 + MIN},1,1,1,1,1\n")
    r = run_cli("candles", "import", str(f), "--symbol", "btcusdt", env=_candles_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (
        "imported 1 1m candles of BTCUSDT (written); 1 row skipped: they would replace streamed candles"
    )
    assert _db_candles(db) == [(T0, "stream", 60_005.0), (T0 + MIN, "import", 1.0)]

    r = run_cli("candles", "import", str(f), "--symbol", SQLISH, env=_candles_env(tmp_path))
    assert_one_line_error(r, "unknown symbol", "configured symbols are BTCUSDT, ETHUSDT")
    assert _db_candles(db) == [(T0, "stream", 60_005.0), (T0 + MIN, "import", 1.0)]  # nothing imported


def test_candles_export_of_an_unknown_series_fails_in_one_line(tmp_path: Path) -> None:
    db = _seed(tmp_path, (T0, True))
    env = _candles_env(tmp_path)
    out = tmp_path / "out.csv"
    for args, needles, dest in (
        (["--symbol", SQLISH], ("unknown symbol", repr(SQLISH.upper())), ["-o", str(out)]),
        (["--symbol", "DOGEUSDT"], ("unknown symbol 'DOGEUSDT'",), []),
        (["--symbol", "BTCUSDT", "--interval", "1m'; DROP TABLE candles;--"], ("unknown interval",), []),
        (["--symbol", "BTCUSDT", "--interval", "1h"], ("no 1h candles of BTCUSDT are stored",), ["-o", str(out)]),
    ):
        r = run_cli("candles", "export", *args, *dest, env=env)
        assert_one_line_error(r, *needles)
        assert r.stdout == "" and not out.exists()
    assert _db_candles(db) == [(T0, "stream", 60_005.0)]  # parameterised: the table is intact


def test_candles_export_carries_closed_and_names_are_only_text(tmp_path: Path) -> None:
    _seed(tmp_path, (T0, True), (T0 + MIN, False))  # the second minute is still forming
    env = _candles_env(tmp_path)
    r = run_cli("candles", "export", "--symbol", "BTCUSDT", env=env)
    assert r.returncode == 0, r.stderr
    header, *rows = [line.split(",") for line in r.stdout.splitlines()]
    assert header[-1] == "closed" and [row[-1] for row in rows] == ["true", "false"]
    out = tmp_path / "a'; DROP TABLE candles;--.parquet"
    r = run_cli("candles", "export", "--symbol", "BTCUSDT", "--format", "parquet", "-o", str(out), env=env)
    assert r.returncode == 0, r.stderr
    import polars as pl

    assert pl.read_parquet(out)["closed"].to_list() == [True, False]
