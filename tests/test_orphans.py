"""No orphans (#21): whatever is killed - `rtqis up`, `rtqis broker`, `rtqis bench`, a parent of a
:class:`~rtqis.process.ChildProcess` - no child outlives it; every command that starts children stops them
on SIGTERM and SIGINT; and a running `rtqis up` listens on 127.0.0.1 only.

Real processes throughout. Children are found by pid (psutil) before the kill: the point is that they are
gone afterwards, which a process-group kill at teardown would hide, so every test kills only the parent's
pid and cleans up leftovers itself (a failing test still leaves nothing behind).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rtqis.kafka.embedded import port_is_free
from rtqis.process import ChildProcess, die_with_parent, free_port
from rtqis.settings import Settings
from tests.conftest import Procs, alive_pids, wait_until

pytestmark = [pytest.mark.integration]

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")

#: how long the children of a killed parent may take to go (s): SIGTERM, then a clean stop
_ORPHAN_DEADLINE_S = 15.0


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill_leftovers(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


class _Rtqis:
    """`rtqis ARGS...` started by a test, with its log; :meth:`cleanup` kills it and every process it was
    seen to have started (by pid, never by name)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[bytes]] = []
        self.seen: list[psutil.Process] = []

    def start(self, name: str, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp / f"{name}.out"
        base = {k: v for k, v in os.environ.items() if not k.startswith("RTQIS_")}
        base.update(env)
        with log.open("wb") as out:
            p = subprocess.Popen(  # killed by the test, and with the test run if that is killed
                [sys.executable, "-m", "rtqis", *args],
                env=base,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),
            )
        self.started.append(p)
        return p, log

    def tree(self, p: subprocess.Popen[bytes]) -> list[psutil.Process]:
        kids = _tree(p.pid)
        self.seen += kids
        return kids

    def cleanup(self) -> None:
        for p in self.started:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        _kill_leftovers(self.seen)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[_Rtqis]:
    r = _Rtqis(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


def _up_env(tmp_path: Path) -> dict[str, str]:
    return {
        "RTQIS_BROKER": "tansu",
        "RTQIS_BROKER_PORT": str(free_port()),
        "RTQIS_WORKER_WEB_PORT": str(free_port()),
        "RTQIS_UI_PORT": str(free_port()),
        "RTQIS_DATA_DIR": str(tmp_path / "var"),
    }


def _wait_up(p: subprocess.Popen[bytes], log: Path, tmp_path: Path, runs: int = 1) -> None:
    """Until `up` runs with its worker ready (the ``runs``-th ready line: the worker log is appended)."""
    worker_log = tmp_path / "var" / "logs" / "worker.log"

    def ready() -> bool:
        return worker_log.exists() and worker_log.read_bytes().count(b"Worker]: Ready") >= runs

    wait_until(lambda: (b"Stop everything" in log.read_bytes() and ready()) or p.poll() is not None, 90, "up")
    assert p.poll() is None, log.read_text(errors="replace")


# --- the helper itself ------------------------------------------------------------------------------------

_PARENT = """
    import sys, time
    from rtqis.process import ChildProcess
    c = ChildProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], None).start({})
    print(c.pid, flush=True)
    time.sleep(120)
"""


@linux_only
def test_a_child_process_dies_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_PARENT)], stdout=subprocess.PIPE, env=dict(os.environ)
    )
    child: list[psutil.Process] = []
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        child.append(psutil.Process(pid))
        assert alive_pids([pid]) == [pid]
        parent.kill()
        parent.wait(10)
        wait_until(lambda: not alive_pids([pid]), 10, f"child {pid} of a SIGKILLed parent to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()
        _kill_leftovers(child)


_RACE = """
    import os, subprocess, sys
    from rtqis.process import die_with_parent
    preexec = die_with_parent()          # made for this process ...
    pid = os.fork()
    if pid == 0:                         # ... but run by a grandchild: its parent is not the one it expects,
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=preexec)
        os._exit(p.wait(30) & 0xFF)      # as if the parent had died before the prctl
    print(os.waitpid(pid, 0)[1] >> 8, flush=True)
"""


@linux_only
def test_a_child_whose_parent_died_before_the_prctl_exits_at_once() -> None:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_RACE)], capture_output=True, text=True, timeout=30, env=dict(os.environ)
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == 128 + signal.SIGTERM


def test_die_with_parent_is_a_no_op_outside_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    import rtqis.process

    monkeypatch.setattr(rtqis.process, "_prctl", None)
    assert die_with_parent() is None
    c = ChildProcess("true", [sys.executable, "-c", "pass"], None).start({})  # still starts
    assert c.wait(20) == 0


# --- rtqis up ---------------------------------------------------------------------------------------------


@linux_only
@pytest.mark.broker
def test_sigkill_of_up_leaves_no_child_and_a_new_up_starts_on_the_same_ports(tmp_path: Path, runner: _Rtqis) -> None:
    env = _up_env(tmp_path)
    p, log = runner.start("up-1", "up", **env)
    _wait_up(p, log, tmp_path)
    kids = runner.tree(p)
    names = " ".join(" ".join(k.cmdline()) for k in kids)
    assert len(kids) >= 5 and "tansu" in names, names  # broker, producer, worker, sink, dashboard
    p.kill()
    p.wait(10)
    pids = [k.pid for k in kids]
    wait_until(
        lambda: not alive_pids(pids), _ORPHAN_DEADLINE_S, f"the children {alive_pids(pids)} of a SIGKILLed up to exit"
    )
    # the next `up` on the same ports and data dir starts (it failed "port already in use" before)
    p2, log2 = runner.start("up-2", "up", **env)
    _wait_up(p2, log2, tmp_path, runs=2)
    time.sleep(3)  # its children keep running: nothing else holds their ports
    kids2 = runner.tree(p2)
    assert len(alive_pids([k.pid for k in kids2])) >= 5, log2.read_text(errors="replace")
    p2.send_signal(signal.SIGTERM)
    assert p2.wait(60) == 0, log2.read_text(errors="replace")
    assert not alive_pids([k.pid for k in kids2])  # stopped by `up` itself before it exited


@pytest.mark.broker
def test_every_listening_socket_of_up_binds_localhost(tmp_path: Path, runner: _Rtqis) -> None:
    env = _up_env(tmp_path)
    p, log = runner.start("up", "up", **env)
    _wait_up(p, log, tmp_path)
    pids = {p.pid} | {k.pid for k in runner.tree(p)}
    # the Faust worker's web server is disabled (rtqis.agents.config): the broker and the dashboard listen
    ports = {int(env[k]) for k in ("RTQIS_BROKER_PORT", "RTQIS_UI_PORT")}

    def listening() -> list[tuple[int, str, int]]:
        return [
            (c.pid, c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="inet")
            if c.pid in pids and c.status == psutil.CONN_LISTEN
        ]

    wait_until(lambda: ports <= {port for _, _, port in listening()}, 60, f"ports {ports} to listen")
    time.sleep(3)  # the worker and the sink have joined their groups: anything they open is open now
    pids |= {k.pid for k in runner.tree(p)}
    socks = listening()
    assert socks and all(ip == "127.0.0.1" for _, ip, _ in socks), socks
    p.send_signal(signal.SIGINT)
    assert p.wait(60) == 0


# --- rtqis broker -----------------------------------------------------------------------------------------


@linux_only
@pytest.mark.broker
def test_sigkill_of_broker_takes_tansu_with_it(tmp_path: Path, runner: _Rtqis) -> None:
    port = free_port()
    p, log = runner.start(
        "broker", "broker", "--port", str(port), RTQIS_DATA_DIR=str(tmp_path / "var"), RTQIS_BROKER="tansu"
    )
    wait_until(lambda: b"ready on" in log.read_bytes() or p.poll() is not None, 60, "rtqis broker to start")
    kids = runner.tree(p)
    assert [k for k in kids if "tansu" in k.name()], log.read_text(errors="replace")
    p.kill()
    p.wait(10)
    pids = [k.pid for k in kids]
    wait_until(lambda: not alive_pids(pids), _ORPHAN_DEADLINE_S, "Tansu to exit with its `rtqis broker`")
    wait_until(lambda: port_is_free("127.0.0.1", port), 5, f"port {port} to be free")


@pytest.mark.broker
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_broker_stops_tansu_on_sigterm_and_sigint(tmp_path: Path, runner: _Rtqis, sig: int) -> None:
    p, log = runner.start(
        "broker", "broker", "--port", str(free_port()), RTQIS_DATA_DIR=str(tmp_path / "var"), RTQIS_BROKER="tansu"
    )
    wait_until(lambda: b"ready on" in log.read_bytes() or p.poll() is not None, 60, "rtqis broker to start")
    kids = runner.tree(p)
    assert kids, log.read_text(errors="replace")
    p.send_signal(sig)
    assert p.wait(30) == 0, log.read_text(errors="replace")
    assert not alive_pids([k.pid for k in kids])  # stopped before the command exited


# --- rtqis bench ------------------------------------------------------------------------------------------


def _bench_running(runner: _Rtqis, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, list[psutil.Process]]:
    """`rtqis bench --only e2e` on its own embedded broker, returned once its worker is ready, with its
    children (broker, worker, sink)."""
    p, log = runner.start(
        "bench",
        "bench", "--only", "e2e", "--ticks", "5000000", "--json", str(tmp_path / "bench.json"),
        RTQIS_DATA_DIR=str(tmp_path / "var"),
    )  # fmt: skip

    worker_log = tmp_path / "var" / "bench" / "e2e-worker0.log"  # rtqis.bench.e2e's

    def started() -> bool:
        runner.tree(p)  # remember every child seen, for the clean-up
        return p.poll() is not None or (worker_log.exists() and b"Worker]: Ready" in worker_log.read_bytes())

    wait_until(started, 90, "the bench's worker to be ready")
    assert p.poll() is None, log.read_text(errors="replace")
    kids = runner.tree(p)
    lines = " ".join(" ".join(k.cmdline()) for k in kids)
    assert "tansu" in lines and "rtqis worker" in lines and "rtqis sink" in lines, lines
    return p, log, kids


@pytest.mark.broker
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_bench_stops_its_broker_and_workers_on_sigterm_and_sigint(tmp_path: Path, runner: _Rtqis, sig: int) -> None:
    p, log, kids = _bench_running(runner, tmp_path)
    p.send_signal(sig)
    code = p.wait(90)
    assert code == 128 + sig, log.read_text(errors="replace")  # unwound, not killed by the signal
    assert not alive_pids([k.pid for k in kids]), [k.cmdline() for k in kids if k.is_running()]  # stopped by it


@linux_only
@pytest.mark.broker
def test_sigkill_of_bench_takes_its_broker_and_workers_with_it(tmp_path: Path, runner: _Rtqis) -> None:
    p, _log, kids = _bench_running(runner, tmp_path)
    p.kill()
    p.wait(10)
    pids = [k.pid for k in kids]
    wait_until(lambda: not alive_pids(pids), _ORPHAN_DEADLINE_S, f"the bench's children {alive_pids(pids)} to exit")


# --- the services: each stops on SIGTERM and SIGINT -------------------------------------------------------

#: the line each service prints once it runs (the worker's is Faust's)
_READY = {"worker": b"Worker]: Ready", "sink": b"sink writing", "ui": b"dashboard at"}


@pytest.mark.broker
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("cmd", ["worker", "sink", "ui"])
def test_each_service_stops_on_sigterm_and_sigint(settings: Settings, procs: Procs, cmd: str, sig: int) -> None:
    p = procs.start(settings, cmd, name=cmd)
    wait_until(lambda: _READY[cmd] in procs.log_of(p).encode() or p.poll() is not None, 90, f"{cmd} to run")
    if cmd == "ui":  # serving, not only about to
        wait_until(lambda: not port_is_free(settings.ui_host, settings.ui_port), 60, "the dashboard to listen")
    assert p.poll() is None, procs.log_of(p)
    kids = [k.pid for k in _tree(p.pid)]
    t0 = time.monotonic()
    p.send_signal(sig)  # the process only, as a supervisor or `kill PID` does
    code = p.wait(30)
    # 0: a clean stop (the worker commits, the sink writes its batch), not the signal's default action
    assert code == 0, f"{cmd} exited {code} on {sig!r} after {time.monotonic() - t0:.1f} s:\n" + procs.log_of(p)[-2000:]
    assert not alive_pids(kids)


# --- a test run -------------------------------------------------------------------------------------------

_HOLD = "RTQIS_TEST_HOLD_SESSION_BROKER"


@pytest.mark.skipif(not os.environ.get(_HOLD), reason="run by test_sigkill_of_pytest_takes_its_broker_with_it only")
def test_hold_the_session_broker(bootstrap: str) -> None:
    """Holds the session's embedded broker (conftest's ``bootstrap``) until killed."""
    print("holding", bootstrap, flush=True)
    time.sleep(120)


@linux_only
def test_sigkill_of_pytest_takes_its_broker_with_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RTQIS_BOOTSTRAP_SERVERS", "PYTEST_ADDOPTS")}
    env[_HOLD] = "1"
    argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t")]
    argv.append(f"{__file__}::test_hold_the_session_broker")
    log = tmp_path / "pytest.out"
    with log.open("wb") as out:
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)
    kids: list[psutil.Process] = []
    try:
        wait_until(lambda: b"holding" in log.read_bytes() or p.poll() is not None, 60, "the inner pytest's broker")
        kids = _tree(p.pid)
        assert [k for k in kids if "tansu" in k.name()], log.read_text(errors="replace")
        p.kill()
        p.wait(10)
        pids = [k.pid for k in kids]
        wait_until(lambda: not alive_pids(pids), _ORPHAN_DEADLINE_S, "the session broker of a SIGKILLed pytest to exit")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        _kill_leftovers(kids)


_HUNG_STOP = textwrap.dedent(
    """
    import sys, threading, time
    sys.path.insert(0, {root!r})
    from rtqis.cli import _stop_on_signals
    stop = threading.Event()
    _stop_on_signals(stop, {limit}, "rtqis sink")
    print("ready", flush=True)
    stop.wait()
    print("stopping", flush=True)
    time.sleep(3600)  # a stop that never ends: a group leave or a flush waiting on a broker that is gone
    """
)


@pytest.mark.parametrize("second_signal", [False, True], ids=["limit", "second-signal"])
def test_a_bounded_stop_ends_a_hung_stop(tmp_path: Path, second_signal: bool) -> None:
    """`rtqis sink`'s stop is bounded (SINK_STOP_LIMIT_S): a command whose stop hangs exits non-zero with one
    line once the limit has passed after the signal, or at once on a second signal; the first signal alone
    does not end it before the limit."""
    limit = 60.0 if second_signal else 1.5
    code = _HUNG_STOP.format(root=str(Path(__file__).resolve().parents[1]), limit=limit)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            assert p.stdout.readline().strip() == "stopping"
            time.sleep(0.5)
            assert p.poll() is None, "ended by the first signal, before its limit"
            if second_signal:
                p.send_signal(signal.SIGINT)
            rc = p.wait(timeout=10)
            took = time.monotonic() - t0
            err = p.stderr.read() if p.stderr is not None else ""
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtqis sink: "), err
    assert ("second signal" in lines[0]) == second_signal
    assert took < (5.0 if second_signal else limit + 5.0)
