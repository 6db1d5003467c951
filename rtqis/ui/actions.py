"""The dashboard's actions: ADF on demand, CSV downloads of the visible range, OHLC candle upload.

Each runs its I/O in the session's thread pool (:func:`rtqis.ui.session.in_thread`; the work itself is in
:mod:`rtqis.ui.data`) and shows its outcome on the page it was built for (:class:`Page`): the ADF card, a
file download, the upload message.
"""

from __future__ import annotations

import asyncio
import html
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import numpy as np

from rtqis.analytics.pairs import AdfResult
from rtqis.errors import RtqisError
from rtqis.intervals import stored_interval_ms
from rtqis.settings import Settings
from rtqis.sinks.candle_files import SKIPPED_STREAMED
from rtqis.ui import charts as ch
from rtqis.ui import data
from rtqis.ui import tables as tb
from rtqis.ui.hub import LiveHub
from rtqis.ui.layout import Charts, Controls
from rtqis.ui.panels import ManualAdf, upload_done_text
from rtqis.ui.session import IO_POOL, PageState

__all__ = ["Actions", "Page", "csv_name", "upload_skipped_text", "visible_range"]

log = logging.getLogger(__name__)


class Page(Protocol):
    """What the actions need of the page they act on."""

    settings: Settings
    hub: LiveHub
    controls: Controls
    charts: Charts
    state: PageState
    tf: ch.TimeFormat

    def in_thread(self, fn: Callable[[], Any], done: Callable[[Future[Any]], None]) -> None: ...

    def render_cards(self) -> None: ...

    def reload_candles(self) -> None: ...


def visible_range(x_range: Any, shift: float = 0.0) -> tuple[int | None, int | None]:
    """The ``(start, end)`` ms of a chart's time axis minus ``shift`` (candles are drawn at their centre),
    ``(None, None)`` before the browser has set it."""
    start, end = getattr(x_range, "start", None), getattr(x_range, "end", None)
    if start is None or end is None or not np.isfinite(start) or not np.isfinite(end):
        return None, None
    return int(start - shift), int(end - shift)


def _stamp(ms: int | None) -> str:
    if ms is None:
        return "all"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


def csv_name(what: str, start: int | None, end: int | None) -> str:
    """A download's file name: ``what`` (slashes made dashes) and the range in UTC, e.g.
    ``signals-ETHUSDT-BTCUSDT-20260101T000000Z-20260101T010000Z.csv`` (``all`` for an open bound)."""
    return f"{what.replace('/', '-')}-{_stamp(start)}-{_stamp(end)}.csv"


class Actions:
    """Wires the ADF button, the two download buttons and the file input of ``page`` to their actions."""

    def __init__(self, page: Page) -> None:
        self.page = page
        c = page.controls
        c.adf_run.on_click(self.on_adf)
        c.dl_signals.callback = self.signals_file
        c.dl_candles.callback = self.candles_file
        c.upload.param.watch(self.on_upload, "value")

    # ---------------------------------------------------------------------------------------- ADF

    def on_adf(self, _e: Any = None) -> None:
        """ADF of the pair's spread over the chosen window, as the pair agent computes it (:func:`data.pair_adf`)."""
        p, c = self.page, self.page.controls
        window = int(c.adf_window.value)
        live = p.hub.snapshot().signals.get(p.state.pair, {})
        s, pair = p.settings, p.state.pair
        c.adf_run.loading = True
        p.state.adf_error = ""

        def done(f: Future[tuple[AdfResult, int]]) -> None:
            c.adf_run.loading = False
            try:
                r, n = f.result()
                p.state.adf_manual = ManualAdf(time.time_ns() // 1_000_000, n, r)
            except RtqisError as e:
                p.state.adf_error = str(e)
            except Exception as e:
                log.exception("ADF failed")
                p.state.adf_error = f"ADF failed: {e}"
            p.render_cards()

        p.in_thread(lambda: data.pair_adf(s, pair, live, window), done)

    # ---------------------------------------------------------------------------------------- downloads

    async def signals_file(self) -> io.BytesIO:
        """The pair's PairSignals of the z-score chart's visible range (history and live) as CSV."""
        p = self.page
        start, end = visible_range(p.charts.pairs.x_range)
        pair = p.state.pair
        live = p.hub.snapshot().signals.get(pair, {})
        body, n = await asyncio.get_running_loop().run_in_executor(
            IO_POOL, lambda: data.signals_csv(p.settings, pair, live, start, end)
        )
        p.controls.dl_signals.filename = csv_name(f"signals-{pair}", start, end)
        log.info("signals CSV: %d rows", n)
        return io.BytesIO(body)

    async def candles_file(self) -> io.BytesIO:
        """The shown series' candles of the candle chart's visible range (history and live) as CSV."""
        p, c = self.page, self.page.controls
        sym, iv = c.symbol.value, c.interval.value
        start, end = visible_range(p.charts.candles.x_range, stored_interval_ms(iv) / 2)
        live = p.hub.snapshot().candles.get((sym, iv), {})
        body, n = await asyncio.get_running_loop().run_in_executor(
            IO_POOL, lambda: data.candles_csv(p.settings, sym, iv, live, start, end)
        )
        c.dl_candles.filename = csv_name(f"candles-{sym}-{iv}", start, end)
        log.info("candles CSV: %d rows", n)
        return io.BytesIO(body)

    # ---------------------------------------------------------------------------------------- upload

    def on_upload(self, _e: Any = None) -> None:
        """Check and import the chosen OHLC CSV (:func:`data.upload_candles`); shown at once when it is the
        series on screen.

        The file input delivers the whole file (base64 in one websocket message, bounded by the server's
        ``--websocket-max-message-size``; Panel decodes it to bytes before this runs), so the size limit is
        checked first, on its length, before the bytes are copied, decoded or parsed."""
        p, c = self.page, self.page.controls
        raw, name = c.upload.value, c.upload.filename or "upload.csv"
        if raw is None:
            return
        if not isinstance(raw, bytes | bytearray | str):  # several files (multiple=True): not offered
            self._upload_failed("upload one CSV file at a time; nothing was imported")
            return
        try:
            data.check_upload_size(str(name), len(raw))
        except data.UploadError as e:
            self._upload_failed(str(e))
            return
        body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        sym, iv = c.up_symbol.value, c.up_interval.value
        c.upload_msg.param.update(object=f"Checking {html.escape(str(name))} …", alert_type="info", visible=True)

        def done(f: Future[data.UploadResult]) -> None:
            try:
                r = f.result()
            except data.UploadError as e:
                self._upload_failed(str(e))
                return
            except Exception as e:
                log.exception("upload failed")
                self._upload_failed(f"import failed: {e}")
                return
            opens = r.candles["open_time"] if tb.length(r.candles) else np.empty(0, dtype=np.int64)
            text = upload_done_text(r.rows, sym, iv, r.how, opens, p.tf.tz)
            if r.skipped:
                text += html.escape(f" {upload_skipped_text(r.skipped)}")
            c.upload_msg.param.update(object=text, alert_type="warning" if r.skipped else "success", visible=True)
            imported = p.state.imported
            imported[(sym, iv)] = tb.upsert(imported.get((sym, iv), {}), r.candles, "open_time")
            if (sym, iv) == (c.symbol.value, c.interval.value):
                p.reload_candles()

        p.in_thread(partial(data.upload_candles, p.settings, str(name), body, symbol=sym, interval=iv), done)

    def _upload_failed(self, message: str) -> None:
        """Show a refused upload's one-line reason (text, escaped)."""
        self.page.controls.upload_msg.param.update(object=html.escape(message), alert_type="danger", visible=True)


def upload_skipped_text(skipped: int) -> str:
    """The note after an import that skipped rows, e.g. ``2 rows skipped: they would replace streamed candles.``"""
    return f"{skipped} row{'s' if skipped > 1 else ''} skipped: {SKIPPED_STREAMED}."
