"""Child processes: start one in its own session with its output in a log file, watch it, read its
memory, stop it (SIGTERM to its process group, SIGKILL after a timeout); and make it die with its parent.

One implementation for every process RT-QIS starts: `rtqis up`'s services (:mod:`rtqis.supervisor`),
the benchmark's worker, sink and feed (:mod:`rtqis.bench`) and the embedded broker
(:mod:`rtqis.kafka.embedded`). A child runs in a new session so that Ctrl-C in the terminal reaches
only its parent, which stops the children in order; stopping signals the whole process group, so a
child's own children go with it.

Children die with their parent (Linux): every child gets a parent-death signal (SIGTERM, see
:func:`die_with_parent`), so a SIGKILLed ``rtqis up``, ``rtqis broker`` or ``rtqis bench`` (which
cannot run its clean-up) leaves no broker, worker, sink, feed or dashboard behind, and nothing holds
their ports for the next run. A child that is itself an ``rtqis`` command starting children (none does
today) passes it on, since it starts them through :class:`ChildProcess` too. Elsewhere (macOS, Windows)
there is no such signal: only the stop on SIGTERM/SIGINT applies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil
from pydantic import SecretStr

from rtqis.settings import Settings

__all__ = [
    "PARENT_DEATH_SIGNAL",
    "ChildExited",
    "ChildProcess",
    "anon_rss_bytes",
    "die_with_parent",
    "free_port",
    "rss_bytes",
    "rtqis_argv",
    "set_from_signal_handler",
    "settings_env",
    "stop_process",
]

log = logging.getLogger(__name__)

#: how long a process has to exit after SIGKILL before we give up waiting (s)
_KILL_WAIT_S = 5.0


#: ``prctl`` option: the signal the calling process gets when its parent (thread) dies (linux/prctl.h)
_PR_SET_PDEATHSIG = 1
#: the parent-death signal of every child: SIGTERM lets a worker or sink stop as on Ctrl-C (a worker
#: commits what it has; the sink writes its batch) and Tansu exits at once
PARENT_DEATH_SIGNAL = signal.SIGTERM


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up once in the parent (a forked child must not load libraries or take
    locks before exec); None outside Linux or when libc cannot be found."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.prctl
        # int prctl(int option, unsigned long arg2, ...): the kernel reads every argument as unsigned long
        fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        fn.restype = ctypes.c_int
    except (OSError, AttributeError):
        log.warning("prctl not found: children will not die with their parent", exc_info=True)
        return None
    prctl: Callable[..., int] = fn
    return prctl


_prctl = _load_prctl()


def die_with_parent(sig: int = PARENT_DEATH_SIGNAL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that makes the child receive ``sig`` when this
    process dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``, Linux); None where that does not exist
    (then a child of a killed parent lives on: only a clean stop takes it down).

    Two pitfalls, handled here and by the caller:

    - the race: if the parent dies between the fork and the ``prctl``, no signal ever comes; so the
      child checks after the ``prctl`` that its parent is still the process that forked it, and exits
      (code 128 + ``sig``) if not;
    - the signal fires when the *thread* that forked the child exits, not the process: start children
      from a thread that lives as long as they should (every RT-QIS command starts them from its main
      thread).

    The function runs in the forked child before exec: it only calls the ``prctl`` looked up at import
    and ``getppid`` (no import, no lock another thread could hold), so it is safe with threads running.
    """
    if _prctl is None:
        return None
    prctl = _prctl
    parent = os.getpid()

    def _preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: the signal will never come
            os._exit(128 + int(sig))

    return _preexec


class ChildExited(RuntimeError):
    """A child process exited while we waited for it to become ready."""


def rtqis_argv(*args: str) -> list[str]:
    """The command line of ``rtqis ARGS...`` run by this interpreter (so the same venv and package)."""
    return [sys.executable, "-m", "rtqis", *args]


def settings_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child ``rtqis`` that must use exactly ``settings``: ``base`` (default: this
    process's environment) without its ``RTQIS_*`` variables, plus ``RTQIS_<FIELD>`` for every field set
    (lists comma-separated, unset optionals left out, secrets such as the SASL password in clear: the
    child must authenticate too)."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("RTQIS_")}
    for k, v in settings.model_dump(mode="json").items():
        secret = getattr(settings, k)
        if isinstance(secret, SecretStr):
            v = secret.get_secret_value()
        if v is not None:
            env[f"RTQIS_{k.upper()}"] = ",".join(v) if isinstance(v, list) else str(v)
    return env


def set_from_signal_handler(event: threading.Event) -> None:
    """``event.set()`` for a signal handler, which must not call it directly.

    A handler runs in the main thread between two bytecodes, possibly while that thread is inside
    ``event.wait()`` holding the event's (non-reentrant) lock: ``set()`` there waits for that lock for
    ever. Seen: `rtqis produce synthetic` (it paces itself with ``stop.wait``) hung on SIGTERM in a CI run
    after logging "signal 15: stopping", and a loop of ``wait(0.0005)`` hung on 1 SIGTERM of 800. A
    short-lived thread sets it instead, as soon as the main thread lets the lock go."""
    threading.Thread(target=event.set, name="signal-stop", daemon=True).start()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it), for a child to bind."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes (0 when it is gone)."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def anon_rss_bytes(pid: int) -> int:
    """The anonymous part of the RSS (the process's own heap, stacks, buffers), without the pages of
    mapped files (shared libraries) that the RSS also counts: how many of those are mapped depends on
    the page cache (a fresh install maps ~17 MB more of the same libraries), not on the process.
    Outside Linux: the RSS."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss_bytes(pid)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # exited (and reaped) between the poll and the signal


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float, *, name: str = "") -> None:
    """SIGTERM to the process group of ``proc`` (started in its own session, so the group is it and its
    children), then SIGKILL if it has not exited after ``timeout_s`` seconds; waits for it. Safe to call
    on a process that has already exited."""
    if proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0f s: killing it", name or f"pid {proc.pid}", timeout_s)
        _signal_group(proc, signal.SIGKILL)
        proc.wait(_KILL_WAIT_S)


@dataclass
class ChildProcess:
    """One child process with its log: ``argv`` runs in its own session, stdout and stderr to ``log_path``
    (None: discarded); it gets SIGTERM when this process dies (:func:`die_with_parent`, Linux), so
    :meth:`start` it from a thread that outlives it (the main thread).

    ``stop_timeout_s`` is how long :meth:`stop` lets it shut down cleanly after SIGTERM before SIGKILL.
    """

    name: str
    argv: list[str]
    log_path: Path | None
    stop_timeout_s: float = 15.0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, env: Mapping[str, str], *, append: bool = True) -> ChildProcess:
        """Start it with environment ``env``. ``append=False`` truncates the log first (when the caller
        reads it for a readiness line, an older run's line must not count)."""
        if self.log_path is None:
            self.proc = self._popen(env, subprocess.DEVNULL)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab" if append else "wb") as out:  # the child keeps its own descriptor
            self.proc = self._popen(env, out)
        return self

    def _popen(self, env: Mapping[str, str], out: IO[bytes] | int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def poll(self) -> int | None:
        """Its exit code, or None while it runs (or before it started)."""
        return self.proc.poll() if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for it to exit and return its exit code (raises ``subprocess.TimeoutExpired``)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.wait(timeout_s)

    def tail(self, n: int = 15) -> str:
        """The last ``n`` lines of its log ('' when there is none)."""
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as f:
                return b"".join(deque(f, maxlen=n)).decode("utf-8", "replace").rstrip()
        except OSError:
            return ""

    def wait_for_log(self, marker: bytes, timeout_s: float = 60.0, poll_s: float = 0.2) -> None:
        """Block until ``marker`` appears in its log (e.g. a worker's ``Worker]: Ready``).

        Raises :class:`ChildExited` if it exits first and :class:`TimeoutError` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ChildExited(f"{self.name} exited: see {self.log_path}")
            try:
                if self.log_path is not None and marker in self.log_path.read_bytes():
                    return
            except OSError:
                pass
            time.sleep(poll_s)
        raise TimeoutError(f"{self.name} not ready within {timeout_s:.0f} s: see {self.log_path}")

    def rss_bytes(self) -> int:
        """Resident memory in bytes; 0 when it is not running."""
        return rss_bytes(self.proc.pid) if self.proc is not None and self.proc.poll() is None else 0

    def rss_mb(self) -> float:
        """Resident memory in MB (1e6 bytes); 0 when it is not running."""
        return self.rss_bytes() / 1e6

    def anon_mb(self) -> float:
        """The anonymous part of the RSS in MB (see :func:`anon_rss_bytes`); 0 when it is not running."""
        return anon_rss_bytes(self.proc.pid) / 1e6 if self.proc is not None and self.proc.poll() is None else 0.0

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM to its process group, SIGKILL after ``timeout_s`` (default ``stop_timeout_s``). Safe to
        call twice or before :meth:`start`."""
        if self.proc is not None:
            stop_process(self.proc, self.stop_timeout_s if timeout_s is None else timeout_s, name=self.name)
