"""``docker-compose.yml``, generated: the brokers' settings come from the local Kafka's own configuration.

    python -m deploy.compose            # rewrite docker-compose.yml
    python -m deploy.compose --check    # exit 1 when the committed file differs (tests/test_deploy.py does this)

One source: :func:`rtqis.kafka.apache.server_properties` writes the ``server.properties`` of the Kafka that
``RTQIS_BROKER=kafka`` runs here (and CI tests on); :func:`broker_properties` takes that same property
map and changes only what a container's place in the network decides (:data:`PLACEMENT_KEYS`: node id,
listeners, quorum voters, log dir) and, for the ``cluster`` profile, the replication factors
(:data:`CLUSTER_KEYS`: 3 copies, ``min.insync.replicas`` 2). :func:`kafka_env` turns it into the
``KAFKA_*`` variables of the ``apache/kafka`` image (``log.dirs`` -> ``KAFKA_LOG_DIRS``).

The RT-QIS services read every setting from ONE file, ``deploy/rtqis.env`` (the ``RTQIS_*`` variables of
``rtqis config``); the values the stack needs (dashboard port, data dir, JVM heap, partitions) are read
from it through :class:`rtqis.settings.Settings`, so a changed port there changes the published port here.
"""

from __future__ import annotations

import argparse
import base64
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from rtqis import __version__
from rtqis.kafka.apache import kafka_version, server_properties
from rtqis.settings import Settings

__all__ = [
    "CLUSTER_ID",
    "CLUSTER_KEYS",
    "COMPOSE_PATH",
    "ENV_PATH",
    "PLACEMENT_KEYS",
    "RTQIS_UID",
    "broker_properties",
    "compose",
    "env_settings",
    "kafka_env",
    "parse_properties",
    "read_env_file",
    "render",
]

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_PATH = ROOT / "docker-compose.yml"
#: the one environment file of the stack (relative to the compose file, as compose reads it)
ENV_FILE = "deploy/rtqis.env"
ENV_PATH = ROOT / ENV_FILE
#: the image's non-root user (Dockerfile: useradd --uid); the sink's reader socket lives in /tmp/rtqis-<uid>
RTQIS_UID = 10001
#: the KRaft cluster id of the stack (the brokers of one cluster share it); fixed, so a re-created
#: container with its old volume keeps its data
CLUSTER_ID = base64.urlsafe_b64encode(uuid.uuid5(uuid.NAMESPACE_URL, "rtqis/compose").bytes).decode().rstrip("=")
#: the keys a container's place decides; every other key is the local Kafka's, unchanged
PLACEMENT_KEYS = frozenset(
    {
        "node.id",
        "controller.quorum.voters",
        "listeners",
        "advertised.listeners",
        "listener.security.protocol.map",
        "log.dirs",
    }
)
#: what the three-broker cluster changes: three copies of everything, a write needs two
CLUSTER_KEYS: dict[str, str] = {
    "default.replication.factor": "3",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "min.insync.replicas": "2",
}
#: inside the network: clients on 9092, controllers on 9093; the host reaches broker N on 9093 + N
BROKER_PORT, CONTROLLER_PORT, EXTERNAL_PORT = 9092, 9093, 9094
KAFKA_DATA = "/var/lib/kafka/data"
#: the name every client bootstraps from: the single broker, or (a network alias) all three of the cluster
KAFKA_HOST = "kafka"
DATA_VOLUME, RUN_VOLUME = "rtqis-data", "rtqis-run"


def parse_properties(text: str) -> dict[str, str]:
    """A ``server.properties`` text as a dict (``key=value`` lines; comments and blanks skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def kafka_env(props: dict[str, str]) -> dict[str, str]:
    """The ``apache/kafka`` image's variables for ``props``: ``KAFKA_`` + the key upper-cased, ``.`` -> ``_``
    (and, as the image reads them back, ``_`` -> ``__``, ``-`` -> ``___``)."""
    env = {}
    for k, v in props.items():
        name = k.replace("-", "\0").replace("_", "__").replace(".", "_").replace("\0", "___").upper()
        env[f"KAFKA_{name}"] = str(v)
    return env


def local_properties(settings: Settings) -> dict[str, str]:
    """The local Kafka's configuration (``RTQIS_BROKER=kafka``) for these settings, as a dict."""
    return parse_properties(
        server_properties(
            host="127.0.0.1",
            port=BROKER_PORT,
            controller_port=CONTROLLER_PORT,
            log_dirs=Path(KAFKA_DATA),
            partitions=settings.partitions,
        )
    )


def broker_properties(settings: Settings, node: int = 1, nodes: int = 1) -> dict[str, str]:
    """Broker ``node`` (1-based) of a ``nodes``-broker stack: the local Kafka's properties with the
    container's placement (:data:`PLACEMENT_KEYS`) and, for a cluster, :data:`CLUSTER_KEYS`."""
    host = KAFKA_HOST if nodes == 1 else f"kafka-{node}"
    ext = EXTERNAL_PORT + node - 1
    voters = [(i, KAFKA_HOST if nodes == 1 else f"kafka-{i}") for i in range(1, nodes + 1)]
    props = local_properties(settings)
    props |= {
        "node.id": str(node),
        "controller.quorum.voters": ",".join(f"{i}@{h}:{CONTROLLER_PORT}" for i, h in voters),
        "listeners": f"PLAINTEXT://:{BROKER_PORT},CONTROLLER://:{CONTROLLER_PORT},EXTERNAL://:{ext}",
        "advertised.listeners": f"PLAINTEXT://{host}:{BROKER_PORT},EXTERNAL://127.0.0.1:{ext}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT",
        "log.dirs": KAFKA_DATA,
    }
    if nodes > 1:
        props |= CLUSTER_KEYS
    return props


def read_env_file(path: Path = ENV_PATH) -> dict[str, str]:
    """``KEY=value`` lines of an env file (compose's format: no quotes, ``#`` comments)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def env_settings(env: dict[str, str]) -> Settings:
    """The :class:`Settings` an RT-QIS container gets from ``env`` (its RTQIS_* variables only: not this
    process's environment nor an rtqis.toml, which the generated file must not depend on)."""
    fields = {k.removeprefix("RTQIS_").lower(): v for k, v in env.items() if k.startswith("RTQIS_")}
    return Settings.model_validate(fields)


def _kafka_service(settings: Settings, node: int, nodes: int) -> dict[str, Any]:
    ext = EXTERNAL_PORT + node - 1
    env = {
        "CLUSTER_ID": CLUSTER_ID,
        "KAFKA_HEAP_OPTS": f"-Xmx{settings.kafka_heap_mb}m -Xms{min(128, settings.kafka_heap_mb)}m",
        **kafka_env(broker_properties(settings, node, nodes)),
    }
    svc: dict[str, Any] = {
        "image": f"apache/kafka:{kafka_version()}",
        "restart": "unless-stopped",
        "environment": env,
        "ports": [f"127.0.0.1:{ext}:{ext}"],
        "volumes": [f"{'kafka-data' if nodes == 1 else f'kafka-{node}-data'}:{KAFKA_DATA}"],
        "healthcheck": {
            "test": [
                "CMD-SHELL",
                "/opt/kafka/bin/kafka-broker-api-versions.sh"
                f" --bootstrap-server localhost:{BROKER_PORT} >/dev/null 2>&1",
            ],
            "interval": "10s",
            "timeout": "10s",
            "retries": 12,
            "start_period": "30s",
        },
    }
    if nodes == 1:
        svc["profiles"] = ["single"]
    else:
        svc["profiles"] = ["cluster"]
        svc["hostname"] = f"kafka-{node}"
        svc["networks"] = {"default": {"aliases": [KAFKA_HOST]}}
    return svc


def _brokers_ready(nodes: list[str]) -> dict[str, Any]:
    # only the active profile's brokers exist: the others are not required
    return {n: {"condition": "service_healthy", "required": False} for n in nodes}


def _rtqis_service(command: list[str], *, restart: str = "unless-stopped", **extra: Any) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "image": f"rtqis:{__version__}",
        "env_file": [ENV_FILE],
        "command": command,
        "restart": restart,
        "depends_on": {"topic-init": {"condition": "service_completed_successfully"}},
    }
    svc.update(extra)
    return svc


def compose(settings: Settings) -> dict[str, Any]:
    """The compose model of the stack for the settings of ``deploy/rtqis.env``."""
    brokers = ["kafka", "kafka-1", "kafka-2", "kafka-3"]
    run = f"/tmp/rtqis-{RTQIS_UID}"  # noqa: S108 - the sink's private socket dir (rtqis.sinks.readers)
    data = str(settings.data_dir)
    shared = [f"{DATA_VOLUME}:{data}", f"{RUN_VOLUME}:{run}"]
    db = Path(data) / "rtqis.duckdb"
    sink_up = (
        "import sys; from pathlib import Path; from rtqis.sinks.readers import socket_path; "
        f"sys.exit(not socket_path(Path('{db}')).is_socket())"
    )
    ui = settings.ui_port
    ui_up = f"import urllib.request as u; u.urlopen('http://127.0.0.1:{ui}/dashboard', timeout=5)"
    services: dict[str, Any] = {
        "kafka": _kafka_service(settings, 1, 1),
        **{f"kafka-{n}": _kafka_service(settings, n, 3) for n in (1, 2, 3)},
        "topic-init": {
            "image": f"rtqis:{__version__}",
            "build": {"context": "."},
            "env_file": [ENV_FILE],
            "command": ["topics", "create"],
            "restart": "on-failure:5",
            "depends_on": _brokers_ready(brokers),
        },
        "producer": _rtqis_service(["produce", "${PRODUCER:-synthetic}"]),
        "worker": _rtqis_service(["worker"]),
        "sink": _rtqis_service(
            ["sink", "--backfill-hours", "${SINK_BACKFILL_HOURS:-0}"],
            volumes=list(shared),
            healthcheck={
                "test": ["CMD", "python", "-c", sink_up],
                "interval": "15s",
                "timeout": "10s",
                "retries": 8,
                "start_period": "30s",
            },
        ),
        "dashboard": _rtqis_service(
            ["ui", "--host", "0.0.0.0", "--port", str(ui)],  # noqa: S104 - inside its container
            volumes=list(shared),
            ports=[f"127.0.0.1:{ui}:{ui}"],
            healthcheck={
                "test": ["CMD", "python", "-c", ui_up],
                "interval": "15s",
                "timeout": "10s",
                "retries": 8,
                "start_period": "60s",
            },
        ),
    }
    services["dashboard"]["depends_on"] = {"sink": {"condition": "service_healthy"}}
    volumes: dict[str, dict[str, Any]] = {
        v: {} for v in ("kafka-data", "kafka-1-data", "kafka-2-data", "kafka-3-data", DATA_VOLUME, RUN_VOLUME)
    }
    return {"name": "rtqis", "services": services, "volumes": volumes}


_HEADER = """\
# GENERATED by `python -m deploy.compose` from rtqis/kafka/apache.py (the local Kafka's config) and
# deploy/rtqis.env (the RT-QIS settings): edit those, then regenerate. tests/test_deploy.py checks it.
#
#   docker compose up --build -d                  # single Kafka node (profile `single`, the default in .env)
#   open http://127.0.0.1:{ui}/dashboard
#   docker compose --profile cluster up --build -d   # three brokers, RF 3, min ISR 2 (instead of `single`)
#   docker compose up -d --scale worker=3         # workers share the RTQIS_PARTITIONS partitions
#   PRODUCER=binance SINK_BACKFILL_HOURS=24 docker compose up -d   # live Binance instead of synthetic
#
# Needs Docker Compose 2.20+ (depends_on `required: false`). See deploy/README.md. Validated statically only.
"""


def render(settings: Settings) -> str:
    """The text of ``docker-compose.yml``."""
    body = yaml.safe_dump(compose(settings), sort_keys=False, default_flow_style=False, width=200)
    return _HEADER.format(ui=settings.ui_port) + body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.compose", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docker-compose.yml is not what it generates")
    a = ap.parse_args(argv)
    text = render(env_settings(read_env_file()))
    if a.check:
        same = COMPOSE_PATH.exists() and COMPOSE_PATH.read_text() == text
        if not same:
            sys.stderr.write("docker-compose.yml is stale: run `python -m deploy.compose`\n")
        return 0 if same else 1
    COMPOSE_PATH.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
