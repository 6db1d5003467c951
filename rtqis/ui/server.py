"""``rtqis ui``: run ``panel serve`` on the dashboard app in this process.

The settings are built once by the CLI and handed to the app through :mod:`rtqis.ui.runtime`; the
``--setup`` script starts the process's single Kafka consumer before the first browser connects. One
process (``--num-procs 1``): every session shares that consumer.
"""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

from rtqis.errors import PortInUseError
from rtqis.settings import Settings
from rtqis.ui import runtime

__all__ = ["APP_PATH", "check_port", "dashboard_url", "panel_argv", "serve"]

log = logging.getLogger(__name__)

APP_PATH = Path(__file__).with_name("dashboard.py")
SETUP_PATH = Path(__file__).with_name("serve_setup.py")


def dashboard_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104  # display only
    return f"http://{shown}:{port}/{APP_PATH.stem}"


def panel_argv(settings: Settings, host: str, port: int, origins: Sequence[str] = ()) -> list[str]:
    """The ``panel serve`` arguments (after ``panel serve``) for these settings."""
    allowed = list(origins) or [f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    argv = [
        str(APP_PATH),
        "--address",
        host,
        "--port",
        str(port),
        "--setup",
        str(SETUP_PATH),
        "--num-procs",
        "1",
        # a closed tab stops costing updates after ~20 s (Bokeh's default is 15 s + a check every 17 s)
        "--unused-session-lifetime",
        "15000",
        "--check-unused-sessions",
        "5000",
        "--log-level",
        settings.log_level,
        # uploads arrive in one websocket message (base64): files over the 5 MB limit up to ~24 MB are
        # refused with a message in the page; beyond that the connection closes (Bokeh's default is 20 MB)
        "--websocket-max-message-size",
        str(32 * 2**20),
    ]
    for o in dict.fromkeys(allowed):
        argv += ["--allow-websocket-origin", o]
    return argv


def check_port(host: str, port: int) -> None:
    """Raise :class:`PortInUseError` (one clear line) when ``host:port`` cannot be listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUseError(
                f"cannot listen on {host}:{port} ({e.strerror}): set RTQIS_UI_PORT or pass --port"
            ) from None


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    origins: Sequence[str] = (),
) -> int:
    """Serve the dashboard until SIGINT/SIGTERM; returns the exit code."""
    from panel.command.serve import Serve

    host = host or settings.ui_host
    port = port or settings.ui_port
    check_port(host, port)
    runtime.configure(settings)
    parser = argparse.ArgumentParser(prog="panel serve")
    cmd = Serve(parser=parser)
    args = parser.parse_args(panel_argv(settings, host, port, origins))
    ret = cmd.invoke(args)
    return 0 if ret in (None, True, 0) else 1
