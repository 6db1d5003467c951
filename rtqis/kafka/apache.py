"""Apache Kafka as the local broker (``RTQIS_BROKER=kafka``): KRaft nodes run from their jars with ``java``,
one (:class:`ApacheKafka`) or a loopback cluster of several (:class:`KafkaCluster`, ``RTQIS_KAFKA_NODES``).

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
- **Cluster** (``rtqis broker --nodes 3``): each node as above in ``RTQIS_DATA_DIR/kafka/node-N`` on its own
  pair of ports, one static voter set of all nodes, one cluster id; replication factor 3 and
  ``min.insync.replicas=2`` for every topic created without its own (ours and the internal ones).
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
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from rtqis.errors import BrokerError, PortInUseError
from rtqis.kafka.embedded import BrokerProcess, port_is_free, wait_for_broker
from rtqis.process import ChildProcess

__all__ = [
    "KAFKA_POM",
    "ApacheKafka",
    "KafkaCluster",
    "format_storage",
    "kafka_classpath",
    "kafka_version",
    "server_properties",
]

log = logging.getLogger(__name__)
_quiet = logging.getLogger("rtqis.kafka.librdkafka")

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
    node_id: int = 1,
    voters: str = "",
    replication: int = 1,
    extra: Mapping[str, object] | None = None,
) -> str:
    """The ``server.properties`` of one combined broker+controller node on loopback ``host``.

    ``voters`` is the static controller quorum (``id@host:port,...``; default: this node alone).
    ``replication`` is the replication factor of every topic created without one (ours, the consumer
    offsets, the transaction state), and ``min.insync.replicas`` is one less (at least 1): a cluster
    of 3 keeps taking acks=all writes with one node down and refuses them with two down. Retention is by
    time (``retention_hours``) in 64 MB segments, so the disk holds about one day of the feed; consumer
    groups start at once (no initial rebalance delay: tests and `rtqis up` start workers right after the
    broker); the minimum session stays Kafka's default (6 s), as on any cluster: the worker asks for
    exactly that (rtqis.agents.config).

    ``extra`` adds or replaces entries, e.g. a SASL_SSL listener (:func:`rtqis.kafka.tls.sasl_ssl_properties`)."""
    min_isr = max(1, replication - 1)
    props: dict[str, object] = {
        "node.id": node_id,
        "process.roles": "broker,controller",
        "controller.quorum.voters": voters or f"{node_id}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dirs),
        "num.partitions": partitions,
        "default.replication.factor": replication,
        "offsets.topic.replication.factor": replication,
        "offsets.topic.num.partitions": 1,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 1,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        "min.insync.replicas": min_isr,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "false",
        "log.retention.hours": retention_hours,
        "log.segment.bytes": 64 * 1024 * 1024,
        "log.retention.check.interval.ms": 60_000,
        # record timestamps are event times, ahead of the clock in a fast feed: accept them on every topic
        # (topics RT-QIS creates say it themselves: rtqis.topics.registry.TIMESTAMP_CONFIG)
        "log.message.timestamp.after.max.ms": 2**63 - 1,
        # the compaction dedupe buffer is allocated in one piece when the cleaner starts (Kafka's default
        # 128 MB): with a small heap (tests run 256 MB) a node died at start with OutOfMemoryError in CI;
        # 16 MB holds ~700,000 keys a pass, far more than the changelogs' symbols, pairs and chunks
        "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
    }
    props.update(extra or {})
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _cluster_id(path: Path) -> str:
    """The cluster id kept in ``path`` (a new one, base64url of a random UUID, written the first time).

    Never one that starts with ``-`` (1 in 64): the storage tool would read it as an option, which is why
    Kafka's own ``Uuid.randomUuid`` skips those too."""
    if path.exists():
        return path.read_text().strip()
    cid = "-"
    while cid.startswith("-"):
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
    """One Apache Kafka node (KRaft, combined roles) on ``host:port``; a context manager.

    Alone (the defaults) it is the single-node broker: node id 1, its own one-voter quorum, replication
    factor 1, its config and data in ``data_dir/kafka``. As node ``node_id`` of a
    :class:`KafkaCluster` it gets the cluster's ``voters`` and ``replication`` and its own ``home``;
    the cluster id is shared (``data_dir/kafka/cluster.id``). ``controller_port`` defaults to
    ``port + 1``; ``heap_mb`` bounds the JVM heap. PLAINTEXT by default; a secured
    node (:mod:`rtqis.kafka.tls`) takes ``extra_properties`` (its listener), ``scram_users`` (created when
    the storage is formatted) and ``client_config`` (the librdkafka security settings its readiness probe uses).
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
        node_id: int = 1,
        voters: str = "",
        replication: int = 1,
        home: Path | None = None,
        extra_properties: Mapping[str, object] | None = None,
        scram_users: Sequence[str] = (),
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.controller_port = controller_port or port + 1
        self.home = home or data_dir / "kafka"
        self.cluster_id_file = data_dir / "kafka" / "cluster.id"
        self.log_path = log_path
        self.kafka_home, self.cache_dir = kafka_home, cache_dir
        self.heap_mb, self.partitions = heap_mb, partitions
        self.node_id, self.voters, self.replication = node_id, voters, replication
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

    def check_ports(self) -> None:
        """Raise :class:`PortInUseError` if its broker or controller port is taken."""
        for p, what in ((self.port, "RTQIS_BROKER_PORT"), (self.controller_port, "the controller port")):
            if not port_is_free(self.host, p):
                raise PortInUseError(
                    f"port {p} on {self.host} is already in use: stop what runs there or change {what}"
                )

    def prepare(self) -> list[str]:
        """Fetch the jars if needed, write the config, format the storage once; the JVM's argv."""
        self.check_ports()
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
                node_id=self.node_id,
                voters=self.voters,
                replication=self.replication,
                extra=self.extra_properties,
            )
        )
        log4j = self.home / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        format_storage(self.java, classpath, config, data, self.cluster_id_file, self.scram_users)
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

    def spawn(self, argv: list[str]) -> None:
        """Start the JVM (``argv`` from :meth:`prepare`) without waiting for it (a cluster starts all its
        nodes first: none answers before a majority of the quorum runs). Call it from a thread that
        outlives the JVM."""
        log.info("starting %s node %d on %s (%s)", self.label, self.node_id, self.bootstrap, self.details)
        self._child = ChildProcess(f"Apache Kafka node {self.node_id}", argv, self.log_path, stop_timeout_s=30.0)
        self._child.start(dict(os.environ))

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the spawned node answers a metadata request (stopped again if it does not)."""
        try:
            wait_for_broker(self.bootstrap, timeout_s, self.proc, self.client_config)
        except BrokerError as e:
            self.stop()
            raise BrokerError(f"{e}{self._log_tail()}") from None
        log.info("%s node %d ready on %s (pid %s)", self.label, self.node_id, self.bootstrap, self.pid)

    def start(self, timeout_s: float = 120.0) -> Self:
        """Start the JVM and wait until the broker answers a metadata request (first start: the jars
        are fetched first, which the timeout does not count). Also restarts a node that was stopped or
        killed, on its existing data."""
        self.spawn(self.prepare())
        self.wait_ready(timeout_s)
        return self


def _broker_count(bootstrap: str) -> int:
    """How many brokers the cluster's metadata lists (0 when no broker answers)."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 0, "logger": _quiet}
    admin = AdminClient(conf)
    try:
        return len(admin.list_topics(timeout=2.0).brokers)
    except KafkaException:
        return 0


def _first_write(bootstrap: str, timeout_s: float) -> None:
    """One idempotent acks=all write to a scratch topic, retried until acknowledged or ``timeout_s``.

    A fresh cluster lists its brokers seconds before it takes such a write: the first producer id comes
    from the transaction coordinator, whose replicated log is created and loaded on that first request
    ("Coordinator load in progress"); a client with a short timeout (the offsets self-check) would fail."""
    topic = f"_rtqis.ready.{uuid.uuid4().hex[:12]}"
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 0, "logger": _quiet}
    admin = AdminClient(conf)
    try:
        admin.create_topics([NewTopic(topic, 1)], operation_timeout=timeout_s)[topic].result()
    except KafkaException as e:
        raise BrokerError(f"the Kafka cluster cannot create a topic: {e}") from None
    try:
        p = Producer(conf | {"enable.idempotence": True, "acks": "all", "message.timeout.ms": int(timeout_s * 1000)})
        errors: list[KafkaError] = []
        p.produce(topic, b"ready", on_delivery=lambda err, _msg: errors.extend([err] if err else []))
        if p.flush(timeout_s) or errors:
            raise BrokerError(f"the Kafka cluster took no write within {timeout_s:.0f} s ({errors or 'no answer'})")
    finally:
        admin.delete_topics([topic], operation_timeout=timeout_s)[topic].result()


class KafkaCluster(BrokerProcess):
    """``nodes`` Apache Kafka nodes on loopback, each a :class:`ApacheKafka` with combined roles, one static
    voter set of all of them, one cluster id; a context manager with the single node's interface.

    Node ``i`` (1-based) listens on ``port + 2(i-1)`` (broker) and the next port (controller), keeps its
    config and data in ``data_dir/kafka/node-i`` (formatted once) and logs to ``log_path`` with
    ``-node-i`` before the suffix (``kafka-node-i.log``). Every topic created without a replication
    factor gets ``min(nodes, 3)`` replicas and ``min.insync.replicas`` one less (3 nodes: RF 3, min ISR
    2), the internal ones too. The bootstrap lists every node.
    """

    label = "Apache Kafka cluster"
    durable = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        data_dir: Path = Path("var"),
        log_path: Path | None = None,
        *,
        nodes: int = 3,
        kafka_home: Path | None = None,
        cache_dir: Path | None = None,
        heap_mb: int = 512,
        partitions: int = 1,
    ) -> None:
        if nodes < 1:
            raise BrokerError(f"a Kafka cluster needs at least one node, not {nodes}")
        self.host, self.port, self.log_path = host, port, log_path
        ports = [(port + 2 * i, port + 2 * i + 1) for i in range(nodes)]
        voters = ",".join(f"{i + 1}@{host}:{c}" for i, (_, c) in enumerate(ports))
        self.nodes = [
            ApacheKafka(
                host,
                p,
                data_dir,
                None if log_path is None else log_path.with_name(f"{log_path.stem}-node-{i + 1}{log_path.suffix}"),
                controller_port=c,
                kafka_home=kafka_home,
                cache_dir=cache_dir,
                heap_mb=heap_mb,
                partitions=partitions,
                node_id=i + 1,
                voters=voters,
                replication=min(nodes, 3),
                home=data_dir / "kafka" / f"node-{i + 1}",
            )
            for i, (p, c) in enumerate(ports)
        ]
        if log_path is not None:
            self.log_path = self.nodes[0].log_path
        self._warned: set[int] = set()

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def details(self) -> str:
        n = self.nodes[0]
        v = n.version or f"from {n.kafka_home}"
        return (
            f"{v}, KRaft, {len(self.nodes)} nodes, replication {n.replication}, min ISR {max(1, n.replication - 1)}, "
            f"data in {n.home.parent}/node-N"
        )

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The first node that exited, else node 1 (what a caller polls for an exit code)."""
        dead = [n for n in self.nodes if n.proc is not None and n.proc.poll() is not None]
        return (dead or self.nodes)[0].proc

    @property
    def pid(self) -> int | None:
        return self.nodes[0].pid

    def start(self, timeout_s: float = 180.0) -> Self:
        """Start every node, then wait until each answers, the metadata lists them all and an idempotent
        write is acknowledged (:func:`_first_write`)."""
        for n in self.nodes:
            n.check_ports()  # before any JVM starts
        try:
            # every node configured and formatted (a JVM each, seconds) before the first starts: their
            # ports are then checked and bound within moments of each other
            argvs = [n.prepare() for n in self.nodes]
            for n, argv in zip(self.nodes, argvs, strict=True):
                n.spawn(argv)
            deadline = time.monotonic() + timeout_s
            for n in self.nodes:
                n.wait_ready(max(1.0, deadline - time.monotonic()))
            while (count := _broker_count(self.bootstrap)) < len(self.nodes):
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"the Kafka cluster lists {count} of {len(self.nodes)} brokers after {timeout_s:.0f} s"
                    )
                time.sleep(0.2)
            _first_write(self.bootstrap, max(10.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        log.info("%s ready on %s (%d nodes)", self.label, self.bootstrap, len(self.nodes))
        return self

    def alive(self) -> bool:
        """True while a majority of the nodes runs (the quorum and min ISR hold); a dead node is logged once."""
        up = 0
        for n in self.nodes:
            if n.alive():
                up += 1
            elif n.pid is not None and n.node_id not in self._warned:
                self._warned.add(n.node_id)
                log.warning("Kafka node %d (pid %s) exited: see %s", n.node_id, n.pid, n.log_path)
        return up > len(self.nodes) // 2

    def rss_bytes(self) -> int:
        """Resident memory of all its JVMs."""
        return sum(n.rss_bytes() for n in self.nodes)

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM to every node at once, then wait for each (SIGKILL after its timeout): stopped one by
        one, the last node would wait for a controller quorum that is gone."""
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                try:
                    os.killpg(n.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for n in self.nodes:
            n.stop(timeout_s)
