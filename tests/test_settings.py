"""Settings: defaults, ``RTQIS_*`` parsing, one-line ConfigErrors naming the variable, and precedence
(explicit > environment > rtqis.toml > default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from rtqis.analytics.pair_model import PairParams
from rtqis.errors import ConfigError
from rtqis.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RTQIS_* variable from the caller's shell and no rtqis.toml in the working directory."""
    for k in list(os.environ):
        if k.startswith("RTQIS_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


def _error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as e:
        load_settings(**overrides)
    assert e.value.exit_code == 2
    text = str(e.value)
    assert "\n" not in text and text.startswith("invalid configuration: "), text
    return text


def test_defaults() -> None:
    s = load_settings()
    assert s.bootstrap_servers == "" and s.embedded and s.bootstrap == "127.0.0.1:9092"
    assert s.symbols == ["BTCUSDT", "ETHUSDT"] and s.pairs == ["ETHUSDT/BTCUSDT"]
    assert s.candle_intervals == ["1m", "5m"]
    assert (s.codec, s.compression, s.partitions, s.namespace) == ("json", "zstd", 1, "")
    assert (s.z_enter, s.z_exit, s.alert_cooldown_s) == (2.0, 0.5, 30.0)
    assert s.data_dir == Path("var") and s.log_dir == Path("var") / "logs"
    assert s.pairs_colocated and s.log_level == "info"
    assert s.kafka_client_config() == {"bootstrap.servers": "127.0.0.1:9092"}


def test_environment_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTQIS_SYMBOLS", " btcusdt, ethusdt ,solusdt,")
    monkeypatch.setenv("RTQIS_PAIRS", "solusdt/btcusdt, ETHUSDT/BTCUSDT")
    monkeypatch.setenv("RTQIS_PARTITIONS", "4")
    monkeypatch.setenv("RTQIS_COLOCATE_PAIRS", "false")
    monkeypatch.setenv("RTQIS_CANDLE_INTERVALS", "1m")
    monkeypatch.setenv("RTQIS_Z_ENTER", "2.5")
    monkeypatch.setenv("RTQIS_BOOTSTRAP_SERVERS", "kafka:9093")
    monkeypatch.setenv("RTQIS_DATA_DIR", "/tmp/rtqis-x")
    s = load_settings()
    assert s.symbols == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert s.pairs == ["SOLUSDT/BTCUSDT", "ETHUSDT/BTCUSDT"]
    assert s.partitions == 4 and s.colocate_pairs is False and not s.pairs_colocated
    assert s.candle_intervals == ["1m"] and s.z_enter == 2.5
    assert not s.embedded and s.bootstrap == "kafka:9093"
    assert s.data_dir == Path("/tmp/rtqis-x") and s.log_dir == Path("/tmp/rtqis-x/logs")


def test_one_partition_without_colocation_routes_legs() -> None:
    assert load_settings(partitions=1).pairs_colocated
    assert not load_settings(partitions=2).pairs_colocated
    assert not load_settings(colocate_pairs=False).pairs_colocated


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("RTQIS_PARTITIONS", "0", "partitions (RTQIS_PARTITIONS): Input should be greater than or equal to 1"),
        ("RTQIS_PARTITIONS", "many", "partitions (RTQIS_PARTITIONS): Input should be a valid integer"),
        ("RTQIS_CODEC", "xml", "codec (RTQIS_CODEC): Input should be 'json' or 'avro'"),
        ("RTQIS_BROKER_PORT", "70000", "broker_port (RTQIS_BROKER_PORT)"),
        ("RTQIS_DISPLAY_TZ", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("RTQIS_NAMESPACE", "a.b", "namespace may contain letters, digits, '-' and '_' only"),
        ("RTQIS_SYMBOLS", "BTC-USDT", "symbol 'BTC-USDT' must be letters and digits only"),
        ("RTQIS_SYMBOLS", " , ", "at least one symbol is needed"),
        ("RTQIS_PAIRS", "ETHUSDT", "pair 'ETHUSDT' must look like Y/X"),
        ("RTQIS_PAIRS", "BTCUSDT/BTCUSDT", "must look like Y/X"),
        (
            "RTQIS_CANDLE_INTERVALS",
            "1m,2h",
            "candle_intervals.1 (RTQIS_CANDLE_INTERVALS): Input should be '1m' or '5m'",
        ),
        ("RTQIS_FEE_BPS", "-1", "fee_bps (RTQIS_FEE_BPS): Input should be greater than or equal to 0"),
        ("RTQIS_ALERT_RULE", "hold", "alert_rule (RTQIS_ALERT_RULE): Input should be 'reverse' or 'bands'"),
        ("RTQIS_LEVEL_WINDOW", "100", "level_window (RTQIS_LEVEL_WINDOW): Input should be greater than or equal"),
        ("RTQIS_COINT_MIN", "5", "coint_min (RTQIS_COINT_MIN): Input should be greater than or equal to 20"),
    ],
)
def test_invalid_environment_gives_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    assert expected in _error()


def test_rules_across_fields() -> None:
    assert "pair SOLUSDT/BTCUSDT uses SOLUSDT, which is not in symbols" in _error(pairs="SOLUSDT/BTCUSDT")
    assert "z_exit (2.0) must be below z_enter (2.0) for hysteresis" in _error(z_exit=2.0)
    assert "coint_min (1801) must not exceed level_window (1800)" in _error(level_window=1800, coint_min=1801)


def test_signal_settings_reach_the_pair_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """#20: fee, alert rule, level window and cointegration minimum: defaults, environment, PairParams."""
    d = PairParams.from_settings(load_settings())
    assert (d.fee_bps, d.alert_rule, d.level_window, d.coint_min) == (10.0, "reverse", 3600, 1800)
    assert d == PairParams(), "the settings' defaults are the model's defaults"
    monkeypatch.setenv("RTQIS_FEE_BPS", "2.5")
    monkeypatch.setenv("RTQIS_ALERT_RULE", "bands")
    monkeypatch.setenv("RTQIS_LEVEL_WINDOW", "7200")
    monkeypatch.setenv("RTQIS_COINT_MIN", "3600")
    s = load_settings()
    assert (s.fee_bps, s.alert_rule, s.level_window, s.coint_min) == (2.5, "bands", 7200, 3600)
    p = PairParams.from_settings(s)
    assert (p.fee_bps, p.alert_rule, p.level_window, p.coint_min) == (2.5, "bands", 7200, 3600)
    assert p.level.window == 7200 and p.level.coint_min == 3600 and p.history >= 7200


def test_every_problem_is_listed_on_the_one_line() -> None:
    text = _error(partitions=0, codec="xml")
    assert "partitions (RTQIS_PARTITIONS)" in text and "codec (RTQIS_CODEC)" in text and "; " in text


def test_unknown_field_is_refused() -> None:
    assert "partitons" in _error(partitons=2)


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.partitions = 2  # type: ignore[misc]
    assert s.model_copy(update={"partitions": 2}).partitions == 2 and s.partitions == 1


def test_precedence_explicit_over_environment_over_toml_over_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "rtqis.toml").write_text('partitions = 3\ncodec = "avro"\nsample_ms = 500\n')
    s = load_settings()
    assert (s.partitions, s.codec, s.sample_ms, s.ols_window) == (3, "avro", 500, 300)  # toml over default
    monkeypatch.setenv("RTQIS_PARTITIONS", "5")
    monkeypatch.setenv("RTQIS_CODEC", "json")
    s = load_settings()
    assert (s.partitions, s.codec, s.sample_ms) == (5, "json", 500)  # environment over toml
    s = load_settings(partitions=7)
    assert (s.partitions, s.codec, s.sample_ms) == (7, "json", 500)  # explicit over environment


def test_rtqis_config_names_another_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("frame_max_ticks = 123\n")
    (tmp_path / "rtqis.toml").write_text("frame_max_ticks = 7\n")
    monkeypatch.setenv("RTQIS_CONFIG", str(other))
    assert load_settings().frame_max_ticks == 123


def test_a_bad_toml_value_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "rtqis.toml").write_text("frame_max_ticks = 0\n")
    assert "frame_max_ticks (RTQIS_FRAME_MAX_TICKS)" in _error()


def test_security_settings_reach_the_kafka_clients_and_the_password_is_masked() -> None:
    s = load_settings(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="me",
        sasl_password="s3cret",
        ssl_cafile="/etc/ca.pem",
    )
    assert s.kafka_client_config() == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "me",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
    }
    shown = s.masked()
    assert shown["sasl_password"] == "********" and "s3cret" not in repr(shown) and "s3cret" not in repr(s)
    assert shown["symbols"] == ["BTCUSDT", "ETHUSDT"]
