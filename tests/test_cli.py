"""Configuration and the CLI's error exits: one readable line, non-zero, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rtqis.cli import parse_time
from rtqis.errors import ConfigError, RtqisError
from rtqis.settings import load_settings


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
        r = run_cli("broker", "--port", str(port), env={"RTQIS_DATA_DIR": str(tmp_path)})
    assert r.returncode == 1
    assert_one_line_error(r, f"port {port}", "already in use")


def test_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    r = run_cli("topics", "offsets", "ticks.trade", env={"RTQIS_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"})
    assert_one_line_error(r, "127.0.0.1")


def test_bad_broker_binary_is_one_line(tmp_path: Path) -> None:
    r = run_cli("broker", env={"RTQIS_BROKER_BIN": str(tmp_path / "nope"), "RTQIS_DATA_DIR": str(tmp_path)})
    assert_one_line_error(r, "RTQIS_BROKER_BIN")


def test_parse_time() -> None:
    assert parse_time("1723161600000") == 1_723_161_600_000
    assert parse_time("2024-08-09T00:00:00Z") == 1_723_161_600_000
    assert parse_time("2024-08-09T02:00:00+02:00") == 1_723_161_600_000
    assert parse_time("2024-08-09T00:00:00") == 1_723_161_600_000  # naive = UTC
    with pytest.raises(RtqisError, match="cannot read time"):
        parse_time("yesterday")
