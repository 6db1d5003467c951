"""The deployable stack, checked statically (no Docker engine here): docker-compose.yml, deploy/rtqis.env,
the Dockerfile and .dockerignore against the CLI, the settings and the local Kafka's configuration."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtqis.cli import build_parser, main
from rtqis.kafka.apache import kafka_version, server_properties
from rtqis.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy import compose as dc  # noqa: E402
from deploy import lockfile  # noqa: E402

RTQIS_SERVICES = ("topic-init", "producer", "worker", "sink", "dashboard")
BROKERS = {"single": ["kafka"], "cluster": ["kafka-1", "kafka-2", "kafka-3"]}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return yaml.safe_load(dc.COMPOSE_PATH.read_text())


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return dc.read_env_file()


@pytest.fixture(scope="module")
def settings(env: dict[str, str]) -> Settings:
    return dc.env_settings(env)


def interpolate(text: str, shell: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}``, with ``shell`` as the user's environment."""
    return _VAR.sub(lambda m: (shell or {}).get(m.group(1)) or (m.group(2) or ""), text)


def _props(env: dict[str, str]) -> dict[str, str]:
    """What the apache/kafka image makes of KAFKA_* variables (its own rule, written out independently)."""
    out = {}
    for k, v in env.items():
        if k.startswith("KAFKA_") and k != "KAFKA_HEAP_OPTS":
            name = k.removeprefix("KAFKA_").lower().replace("___", "-").replace("__", "\0").replace("_", ".")
            out[name.replace("\0", "_")] = v
    return out


# --- one source ---------------------------------------------------------------------------------------


def test_committed_compose_is_the_generated_one(settings: Settings) -> None:
    assert dc.COMPOSE_PATH.read_text() == dc.render(settings), "run `python -m deploy.compose`"
    assert dc.main(["--check"]) == 0


def test_generated_kafka_env_equals_the_local_server_properties(stack: dict[str, Any], settings: Settings) -> None:
    local = dc.parse_properties(
        server_properties(
            host="127.0.0.1", port=9092, controller_port=9093, log_dirs=Path("/x"), partitions=settings.partitions
        )
    )
    for profile, names in BROKERS.items():
        for name in names:
            props = _props(stack["services"][name]["environment"])
            assert set(props) == set(local), name  # no key added or lost
            differ = {k for k in local if props[k] != local[k]}
            allowed = dc.PLACEMENT_KEYS | (set(dc.CLUSTER_KEYS) if profile == "cluster" else set())
            assert differ <= allowed, (name, {k: (props[k], local[k]) for k in differ - allowed})
            shared = set(local) - allowed
            assert (
                len(shared) >= 12 and "log.retention.hours" in shared and "group.initial.rebalance.delay.ms" in shared
            )


def test_kafka_env_names_round_trip() -> None:
    props = {"log.dirs": "/d", "a.b_c.d-e": "1", "share.coordinator.state.topic.min.isr": "2"}
    env = dc.kafka_env(props)
    assert env["KAFKA_LOG_DIRS"] == "/d" and env["KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR"] == "2"
    assert _props(env) == props


def test_brokers_single_and_cluster(stack: dict[str, Any], env: dict[str, str], settings: Settings) -> None:
    s = stack["services"]
    single = _props(s["kafka"]["environment"])
    assert s["kafka"]["profiles"] == ["single"]
    assert single["node.id"] == "1" and single["controller.quorum.voters"] == "1@kafka:9093"
    assert single["default.replication.factor"] == "1" and single["min.insync.replicas"] == "1"
    ids = set()
    for n, name in enumerate(BROKERS["cluster"], 1):
        svc = s[name]
        p = _props(svc["environment"])
        assert svc["profiles"] == ["cluster"]
        assert p["controller.quorum.voters"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert p["node.id"] == str(n) and p["advertised.listeners"].startswith(f"PLAINTEXT://{name}:9092,")
        assert p["default.replication.factor"] == "3" and p["offsets.topic.replication.factor"] == "3"
        assert p["min.insync.replicas"] == "2" and p["transaction.state.log.min.isr"] == "2"
        assert "kafka" in svc["networks"]["default"]["aliases"]  # clients bootstrap from `kafka` in both
        ids.add(svc["environment"]["CLUSTER_ID"])
    assert len(ids) == 1
    for name in ("kafka", *BROKERS["cluster"]):
        svc = s[name]
        assert svc["image"] == f"apache/kafka:{kafka_version()}" == "apache/kafka:4.4.0"
        assert svc["environment"]["KAFKA_HEAP_OPTS"].startswith(f"-Xmx{settings.kafka_heap_mb}m")
        assert svc["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert svc["environment"]["KAFKA_NUM_PARTITIONS"] == env["RTQIS_PARTITIONS"]
        p = _props(svc["environment"])
        assert any(v.endswith(":" + p["log.dirs"]) for v in svc["volumes"])  # the data dir is a volume
        ext = re.search(r"EXTERNAL://127\.0\.0\.1:(\d+)", p["advertised.listeners"])
        assert ext and svc["ports"] == [f"127.0.0.1:{ext.group(1)}:{ext.group(1)}"]
        assert f"EXTERNAL://:{ext.group(1)}" in p["listeners"]


def test_bootstrap_names_the_compose_broker_and_listener(stack: dict[str, Any], settings: Settings) -> None:
    host, _, port = settings.bootstrap_servers.partition(":")
    s = stack["services"]
    assert host == "kafka" and "kafka" in s
    for name in ("kafka", *BROKERS["cluster"]):
        p = _props(s[name]["environment"])
        assert f"PLAINTEXT://:{port}" in p["listeners"].split(",")
        assert name == "kafka" or host in s[name]["networks"]["default"]["aliases"]


# --- the RT-QIS services --------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", [{}, {"PRODUCER": "binance", "SINK_BACKFILL_HOURS": "24"}])
def test_every_command_is_a_real_rtqis_command(stack: dict[str, Any], shell: dict[str, str]) -> None:
    parser = build_parser()
    seen = {}
    for name in RTQIS_SERVICES:
        svc = stack["services"][name]
        argv = [interpolate(str(a), shell) for a in svc["command"]]
        args = parser.parse_args(argv)  # SystemExit(2) on anything the CLI does not know
        seen[name] = (args.cmd, argv)
    assert seen["topic-init"][0] == "topics" and seen["topic-init"][1] == ["topics", "create"]
    assert seen["producer"][1] == ["produce", shell.get("PRODUCER", "synthetic")]
    assert seen["worker"][0] == "worker" and seen["sink"][0] == "sink" and seen["dashboard"][0] == "ui"


def test_every_variable_is_a_real_setting(stack: dict[str, Any], env: dict[str, str], monkeypatch: Any) -> None:
    fields = set(Settings.model_fields)
    names = set(env)
    for svc in stack["services"].values():
        names |= {k for k in svc.get("environment", {}) if k.startswith("RTQIS_")}
        assert svc.get("env_file", [dc.ENV_FILE]) == [dc.ENV_FILE]  # ONE env file
    assert names and all(n.startswith("RTQIS_") for n in env)
    unknown = {n for n in names if n.removeprefix("RTQIS_").lower() not in fields}
    assert not unknown
    # and the values are valid, read the way `rtqis config` reads them (the environment)
    for k in list(__import__("os").environ):
        if k.startswith("RTQIS_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("RTQIS_CONFIG", "/nonexistent.toml")
    assert main(["config"]) == 0


def test_config_env_round_trips(capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("RTQIS_CONFIG", "/nonexistent.toml")
    monkeypatch.setenv("RTQIS_PARTITIONS", "3")
    monkeypatch.setenv("RTQIS_SASL_PASSWORD", "hunter2")
    assert main(["config", "--env"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "# RTQIS_SASL_PASSWORD=" in out
    lines = dict(ln.split("=", 1) for ln in out.splitlines() if not ln.startswith("#"))
    assert lines["RTQIS_PARTITIONS"] == "3" and lines["RTQIS_SYMBOLS"] == "BTCUSDT,ETHUSDT"
    back = dc.env_settings(lines)
    assert back.model_dump(exclude={"sasl_password"}) == Settings(partitions=3).model_dump(exclude={"sasl_password"})


def test_services_restart_health_and_order(stack: dict[str, Any]) -> None:
    s = stack["services"]
    for name, svc in s.items():
        assert svc.get("restart") in ("unless-stopped", "always") or name == "topic-init", name
    assert s["topic-init"]["restart"].startswith("on-failure")
    for name in ("kafka", *BROKERS["cluster"], "sink", "dashboard"):
        hc = s[name]["healthcheck"]
        assert hc["test"][0] in ("CMD", "CMD-SHELL") and hc["interval"] and hc["retries"] >= 3, name
    init_deps = s["topic-init"]["depends_on"]
    assert set(init_deps) == {"kafka", *BROKERS["cluster"]}
    assert all(d == {"condition": "service_healthy", "required": False} for d in init_deps.values())
    for name in ("producer", "worker", "sink"):
        assert s[name]["depends_on"] == {"topic-init": {"condition": "service_completed_successfully"}}
    assert s["dashboard"]["depends_on"] == {"sink": {"condition": "service_healthy"}}
    # the worker scales: no fixed name, no host port, no volume of its own
    assert not {"container_name", "ports", "volumes"} & set(s["worker"])


def test_volumes_and_ports(stack: dict[str, Any], settings: Settings) -> None:
    s = stack["services"]
    declared = set(stack["volumes"])
    for svc in s.values():
        for v in svc.get("volumes", []):
            assert v.split(":")[0] in declared
    data = f"{dc.DATA_VOLUME}:{settings.data_dir}"
    run = f"{dc.RUN_VOLUME}:/tmp/rtqis-{dc.RTQIS_UID}"
    assert data in s["sink"]["volumes"] and run in s["sink"]["volumes"]
    assert s["dashboard"]["volumes"] == s["sink"]["volumes"]  # it reads the sink's socket and files
    port = settings.ui_port
    assert s["dashboard"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    argv = s["dashboard"]["command"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == str(port)
    assert f":{port}/dashboard" in " ".join(s["dashboard"]["healthcheck"]["test"])
    assert str(settings.data_dir / "rtqis.duckdb") in " ".join(s["sink"]["healthcheck"]["test"])


def test_no_latest_and_rtqis_image_versioned(stack: dict[str, Any]) -> None:
    from rtqis import __version__

    for name, svc in stack["services"].items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), name
        if name in RTQIS_SERVICES:
            assert image == f"rtqis:{__version__}"
    assert sum("build" in svc for svc in stack["services"].values()) == 1  # one build, one image


# --- the image ------------------------------------------------------------------------------------------


def _dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_dockerfile_multi_stage_slim_non_root_from_the_lock() -> None:
    lines = _dockerfile()
    text = "\n".join(lines)
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert len(froms) >= 2 and "AS build" in froms[0]
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in lines
    assert all("${PYTHON_IMAGE}" in f for f in froms)
    assert "latest" not in text
    last = text[text.rindex("FROM ") :]
    assert "COPY --from=build" in last
    users = re.findall(r"^USER (\S+)$", last, re.M)
    assert users and users[-1] not in ("root", "0")
    assert f"--uid {dc.RTQIS_UID}" in last and f"/tmp/rtqis-{dc.RTQIS_UID}" in last
    install = next(ln for ln in lines if "--require-hashes" in ln)
    assert "deploy/lockfile.py requirements.lock" in install and "-r /tmp/runtime.lock" in install
    assert "--no-deps ." in text and "[dev]" not in text
    assert 'ENTRYPOINT ["rtqis"]' in lines
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for m in re.finditer(r"^COPY (?!--from)(.+) (\S+)$", text, re.M):
        for src in m.group(1).split():
            assert f"!{src}" in ignore or f"!{src}/" in ignore, src  # the build context has it


def test_runtime_lock_is_the_lock_without_dev_extras() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    out = lockfile.runtime_lock(lock, pyproject)
    entries = {e.name: e for e in lockfile.parse_lock(out)}
    every = {e.name: e for e in lockfile.parse_lock(lock)}
    for dev in ("pytest", "mypy", "ruff", "playwright", "hypothesis", "import-linter", "uv", "py-spy"):
        assert dev in every and dev not in entries
    for need in ("confluent-kafka", "faust-streaming", "panel", "duckdb", "aiohttp", "pydantic-core", "numpy"):
        assert need in entries
    for name, e in entries.items():
        assert e.lines == every[name].lines  # verbatim: the same versions and hashes
        assert any("--hash=sha256:" in ln for ln in e.lines), name
    # closed: whatever a kept package is there for, the lock says so through a kept parent or the project
    for name, e in every.items():
        if name not in entries:
            assert not any(lockfile.normalize(v.split()[0]) in entries for v in e.via if not v.startswith("rtqis"))


# --- the default local broker (`make run`): RTQIS_BROKER=auto --------------------------------------------


def _which(present: set[str]) -> Any:
    return lambda name, *a, **k: f"/usr/bin/{name}" if name in present else None


def test_auto_is_the_default_and_explicit_choices_stand(monkeypatch: Any) -> None:
    from rtqis.kafka.embedded import broker_kind

    monkeypatch.delenv("RTQIS_BROKER", raising=False)
    monkeypatch.setenv("RTQIS_CONFIG", "/nonexistent.toml")
    assert Settings().broker == "auto"
    monkeypatch.setattr("shutil.which", _which(set()))  # not even java: the explicit choice is still kept
    assert broker_kind(Settings(broker="tansu")) == "tansu" and broker_kind(Settings(broker="kafka")) == "kafka"


def test_auto_runs_kafka_where_java_and_maven_are(monkeypatch: Any, tmp_path: Path) -> None:
    from rtqis.kafka.apache import ApacheKafka
    from rtqis.kafka.embedded import broker_kind, local_broker

    monkeypatch.setattr("shutil.which", _which({"java", "mvn"}))
    s = Settings(broker="auto", data_dir=tmp_path)
    assert broker_kind(s) == "kafka"
    assert isinstance(local_broker(s), ApacheKafka)


def test_auto_without_java_runs_tansu_and_says_why(monkeypatch: Any, tmp_path: Path, caplog: Any) -> None:
    from rtqis.kafka.embedded import EmbeddedBroker, broker_kind, local_broker

    monkeypatch.setattr("shutil.which", _which({"mvn"}))
    s = Settings(broker="auto", data_dir=tmp_path)
    with caplog.at_level("WARNING", logger="rtqis.kafka.embedded"):
        assert broker_kind(s) == "tansu"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "Tansu" in lines[0] and "`java` is not on PATH" in lines[0] and "memory" in lines[0]
    caplog.clear()
    assert isinstance(local_broker(s), EmbeddedBroker)


def test_auto_without_maven_needs_the_jars(monkeypatch: Any, tmp_path: Path, caplog: Any) -> None:
    from rtqis.kafka.embedded import broker_kind, kafka_unavailable

    monkeypatch.setattr("shutil.which", _which({"java"}))
    for var in ("KAFKA_HOME", "RTQIS_KAFKA_HOME"):
        monkeypatch.delenv(var, raising=False)
    empty = tmp_path / "empty"
    (empty / "libs").mkdir(parents=True)
    assert "not a Kafka distribution" in str(kafka_unavailable(Settings(kafka_home=empty)))
    with caplog.at_level("WARNING", logger="rtqis.kafka.embedded"):
        assert broker_kind(Settings(broker="auto", kafka_home=empty)) == "tansu"
    dist = tmp_path / "kafka"
    (dist / "libs").mkdir(parents=True)
    (dist / "libs" / "kafka_2.13-4.4.0.jar").write_bytes(b"")
    assert kafka_unavailable(Settings(kafka_home=dist)) is None
    assert broker_kind(Settings(broker="auto", kafka_home=dist)) == "kafka"
    # no KAFKA_HOME, no Maven: the jars cached by an earlier fetch, or Tansu
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert "Maven" in str(kafka_unavailable(Settings()))
