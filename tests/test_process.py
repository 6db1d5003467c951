"""rtqis.process, the one process manager of `rtqis up`, `rtqis bench` and the embedded broker: a child's
log, readiness, memory, and a stop that takes its whole process group, SIGKILL when SIGTERM is ignored."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil
import pytest

from rtqis.process import ChildExited, ChildProcess, free_port, rtqis_argv, set_from_signal_handler, settings_env
from rtqis.settings import load_settings
from tests.conftest import wait_until


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


# prints its grandchild's pid and "ready", then ignores SIGTERM for a minute
_STUBBORN = """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print("grandchild", g.pid, flush=True)
    print("ready", flush=True)
    time.sleep(60)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_kills_the_process_group_when_sigterm_is_ignored(tmp_path: Path) -> None:
    c = ChildProcess("stubborn", _python(_STUBBORN), tmp_path / "logs" / "stubborn.log", stop_timeout_s=0.5)
    c.start({"PATH": "/usr/bin:/bin"})
    try:
        c.wait_for_log(b"ready", timeout_s=20)
        grandchild = int(next(x for x in c.tail().splitlines() if x.startswith("grandchild")).split()[1])
        assert c.alive() and c.rss_mb() > 1 and c.anon_mb() > 0
    finally:
        c.stop()
    assert c.poll() == -signal.SIGKILL and not c.alive() and c.rss_mb() == 0.0
    wait_until(lambda: _gone(grandchild), 10, f"grandchild {grandchild} to be killed with its group")
    c.stop()  # twice: nothing happens


def test_a_child_that_honours_sigterm_exits_with_it(tmp_path: Path) -> None:
    c = ChildProcess("sleeper", _python("print('up', flush=True); import time; time.sleep(60)"), tmp_path / "s.log")
    c.start({}).wait_for_log(b"up", timeout_s=20)
    c.stop()
    assert c.poll() == -signal.SIGTERM


def test_wait_for_log_reports_an_early_exit_and_a_timeout(tmp_path: Path) -> None:
    dead = ChildProcess("dead", _python("print('oops'); raise SystemExit(3)"), tmp_path / "dead.log").start({})
    with pytest.raises(ChildExited, match=r"dead exited: see .*dead\.log"):
        dead.wait_for_log(b"ready", timeout_s=20)
    assert dead.wait() == 3 and dead.tail() == "oops"
    quiet = ChildProcess("quiet", _python("import time; time.sleep(60)"), tmp_path / "quiet.log").start({})
    try:
        with pytest.raises(TimeoutError, match="quiet not ready within 1 s"):
            quiet.wait_for_log(b"ready", timeout_s=1.0)
    finally:
        quiet.stop()


def test_logs_append_by_default_and_truncate_on_request(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    for append in (True, True, False):
        c = ChildProcess("x", _python("print('line')"), log).start({}, append=append)
        assert c.wait(20) == 0
        if append:
            assert c.tail(1) == "line"
    assert log.read_text() == "line\n"  # the two appended lines went with the truncation
    c = ChildProcess("y", _python("print('a'); print('b'); print('c')"), tmp_path / "y.log").start({})
    c.wait(20)
    assert c.tail(2) == "b\nc" and c.tail() == "a\nb\nc"


def test_a_child_without_log_and_before_start(tmp_path: Path) -> None:
    c = ChildProcess("nolog", _python("print('discarded')"), None)
    assert c.pid is None and c.poll() is None and not c.alive() and c.rss_mb() == 0.0
    c.stop()  # before start: nothing to stop
    with pytest.raises(RuntimeError, match="never started"):
        c.wait()
    c.start({})
    assert c.wait(20) == 0 and c.tail() == ""


def test_settings_env_gives_a_child_exactly_these_settings(tmp_path: Path) -> None:
    s = load_settings(
        bootstrap_servers="h:1",
        symbols="BTCUSDT,ETHUSDT,SOLUSDT",
        pairs="SOLUSDT/ETHUSDT",
        partitions=3,
        data_dir=tmp_path,
    )
    env = settings_env(s, {"PATH": "/usr/bin:/bin", "RTQIS_CODEC": "avro", "HOME": "/h"})
    assert env["PATH"] == "/usr/bin:/bin" and env["HOME"] == "/h"
    assert env["RTQIS_CODEC"] == "json"  # the caller's own RTQIS_* never leak through
    assert env["RTQIS_SYMBOLS"] == "BTCUSDT,ETHUSDT,SOLUSDT" and env["RTQIS_PARTITIONS"] == "3"
    assert "RTQIS_SASL_PASSWORD" not in env  # unset optionals stay unset
    out = subprocess.run(
        [*rtqis_argv("config", "--json")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == s.masked()


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_signal_handler_sets_the_stop_event_without_waiting_for_its_lock() -> None:
    """A signal can find the main thread inside ``stop.wait()``, holding the event's lock; ``stop.set()``
    in the handler then waits for that lock for ever (`rtqis produce synthetic` hung on SIGTERM in CI).
    The helper returns at once and the event is set once the lock is free."""
    ev = threading.Event()
    returned = threading.Event()

    def handler_inside_wait() -> None:
        with ev._cond:  # type: ignore[attr-defined]  # what Event.wait holds (CPython)
            set_from_signal_handler(ev)  # ev.set() here would never return
            returned.set()

    threading.Thread(target=handler_inside_wait, daemon=True).start()
    assert returned.wait(5), "the handler waited for the event's lock"
    assert ev.wait(5)
