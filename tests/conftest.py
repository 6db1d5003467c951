"""Shared fixtures: a real broker for the session, an isolated namespace per test, child processes.

The broker is the embedded Tansu started here on a free port, Apache Kafka started here from its jars
when RTQIS_TEST_BROKER=kafka, or the one named by RTQIS_BOOTSTRAP_SERVERS.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from rtqis.kafka.admin import create_topics
from rtqis.kafka.embedded import EmbeddedBroker, LocalBroker, port_is_free
from rtqis.kafka.tail import iter_rows
from rtqis.process import die_with_parent, free_port, settings_env
from rtqis.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"
"""The test data in the repository (real, trimmed; see ``tests/data/README.md``): every test reads it from here."""
BINANCE_DATA = TEST_DATA / "binance"
"""Binance trades, book tickers, klines and raw stream captures, laid out like ``shared/data/binance``."""
REFERENCE_DATA_ENV = "RTQIS_REFERENCE_DATA"


def reference_data(relative: str) -> Path:
    """A file of the reference data we may not redistribute (e.g. ``chan/inputData_EWA_EWC.csv``).

    It is read from the folder named by ``$RTQIS_REFERENCE_DATA`` (laid out like ``shared/data``; CI points
    it at ``../shared/data``). Without it, or without the file, the calling test is skipped with the reason.
    """
    root = os.environ.get(REFERENCE_DATA_ENV)
    if not root:
        pytest.skip(f"{relative} is not in the repository: set {REFERENCE_DATA_ENV} to a copy of shared/data")
    path = Path(root) / relative
    if not path.is_file():
        pytest.skip(f"{path} not found: set {REFERENCE_DATA_ENV} to a copy of shared/data that holds {relative}")
    return path


#: which broker the session fixture starts: tansu (default, embedded) or kafka (Apache Kafka from its jars);
#: with RTQIS_BOOTSTRAP_SERVERS it says which kind that external broker is (default kafka)
TEST_BROKER_ENV = "RTQIS_TEST_BROKER"
BROKER_KINDS = ("tansu", "kafka")


def session_broker_kind() -> str:
    """The kind of the session's broker (``tansu`` or ``kafka``), as ``$RTQIS_TEST_BROKER`` says; an external
    broker (``$RTQIS_BOOTSTRAP_SERVERS``) is taken to be Apache Kafka unless it says otherwise."""
    default = "kafka" if os.environ.get("RTQIS_BOOTSTRAP_SERVERS") else "tansu"
    kind = os.environ.get(TEST_BROKER_ENV) or default
    if kind not in BROKER_KINDS:
        raise pytest.UsageError(f"{TEST_BROKER_ENV}={kind!r}: expected tansu or kafka")
    return kind


def _session_broker(tmp: Path) -> LocalBroker:
    """The session's own broker, as ``$RTQIS_TEST_BROKER`` says."""
    if session_broker_kind() == "kafka":
        from rtqis.kafka.apache import ApacheKafka

        return ApacheKafka(port=free_port(), controller_port=free_port(), data_dir=tmp, log_path=tmp / "kafka.log")
    return EmbeddedBroker(port=free_port(), log_path=tmp / "broker.log")


@pytest.fixture(scope="session")
def broker_kind() -> str:
    """Which broker the session's ``bootstrap`` is: ``tansu`` or ``kafka``. Tests where the two brokers
    behave differently state each one's behaviour keyed by this (never a skip)."""
    return session_broker_kind()


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("RTQIS_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    b = _session_broker(tmp_path_factory.mktemp("broker"))
    b.start()
    try:
        yield b.bootstrap
    finally:
        b.stop()


def port_block(n: int) -> int:
    """A port p such that p .. p + n - 1 are all free, below Linux's ephemeral range (32768+): a broker
    binds p and its controller p + 1 (cluster node i takes p + 2(i-1) and the next). A port ``free_port``
    picks is in the ephemeral range, so the one after it can be taken by any outgoing connection by the
    time the broker binds it (seen in CI: "port ... is already in use: ... the controller port")."""
    rng = random.Random()
    for _ in range(200):
        p = rng.randrange(20_000, 32_000)
        if all(port_is_free("127.0.0.1", p + i) for i in range(n)):
            return p
    raise AssertionError(f"no {n} free consecutive ports")


def make_settings(bootstrap: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "namespace": "t" + uuid.uuid4().hex[:10],
        "data_dir": data_dir,
        "worker_web_port": free_port(),
        "ui_port": free_port(),
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own namespace (topics, consumer group, tables), topics created."""
    s = make_settings(bootstrap, tmp_path)
    create_topics(s)
    return s


def env_of(settings: Settings) -> dict[str, str]:
    """Environment for a child `rtqis` process that uses exactly these settings."""
    return settings_env(settings)


class Procs:
    """Child `rtqis` processes of one test; all stopped (then killed) at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, settings: Settings, *args: str, name: str = "proc") -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            p = subprocess.Popen(
                [sys.executable, "-m", "rtqis", *args],
                env=env_of(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # dies with the test run, even a SIGKILLed one
            )
        self.procs.append((p, log))
        return p

    def log_of(self, p: subprocess.Popen[bytes]) -> str:
        for q, log in self.procs:
            if q is p:
                return log.read_text(errors="replace")
        return ""

    @staticmethod
    def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        return int(p.returncode)

    def stop_all(self) -> None:
        for p, _ in self.procs:
            self.stop(p)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    ps = Procs(tmp_path)
    try:
        yield ps
    finally:
        ps.stop_all()


def worker_progress(settings: Settings) -> tuple[int, int]:
    """(committed, end): input messages the worker group has committed, and the inputs' ends, summed
    over the worker's input topics. A SIGKILL test reads ``committed`` right after the kill and checks it
    against the final end: the kill landed mid-stream and the restarted worker had work left (else the
    test would only show a restart after the end)."""
    from rtqis.kafka.offsets import topic_offsets
    from rtqis.replay import worker_inputs
    from rtqis.topics.registry import app_id, topic_name

    names = [topic_name(t, settings.namespace) for t in worker_inputs(settings)]
    rows = topic_offsets(settings, names, group=app_id(settings.namespace))
    return sum(r.committed or 0 for r in rows), sum(r.end for r in rows)


def collect(
    settings: Settings,
    topic: str,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = 60.0,
    **kw: Any,
) -> list[dict[str, Any]]:
    """Rows of ``topic`` from the beginning until ``until(rows)`` holds; fails the test at the timeout."""
    stop = threading.Event()
    timer = threading.Timer(timeout_s, stop.set)
    timer.start()
    rows: list[dict[str, Any]] = []
    try:
        for row in iter_rows(settings, topic, from_beginning=True, stop=stop, **kw):
            rows.append(row)
            if until(rows):
                return rows
    finally:
        timer.cancel()
    if kw.get("until_end"):
        return rows
    raise AssertionError(f"timed out after {timeout_s} s waiting on {topic}; got {len(rows)} rows: {rows[-3:]}")


def wait_until(cond: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def alive_pids(pids: list[int]) -> list[int]:
    """The processes of ``pids`` still running (a zombie waiting for its parent counts as gone)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out
