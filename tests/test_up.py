"""`rtqis up` as a user runs it: ticks within seconds, Ctrl-C leaves nothing behind, a dying child is reported;
and `rtqis tail --from-time` starts at the right record."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from confluent_kafka import Producer

from rtqis.kafka.clients import MessageProducer
from rtqis.kafka.embedded import EmbeddedBroker, kafka_unavailable
from rtqis.process import die_with_parent
from rtqis.schemas.frames import TRADE_FRAME, Frame
from rtqis.settings import Settings, load_settings
from rtqis.supervisor import Supervisor
from rtqis.topics import TRADES
from tests.conftest import alive_pids, env_of, free_port, port_block, wait_until
from tests.test_cli import run_cli

pytestmark = [pytest.mark.broker, pytest.mark.integration]


def _up(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[str], Path]:
    log = tmp_path / "up.out"
    base = {k: v for k, v in os.environ.items() if not k.startswith("RTQIS_")}
    base.update(
        {
            "RTQIS_BROKER": "tansu",
            "RTQIS_BROKER_PORT": str(port_block(2)),  # Apache Kafka's controller takes the next port
            "RTQIS_WORKER_WEB_PORT": str(free_port()),
            "RTQIS_UI_PORT": str(free_port()),
            "RTQIS_DATA_DIR": str(tmp_path / "var"),
            **env,
        }
    )
    with log.open("w") as out:
        p = subprocess.Popen(  # dies with this test run if it is killed (#21)
            [sys.executable, "-m", "rtqis", "up"],
            env=base,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=die_with_parent(),
        )
    return p, log


def _descendants(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("broker", ["tansu", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_up_shows_ticks_and_ctrl_c_leaves_no_process(tmp_path: Path, broker: str) -> None:
    # kafka: what `make run` runs wherever Java is (RTQIS_BROKER=auto), JVM included in "no process left"
    why = kafka_unavailable(load_settings()) if broker == "kafka" else None
    if why:
        pytest.skip(f"Apache Kafka cannot run here: {why}")
    p, log = _up(tmp_path, RTQIS_BROKER=broker, RTQIS_KAFKA_HEAP_MB="256")
    try:
        wait_until(lambda: "Stop everything" in log.read_text() or p.poll() is not None, 180, "rtqis up to start")
        assert p.poll() is None, f"rtqis up exited {p.returncode}:\n{log.read_text()[-3000:]}"
        kids = _descendants(p.pid)
        assert len(kids) >= 3, log.read_text()  # broker, producer, worker
        port = (
            next(line for line in log.read_text().splitlines() if line.startswith("broker")).split(":")[-1].split()[0]
        )
        env = {"RTQIS_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}
        r = run_cli("tail", "ticks.trade", "--limit", "3", env=env, timeout=60)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 3, r.stderr
        r = run_cli("tail", "analytics.ticker", "--limit", "1", "--json", env=env, timeout=60)
        assert r.returncode == 0 and '"trades"' in r.stdout, r.stderr
        r = run_cli("tail", "analytics.pair", "--limit", "2", "--json", env=env, timeout=60)
        sig = [json.loads(line) for line in r.stdout.splitlines()]
        assert r.returncode == 0 and [s["pair"] for s in sig] == ["ETHUSDT/BTCUSDT"] * 2, r.stderr
        assert sig[1]["time"] - sig[0]["time"] == 1000  # one sample a second of event time
    finally:
        p.send_signal(signal.SIGINT)
        code = p.wait(60)
    assert code == 0, log.read_text()
    assert "stopped" in log.read_text()
    wait_until(lambda: not alive_pids(kids), 10, f"the children {kids} of `rtqis up` to exit")
    assert (tmp_path / "var" / "logs" / "worker.log").exists()


def test_a_dying_child_stops_up_with_its_exit_code_and_log(tmp_path: Path) -> None:
    p, log = _up(tmp_path)
    try:
        wait_until(lambda: "Stop everything" in log.read_text() or p.poll() is not None, 60, "rtqis up to start")
        assert p.poll() is None, f"rtqis up exited {p.returncode}:\n{log.read_text()[-3000:]}"
        line = next(x for x in log.read_text().splitlines() if x.startswith("worker"))
        worker_pid = int(line.split("pid")[1].split(",")[0])
        kids = _descendants(p.pid)
        os.kill(worker_pid, signal.SIGKILL)
        code = p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = log.read_text()
    assert code != 0
    wait_until(lambda: not alive_pids(kids), 10, f"the children {kids} of `rtqis up` to exit")
    assert "worker exited with code -9; last lines of" in text, text
    assert text.rstrip().endswith("stopped")


def test_up_warns_once_when_broker_memory_passes_the_limit(tmp_path: Path) -> None:
    """Fill a real embedded broker past a 64 MB limit: one warning saying what to do, memory reported each time."""
    out = io.StringIO()
    settings = load_settings(data_dir=tmp_path, broker_port=free_port(), broker_memory_limit_mb=64)
    sup = Supervisor(settings, out=out)
    sup.broker = EmbeddedBroker(port=settings.broker_port).start()
    try:
        sup.report_memory()
        assert "WARNING" not in out.getvalue()
        producer = Producer({"bootstrap.servers": sup.broker.bootstrap, "compression.type": "none"})
        chunk = os.urandom(100_000)  # incompressible: the broker keeps every byte in memory
        for _ in range(900):
            producer.produce("fill", value=chunk)
            producer.poll(0)
        assert producer.flush(60) == 0
        wait_until(lambda: sup.broker.rss_bytes() > 64e6, 30, "broker RSS above 64 MB")  # type: ignore[union-attr]
        sup.report_memory()
        sup.report_memory()
    finally:
        sup.broker.stop()
    text = out.getvalue()
    assert text.count("WARNING: the embedded broker uses") == 1
    assert "restart `rtqis up`" in text and "RTQIS_BROKER_MEMORY_LIMIT_MB" in text
    assert text.count("memory     broker") == 3


def test_tail_from_time_starts_at_the_right_record(settings: Settings) -> None:
    p = MessageProducer(settings, **{"linger.ms": 100})
    t0 = 1_723_161_600_000
    for i in range(20):  # one frame a second, 3 trades each
        cols = {
            "trade_id": np.arange(3 * i, 3 * i + 3),
            "price": np.full(3, 100.0 + i),
            "qty": np.ones(3),
            "trade_time": t0 + 1000 * i + np.arange(3),
            "event_time": t0 + 1000 * i + np.arange(3),
            "recv_time": t0 + 1000 * i + np.arange(3),
            "buyer_maker": np.zeros(3, dtype=bool),
        }
        p.send(TRADES, Frame(TRADE_FRAME, "BTCUSDT", cols), key="BTCUSDT", timestamp_ms=t0 + 1000 * i)
    assert p.flush() == 0
    r = run_cli(
        "tail", "ticks.trade", "--from-time", "2024-08-09T00:00:07.5Z", "--until-end", "--json", env=env_of(settings)
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0]["trade_id"] == 24 and rows[0]["price"] == 108.0  # the frame stamped 00:00:08
    assert len(rows) == 36 and rows[-1]["trade_id"] == 59
