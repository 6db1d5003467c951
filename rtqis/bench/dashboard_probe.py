"""The day bench's dashboard figures (#22): a real ``rtqis ui`` server against the bench's data, and a new
headless Chromium session at each simulated hour mark.

What runs: ``python -m rtqis ui`` (the Panel server ``rtqis up`` starts) as a child process in its own
session (:class:`~rtqis.process.ChildProcess`: SIGTERM to its group at the end, also on error, and it dies
with the bench), with the bench's settings: same namespace and data dir, so it reads history through the
socket the bench's writer serves, as it reads the sink's. It needs no broker to start or to serve a page:
its live consumer (:mod:`rtqis.ui.hub`) only retries a broker that is not there (every 2 s), so it is
pointed at a port nobody listens on (never at 9092, where someone else's broker may run) and the page shows
"broker unreachable" with the stored history. Debian's Chromium (``/usr/bin/chromium``, through
Playwright's ``launch(executable_path=...)``, never a downloaded browser) is launched once; each mark
opens one fresh browser context (no cache, no cookies: a new browser session).

Per mark:

* ``first_chart_ms``: from ``page.goto(dashboard URL)`` until the candle chart and the z-score chart hold
  their history (both Bokeh sources non-empty: the condition the browser tests wait for in
  ``tests/test_ui_browser.py``). The page asks for the window ending at wall-clock now (600 1m bars, 1 h
  of signals), which is why the day bench's simulated time starts just before the bench does;
* ``dashboard_rss_mb``: the server's RSS right after that, with the session still open.

Without Chromium or Playwright (or if the server does not start) both figures are None, the reason is
logged once and kept in :attr:`DashboardProbe.reason`; the rest of the bench runs as before.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rtqis.process import ChildProcess, free_port, rtqis_argv, settings_env
from rtqis.settings import Settings

__all__ = ["CHROMIUM", "DashboardProbe"]

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium package: the only browser the probe uses (no Playwright browser download)."""

_START_TIMEOUT_S = 120.0  # a Panel server import and start on a loaded 2-core host
_CHART_TIMEOUT_MS = 120_000
_CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
#: the browser tests' readiness condition: the candle and z-score sources hold rows
_CHARTED_JS = (
    "() => { const d = window.Bokeh && Bokeh.documents[0]; if (!d) return false;"
    " const n = (name) => { const s = d.get_model_by_name(name); return s ? s.get_length() : -1 };"
    " return n('src-candles') > 0 && n('src-z') > 0 }"
)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class DashboardProbe:
    """A dashboard server and a headless browser for the day bench; use as a context manager.

    ``settings`` are the bench's (namespace, data dir); ``symbols``/``pair`` what the page must show (its
    first symbol and the pair); the server's log goes to ``log_path``."""

    def __init__(self, settings: Settings, symbols: tuple[str, ...], pair: str, log_path: Path) -> None:
        port = free_port(settings.ui_host)
        self.settings = settings.model_copy(
            update={"symbols": list(symbols), "pairs": [pair], "ui_port": port,
                    "bootstrap_servers": f"127.0.0.1:{free_port()}"}  # no broker there: see the module docstring
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}/dashboard"
        self.ui = ChildProcess("ui", rtqis_argv("ui"), log_path, stop_timeout_s=15.0)
        self.reason: str | None = None  # why the figures are None (None: they are measured)
        self._pw: Any = None
        self._browser: Any = None

    def __enter__(self) -> DashboardProbe:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _give_up(self, reason: str) -> None:
        self.reason = reason
        log.warning("day bench: no dashboard figures: %s", reason)

    def start(self) -> None:
        """Launch Chromium, then start the server and wait until it listens (or give up with a reason)."""
        if not CHROMIUM.exists():
            self._give_up(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
            return
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as e:
            self._give_up(f"Playwright is not installed ({e})")
            return
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=_CHROMIUM_ARGS)
        s = self.settings
        self.ui.start(settings_env(s), append=False)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _port_open("127.0.0.1", s.ui_port):
            if not self.ui.alive():
                self._give_up(f"`rtqis ui` exited ({self.ui.poll()}): {self.ui.tail(5)}")
                return
            if time.monotonic() > deadline:
                self._give_up(f"`rtqis ui` not listening after {_START_TIMEOUT_S:.0f} s: see {self.ui.log_path}")
                self.ui.stop()
                return
            time.sleep(0.2)

    def measure(self) -> dict[str, Any]:
        """``first_chart_ms`` of a new browser session and ``dashboard_rss_mb`` of the server after it (None
        each when it cannot be measured)."""
        res: dict[str, Any] = {"first_chart_ms": None, "dashboard_rss_mb": None}
        if self.reason is not None or self._browser is None:
            return res
        if not self.ui.alive():
            self._give_up(f"`rtqis ui` exited ({self.ui.poll()}): {self.ui.tail(5)}")
            return res
        ctx = self._browser.new_context(viewport={"width": 1600, "height": 1500})
        try:
            page = ctx.new_page()
            t0 = time.perf_counter()
            try:
                page.goto(self.url)
                page.wait_for_function(_CHARTED_JS, timeout=_CHART_TIMEOUT_MS)
                res["first_chart_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            except Exception as e:  # playwright's Error/TimeoutError: this mark has no figure, the bench goes on
                log.warning("day bench: no first chart within %d s: %s", _CHART_TIMEOUT_MS // 1000, e)
            res["dashboard_rss_mb"] = round(self.ui.rss_mb(), 1)  # with the session open
        finally:
            ctx.close()
        return res

    def close(self) -> None:
        """Stop the server (SIGTERM to its group, SIGKILL after 15 s), the browser and Playwright."""
        try:
            if self._browser is not None:
                self._browser.close()
            if self._pw is not None:
                self._pw.stop()
        finally:
            self._browser = self._pw = None
            self.ui.stop()
