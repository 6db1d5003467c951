"""The worker's Faust configuration and broker credentials, from the settings (no broker needed)."""

from __future__ import annotations

import ssl

import faust
import pytest
from pydantic import ValidationError

from rtqis.agents.config import app_config, processing_guarantee, recovery_fix
from rtqis.agents.security import broker_credentials
from rtqis.kafka.groups import KAFKA_SESSION_S
from rtqis.settings import Settings


def test_credentials_follow_the_security_protocol() -> None:
    assert broker_credentials(Settings()) is None
    assert isinstance(broker_credentials(Settings(security_protocol="SSL")), ssl.SSLContext)
    sasl = dict(sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p")
    plain = broker_credentials(Settings(security_protocol="SASL_PLAINTEXT", **sasl))
    tls = broker_credentials(Settings(security_protocol="SASL_SSL", **sasl))
    assert isinstance(plain, faust.SASLCredentials) and isinstance(tls, faust.SASLCredentials)
    assert (plain.username, plain.password, plain.ssl_context) == ("u", "p", None)
    assert isinstance(tls.ssl_context, ssl.SSLContext)


def test_app_config_from_settings() -> None:
    s = Settings(bootstrap_servers="a:9092,b:9093", compression="none", partitions=3)
    conf = app_config(s, "end-offsets")
    assert conf["broker"] == "kafka://a:9092;kafka://b:9093"
    assert conf["producer_compression_type"] is None and conf["topic_partitions"] == 3
    assert "broker_credentials" not in conf
    # many changelog records per batch (a frame's pair state is ~21 KB), under Kafka's 1 MB message limit
    assert 64 * 1024 <= conf["producer_max_batch_size"] < 1_000_000
    assert app_config(s, "batch1")["producer_max_batch_size"] == 1  # one changelog record per batch


def test_app_config_takes_the_group_session() -> None:
    """6 s (Kafka's minimum) unless told; the heartbeat a quarter of a short session, at most 1 s."""
    conf = app_config(Settings(), "off")
    assert (conf["broker_session_timeout"], conf["broker_heartbeat_interval"]) == (KAFKA_SESSION_S, 1.0) == (6.0, 1.0)
    conf = app_config(Settings(), "off", session_s=2.0)
    assert (conf["broker_session_timeout"], conf["broker_heartbeat_interval"]) == (2.0, 0.5)
    with pytest.raises(ValidationError):
        Settings(group_session_s=0.5)


def test_recovery_fix_auto_follows_the_broker_self_check() -> None:
    assert recovery_fix(Settings(recovery_fix="auto"), exact_end_offsets=True) == "off"
    assert recovery_fix(Settings(recovery_fix="auto"), exact_end_offsets=False) == "end-offsets"
    assert recovery_fix(Settings(recovery_fix="batch1"), exact_end_offsets=True) == "batch1"


def test_app_config_carries_the_credentials() -> None:
    s = Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p")
    creds = app_config(s, "off")["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials) and creds.username == "u"


def test_processing_guarantee_follows_the_setting() -> None:
    # auto: at_least_once on every broker (exactly_once is opt-in: see rtqis.agents.config)
    assert processing_guarantee(Settings()) == "at_least_once"
    for g in ("exactly_once", "at_least_once"):
        s = Settings(processing_guarantee=g)
        assert processing_guarantee(s) == g
        assert app_config(s, "off", g)["processing_guarantee"] == g
    assert app_config(Settings(), "off")["processing_guarantee"] == "at_least_once"
    with pytest.raises(ValidationError):
        Settings(processing_guarantee="exactly_twice")


def test_sasl_needs_a_mechanism_a_user_and_a_password() -> None:
    with pytest.raises(ValidationError, match="needs RTQIS_SASL_MECHANISM, RTQIS_SASL_PASSWORD"):
        Settings(security_protocol="SASL_SSL", sasl_username="u")
    s = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password="p")
    creds = broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials) and creds.mechanism.value == "SCRAM-SHA-512"
    assert isinstance(creds.ssl_context, ssl.SSLContext) and creds.ssl_context.check_hostname


def test_progress_line_counts_events_per_partition_since_the_last_line() -> None:
    from rtqis.agents.worker import progress_line

    progress = {("replay.t1.ticks.trade", 1): [5, 40], ("replay.t1.pairs.legs", 0): [3, 7]}
    before: dict[tuple[str, int], int] = {}
    assert progress_line(progress, before) == "pairs.legs[0] +3 @7, ticks.trade[1] +5 @40"
    progress[("replay.t1.ticks.trade", 1)] = [9, 44]
    assert progress_line(progress, before) == "pairs.legs[0] +0 @7, ticks.trade[1] +4 @44"
    assert progress_line({}, {}) == "no event yet"


def test_producer_back_pressure_is_counted_not_logged_line_by_line(caplog: pytest.LogCaptureFixture) -> None:
    """Faust logs each wait for its producer buffer (a WARNING and an INFO line, hundreds a minute in a
    replay); the worker's filter drops them on Faust's own producer logger, counts them, and the progress
    line reports the count once. Other lines of that logger pass."""
    import logging

    from faust.transport import producer as faust_producer

    from rtqis.agents.worker import BackPressureLog

    assert faust_producer.logger.name == BackPressureLog.LOGGER  # where the filter is installed
    BackPressureLog.install()
    f = BackPressureLog.install()  # replaces the first: one filter however many apps a process builds
    assert [x for x in faust_producer.logger.filters if isinstance(x, BackPressureLog)] == [f]
    try:
        with caplog.at_level(logging.INFO):
            for size in (101, 103):
                faust_producer.logger.warning(f"producer buffer full size {size}")
                faust_producer.logger.info("producer flush took 0.25")
            faust_producer.logger.warning("something else")
    finally:
        faust_producer.logger.removeFilter(f)
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    assert f.summary() == "; producer back-pressure: 2 waits, 0.5 s"
    assert f.summary() == ""  # reported once
