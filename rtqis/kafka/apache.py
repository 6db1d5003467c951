"""Apache Kafka as the local broker (``RTQIS_BROKER=kafka``): one KRaft node run from its jars with ``java``.

Same interface as :class:`~rtqis.kafka.embedded.EmbeddedBroker` (start/stop/alive/bootstrap/log_path/
pid/rss_bytes, a context manager), chosen by :func:`rtqis.kafka.embedded.local_broker`.

- **Jars**: ``KAFKA_HOME/libs`` when a distribution is given (``RTQIS_KAFKA_HOME`` or ``KAFKA_HOME``);
  otherwise Maven resolves the pinned ``deploy/kafka/pom.xml`` once into
  ``~/.cache/rtqis/kafka-<version>/libs`` (``mvn dependency:copy-dependencies``, under a file lock so two
  starts do not download twice), reused by every later run.
- **Config**: ``server.properties`` is generated on every start in ``RTQIS_DATA_DIR/kafka``: node id 1,
  ``process.roles=broker,controller``, a static one-voter quorum, broker and controller listeners on
  loopback, ``log.dirs`` = ``RTQIS_DATA_DIR/kafka/data``, replication factors 1, retention.
- **Storage**: formatted once (``kafka.tools.StorageTool format``) with a cluster id kept in
  ``RTQIS_DATA_DIR/kafka/cluster.id``: the data (topics, messages, committed offsets) survives a restart,
  unlike Tansu's memory storage.
- **Process**: the JVM (bounded heap) is a :class:`~rtqis.process.ChildProcess`: SIGTERM on stop (Kafka
  shuts down cleanly), and it gets SIGTERM when its parent dies, even by SIGKILL, so no JVM is orphaned.
  Its log (log4j to stdout) goes to ``log_path`` (``var/logs/kafka.log`` for ``rtqis up``/``broker``).

Java or Maven missing is one :class:`~rtqis.errors.BrokerError` line.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from rtqis.errors import BrokerError, PortInUseError
from rtqis.kafka.embedded import BrokerProcess, port_is_free
from rtqis.process import ChildProcess

__all__ = [
    "KAFKA_POM",
    "ApacheKafka",
    "format_storage",
    "kafka_classpath",
    "kafka_version",
    "server_properties",
]

log = logging.getLogger(__name__)

#: the pinned pom that names the Kafka version and lets Maven resolve its jars
KAFKA_POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
#: the broker's entry point, and the storage formatter (both in kafka_2.13)
_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
#: how long Maven may take to fetch the jars the first time (s); ~45 MB
_MVN_TIMEOUT_S = 600.0
_FORMAT_TIMEOUT_S = 120.0
#: log4j 2 configuration: INFO to stdout (the child's log file), without the per-request noise and the
#: ~2000 lines of configuration dumps each start
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def kafka_version(pom: Path = KAFKA_POM) -> str:
    """The Kafka version pinned in ``pom`` (its ``<kafka.version>`` property)."""
    try:
        m = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    except OSError as e:
        raise BrokerError(f"the Kafka pom {pom} cannot be read ({e.strerror}): run from a source checkout") from None
    if m is None:
        raise BrokerError(f"{pom} names no <kafka.version>")
    return m.group(1)


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "RTQIS_BROKER=kafka needs Java 17+ but `java` is not on PATH: install OpenJDK 17 or use RTQIS_BROKER=tansu"
        )
    return java


def _default_cache() -> Path:
    return Path.home() / ".cache" / "rtqis"


def kafka_classpath(kafka_home: Path | None = None, cache_dir: Path | None = None, pom: Path = KAFKA_POM) -> str:
    """The JVM class path of the broker: ``kafka_home/libs/*`` when given, else the jars of ``pom``
    resolved by Maven into ``cache_dir/kafka-<version>/libs`` (fetched once, then reused).

    A ``.complete`` marker is written only after Maven succeeded, so an interrupted download is redone."""
    if kafka_home is not None:
        libs = kafka_home / "libs"
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise BrokerError(f"KAFKA_HOME={kafka_home} has no libs/kafka_2.13-*.jar: not a Kafka distribution")
        return f"{libs}/*"
    version = kafka_version(pom)
    root = (cache_dir or _default_cache()) / f"kafka-{version}"
    libs, done = root / "libs", root / ".complete"
    if done.exists():
        return f"{libs}/*"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            f"RTQIS_BROKER=kafka needs Maven (`mvn`) to fetch Kafka {version} once, and it is not "
            "on PATH: install Maven, set KAFKA_HOME to a Kafka distribution, or use RTQIS_BROKER=tansu"
        )
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another start may be downloading: wait for it, then reuse
        if done.exists():
            return f"{libs}/*"
        tmp = root / "libs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        argv = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        log.info("fetching Apache Kafka %s jars with Maven into %s", version, libs)
        t0 = time.monotonic()
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=_MVN_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"Maven did not fetch Kafka {version} within {_MVN_TIMEOUT_S:.0f} s") from None
        if r.returncode != 0:
            tail = " | ".join((r.stdout + r.stderr).strip().splitlines()[-3:])
            raise BrokerError(f"Maven could not fetch Kafka {version} (exit {r.returncode}): {tail}")
        tmp.rename(libs)
        done.write_text(f"{version}\n")
        log.info("Kafka %s jars fetched in %.1f s", version, time.monotonic() - t0)
    return f"{libs}/*"


def server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dirs: Path,
    partitions: int = 1,
    retention_hours: int = 24,
    extra: Mapping[str, object] | None = None,
) -> str:
    """The ``server.properties`` of a single combined broker+controller node on loopback ``host``.

    Replication factors are 1 (one node); retention is by time (``retention_hours``) in 64 MB segments,
    so the disk holds about one day of the feed; consumer groups start at once (no initial rebalance
    delay: tests and `rtqis up` start workers right after the broker); the minimum session stays Kafka's
    default (6 s), as on any cluster: the worker asks for exactly that (rtqis.agents.config).

    ``extra`` adds or replaces entries, e.g. a SASL_SSL listener (:func:`rtqis.kafka.tls.sasl_ssl_properties`)."""
    props: dict[str, object] = {
        "node.id": 1,
        "process.roles": "broker,controller",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dirs),
        "num.partitions": partitions,
        "default.replication.factor": 1,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "min.insync.replicas": 1,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "false",
        "log.retention.hours": retention_hours,
        "log.segment.bytes": 64 * 1024 * 1024,
        "log.retention.check.interval.ms": 60_000,
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
    }
    props.update(extra or {})
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _cluster_id(path: Path) -> str:
    """The cluster id kept in ``path`` (a new one, base64url of a random UUID, written the first time)."""
    if path.exists():
        return path.read_text().strip()
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.write_text(cid + "\n")
    return cid


def format_storage(
    java: str, classpath: str, config: Path, log_dirs: Path, cluster_id_file: Path, scram: Sequence[str] = ()
) -> bool:
    """Format ``log_dirs`` for KRaft unless it already is (``meta.properties`` present); True if it formatted.

    ``scram`` are ``--add-scram`` specs (:func:`rtqis.kafka.tls.scram_credentials`): SCRAM users created
    in the metadata log at format time."""
    if (log_dirs / "meta.properties").exists():
        return False
    cid = _cluster_id(cluster_id_file)
    argv = [
        java,
        "-Xmx256m",
        "-cp",
        classpath,
        f"-Dlog4j2.configurationFile={config.parent / 'log4j2.properties'}",
        _STORAGE_TOOL,
        "format",
        f"--cluster-id={cid}",  # one argument even when the id starts with "-" (1 in 64 random ids)
        "-c",
        str(config),
        "--ignore-formatted",
        *(a for spec in scram for a in ("--add-scram", spec)),
    ]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=_FORMAT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise BrokerError(f"formatting Kafka storage in {log_dirs} took over {_FORMAT_TIMEOUT_S:.0f} s") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip() and not ln.startswith("\t")]
        raise BrokerError(f"formatting Kafka storage in {log_dirs} failed: {' | '.join(lines[-2:])}")
    log.info("formatted Kafka storage in %s (cluster id %s)", log_dirs, cid)
    return True


class ApacheKafka(BrokerProcess):
    """A single-node Apache Kafka (KRaft, combined roles) on ``host:port``; a context manager.

    ``data_dir`` holds its config, cluster id and data (``data_dir/kafka``); ``controller_port``
    defaults to ``port + 1``; ``heap_mb`` bounds the JVM heap. PLAINTEXT by default; a secured node
    (:mod:`rtqis.kafka.tls`) takes ``extra_properties`` (its listener), ``scram_users`` (created when the
    storage is formatted) and ``client_config`` (the librdkafka security settings its readiness probe uses).
    """

    label = "Apache Kafka"
    #: its messages and offsets survive a restart (on disk in data_dir/kafka)
    durable = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        data_dir: Path = Path("var"),
        log_path: Path | None = None,
        *,
        controller_port: int | None = None,
        kafka_home: Path | None = None,
        cache_dir: Path | None = None,
        heap_mb: int = 512,
        partitions: int = 1,
        extra_properties: Mapping[str, object] | None = None,
        scram_users: Sequence[str] = (),
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.controller_port = controller_port or port + 1
        self.home = data_dir / "kafka"
        self.log_path = log_path
        self.kafka_home, self.cache_dir = kafka_home, cache_dir
        self.heap_mb, self.partitions = heap_mb, partitions
        self.java = _java()
        self.version = "" if kafka_home else kafka_version()
        self.extra_properties, self.scram_users = dict(extra_properties or {}), list(scram_users)
        self.client_config = dict(client_config) if client_config else None
        self._child: ChildProcess | None = None

    @property
    def details(self) -> str:
        """What the user should know of it, for messages: which Kafka, where its data is."""
        v = self.version or f"from {self.kafka_home}"
        return f"{v}, KRaft, data in {self.home}"

    def _check_ports(self) -> None:
        for p, what in ((self.port, "RTQIS_BROKER_PORT"), (self.controller_port, "the controller port")):
            if not port_is_free(self.host, p):
                raise PortInUseError(
                    f"port {p} on {self.host} is already in use: stop what runs there or change {what}"
                )

    def prepare(self) -> list[str]:
        """Fetch the jars if needed, write the config, format the storage once; the JVM's argv."""
        self._check_ports()
        classpath = kafka_classpath(self.kafka_home, self.cache_dir)
        self.home.mkdir(parents=True, exist_ok=True)
        data = self.home / "data"
        config = self.home / "server.properties"
        config.write_text(
            server_properties(
                host=self.host,
                port=self.port,
                controller_port=self.controller_port,
                log_dirs=data,
                partitions=self.partitions,
                extra=self.extra_properties,
            )
        )
        log4j = self.home / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        format_storage(self.java, classpath, config, data, self.home / "cluster.id", self.scram_users)
        return [
            self.java,
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(128, self.heap_mb)}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
            _MAIN_CLASS,
            str(config),
        ]

    def start(self, timeout_s: float = 120.0) -> Self:
        """Start the JVM and wait until the broker answers a metadata request (first start: the jars
        are fetched first, which the timeout does not count)."""
        argv = self.prepare()
        log.info("starting %s on %s (%s)", self.label, self.bootstrap, self.details)
        self._launch("Apache Kafka", argv, dict(os.environ), stop_timeout_s=30.0, timeout_s=timeout_s)
        return self
