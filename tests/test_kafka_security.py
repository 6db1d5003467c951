"""The security settings against an Apache Kafka that requires them: SASL_SSL with SCRAM, TLS from a
throwaway CA (:mod:`rtqis.kafka.tls`), one broker for the module.

With only the settings (``RTQIS_SECURITY_PROTOCOL=SASL_SSL``, ``RTQIS_SASL_*``, ``RTQIS_SSL_CAFILE``):
topics are created and listed (admin), a frame round-trips (our producer and consumer, librdkafka),
the Faust worker (aiokafka) turns ticks into candles with either processing guarantee, and
:func:`rtqis.client.subscribe` reads them. A wrong password and an untrusted CA each end ``rtqis topics
list`` with one clear line, quickly. Skipped where Apache Kafka cannot run (see tests/test_apache_kafka.py).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtqis.agents.config import processing_guarantee
from rtqis.client import subscribe
from rtqis.errors import BrokerError, PortInUseError
from rtqis.kafka.admin import create_topics, list_topics
from rtqis.kafka.apache import ApacheKafka
from rtqis.kafka.clients import MessageProducer
from rtqis.kafka.offsets import topic_offsets
from rtqis.kafka.tls import BrokerTls, broker_certificate, make_ca, sasl_ssl_properties, scram_credentials
from rtqis.process import settings_env
from rtqis.schemas import models as m
from rtqis.schemas.codec import decode
from rtqis.schemas.frames import Frame
from rtqis.settings import Settings, load_settings
from rtqis.topics import CANDLES_1M, TICKER, TRADES
from tests.conftest import Procs, collect, env_of, make_settings, wait_until
from tests.test_apache_kafka import _JARS_AVAILABLE, _JAVA, _ports, _skip_reason, send_and_read_a_frame
from tests.test_cli import assert_one_line_error, run_cli
from tests.test_pipeline import _frame, latest_tickers

pytestmark = [pytest.mark.kafka]

log = logging.getLogger(__name__)

USER, PASSWORD = "rtqis", "rtqis-s3cret-pw"
#: the broker's own SCRAM user (inter-broker listener)
BROKER_USER, BROKER_PASSWORD = "broker", "broker-s3cret-pw"


@dataclass(frozen=True)
class SecureKafka:
    broker: ApacheKafka
    tls: BrokerTls
    other_ca: Path  # a CA the broker's certificate is not signed by


def _start(tmp: Path, tls: BrokerTls, attempts: int = 3) -> ApacheKafka:
    """Start the node on free ports; again on other ports if another process took one meanwhile."""
    for attempt in range(attempts):
        port, controller = _ports()
        props = sasl_ssl_properties(
            host="127.0.0.1",
            port=port,
            controller_port=controller,
            tls=tls,
            username=BROKER_USER,
            password=BROKER_PASSWORD,
        )
        probe = {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": USER,
            "sasl.password": PASSWORD,
            "ssl.ca.location": str(tls.ca),
        }
        b = ApacheKafka(
            port=port,
            controller_port=controller,
            data_dir=tmp / "var",
            log_path=tmp / f"kafka-{attempt}.log",
            extra_properties=props,
            scram_users=scram_credentials({USER: PASSWORD, BROKER_USER: BROKER_PASSWORD}),
            client_config=probe,
        )
        try:
            return b.start(timeout_s=180)
        except BrokerError as e:
            out = tmp / f"kafka-{attempt}.log"
            taken = isinstance(e, PortInUseError) or (out.exists() and "Address already in use" in out.read_text())
            if not taken or attempt == attempts - 1:
                raise
            log.warning("a port was taken while Kafka started (%s): again on other ports", e)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """One Kafka node for the module whose only client listener is SASL_SSL (SCRAM-SHA-512/256)."""
    if _JAVA is None or not _JARS_AVAILABLE:
        pytest.skip(_skip_reason)
    tmp = tmp_path_factory.mktemp("kafka-sasl-ssl")
    tls = broker_certificate(tmp / "certs", make_ca(tmp / "certs"))
    other_ca, _ = make_ca(tmp / "other", "untrusted-ca")
    b = _start(tmp, tls)
    try:
        yield SecureKafka(b, tls, other_ca)
    finally:
        b.stop()


def _settings(k: SecureKafka, tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": USER,
        "sasl_password": PASSWORD,
        "ssl_cafile": str(k.tls.ca),
    }
    values.update(overrides)
    return make_settings(k.broker.bootstrap, tmp, **values)


def test_the_listener_is_sasl_ssl_only(secure: SecureKafka) -> None:
    text = (secure.broker.home / "server.properties").read_text()
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["listeners"].startswith("SASL_SSL://127.0.0.1:") and "PLAINTEXT://127.0.0.1" not in props["listeners"]
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,SCRAM-SHA-256" and props["ssl.keystore.type"] == "PEM"


def test_topics_and_a_frame_round_trip(secure: SecureKafka, tmp_path: Path) -> None:
    s = _settings(secure, tmp_path)
    assert TRADES.full_name(s.namespace) in create_topics(s)
    msgs = send_and_read_a_frame(s)
    assert len(msgs) == 1 and msgs[0].key() == b"BTCUSDT"
    f = decode(msgs[0].value(), msgs[0].headers())
    assert isinstance(f, Frame) and [r["trade_id"] for r in f.iter_rows()] == [1, 2, 3]
    # the same user through SCRAM-SHA-256 (created for both mechanisms at format time)
    s256 = _settings(secure, tmp_path, sasl_mechanism="SCRAM-SHA-256", namespace=s.namespace)
    assert TRADES.full_name(s.namespace) in {t.name for t in list_topics(s256)}
    # the default guarantee is at_least_once on Kafka too (exactly_once is opt-in: rtqis.agents.config)
    assert processing_guarantee(s) == "at_least_once"


#: the ticks of the worker test: per symbol, 6 frames of 10 trades 30 s apart, prices 100 .. 105
_T0 = 1_723_161_600_000  # a minute boundary


def _send_ticks(s: Settings) -> dict[tuple[str, int], tuple[float, float, float, float, int]]:
    """Produce the ticks; the closed 1m candles they must give, computed here: (symbol, open_time) ->
    (open, high, low, close, trades). With no grace, minutes 0 and 1 close; minute 2 stays open."""
    p = MessageProducer(s)
    for k in range(6):
        for sym in ("BTCUSDT", "ETHUSDT"):
            p.send(TRADES, _frame(sym, list(range(10 * k, 10 * k + 10)), price=100.0 + k, t0=_T0 + 30_000 * k), key=sym)
    assert p.flush() == 0
    return {
        (sym, _T0 + 60_000 * i): (100.0 + 2 * i, 101.0 + 2 * i, 100.0 + 2 * i, 101.0 + 2 * i, 20)
        for sym in ("BTCUSDT", "ETHUSDT")
        for i in range(2)
    }


@pytest.mark.integration
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_the_worker_makes_candles_and_subscribe_reads_them(
    secure: SecureKafka, tmp_path: Path, procs: Procs, guarantee: str
) -> None:
    s = _settings(secure, tmp_path, candle_grace_ms=0, processing_guarantee=guarantee)
    create_topics(s)
    expected = _send_ticks(s)
    worker = procs.start(s, "worker", name="worker")
    collect(s, CANDLES_1M.name, lambda rows: sum(r["closed"] for r in rows) >= len(expected), timeout_s=120)
    assert worker.poll() is None, procs.log_of(worker)
    # Faust's transactions run (exactly_once) or not (at_least_once)
    assert ("transactional producer" in procs.log_of(worker)) == (guarantee == "exactly_once")
    with subscribe(CANDLES_1M.name, since="earliest", settings=s, stop_at_end=True) as sub:
        got = {
            (c.symbol, c.open_time): (c.open, c.high, c.low, c.close, c.trades)
            for c in sub
            if isinstance(c, m.Candle) and c.closed
        }
    assert got == expected


def test_wrong_password_and_untrusted_ca_are_one_clear_line(secure: SecureKafka, tmp_path: Path) -> None:
    s = _settings(secure, tmp_path)
    assert run_cli("topics", "list", env=env_of(s)).returncode == 0
    for overrides, needle in (
        ({"sasl_password": "not-the-password"}, "SASL authentication error"),
        ({"ssl_cafile": str(secure.other_ca)}, "certificate verify failed"),
    ):
        t0 = time.monotonic()
        r = run_cli("topics", "list", env=env_of(_settings(secure, tmp_path, **overrides)))
        assert_one_line_error(r, needle, f"cannot list topics at {s.bootstrap}")
        assert time.monotonic() - t0 < 30  # fails on the broker's answer, not on a timeout


def test_the_password_reaches_child_processes() -> None:
    sasl = {"sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u", "sasl_password": "pw"}
    s = load_settings(security_protocol="SASL_SSL", **sasl)
    env = settings_env(s, {})
    assert (env["RTQIS_SASL_PASSWORD"], env["RTQIS_SASL_MECHANISM"]) == ("pw", "SCRAM-SHA-256")  # not "****"
    assert "pw" not in repr(s) and s.masked()["sasl_password"] == "********"


def _has_leader(s: Settings, topic: str) -> bool:
    """True once the new topic's partitions have a leader (a loaded broker takes a while after creating it)."""
    try:
        topic_offsets(s, [topic])
    except BrokerError:
        return False
    return True


@pytest.mark.integration
@pytest.mark.xfail(
    strict=False,
    reason="known bug (#24): once, under load, the restarted exactly-once worker counted 60 trades short of "
    "3,000 (its table behind its committed offsets); exactly_once is opt-in until it is understood",
)
def test_exactly_once_table_state_is_exact_after_sigkill(secure: SecureKafka, tmp_path: Path, procs: Procs) -> None:
    """A worker with exactly_once SIGKILLed mid-stream and restarted: every symbol's trade count equals
    what was produced and matches its last trade id (no tick lost or counted twice). Records carry
    the produce time (event times of 2024 would be deleted by the broker's time retention)."""
    s = _settings(secure, tmp_path, processing_guarantee="exactly_once")
    create_topics(s)
    p = MessageProducer(s, **{"linger.ms": 50})  # batches of small frames: many changelog writes
    total = {"BTCUSDT": 0, "ETHUSDT": 0}

    def send(frames: int) -> None:
        for _ in range(frames):
            for sym in total:
                ids = list(range(total[sym] + 1, total[sym] + 21))
                p.send(TRADES, _frame(sym, ids, price=100.0 + len(ids)), key=sym)
                total[sym] += len(ids)
        assert p.flush() == 0

    send(100)  # 4,000 trades in 200 frames
    wait_until(lambda: _has_leader(s, TICKER.full_name(s.namespace)), 60, "the ticker topic's leader")
    worker = procs.start(s, "worker", name="worker")
    collect(s, TICKER.name, lambda rows: sum(r["trades"] for r in rows[-2:]) >= 1_000, timeout_s=120)
    assert Procs.stop(worker, signal.SIGKILL) is not None
    send(50)  # more arrive while it is down
    procs.start(s, "worker", name="worker-restarted")
    got = latest_tickers(s, dict(total), timeout_s=120)
    assert {sym: t["trades"] for sym, t in got.items()} == total
    assert all(t["trade_id"] == t["trades"] for t in got.values())
