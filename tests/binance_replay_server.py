"""A local WebSocket server that replays recorded Binance combined-stream messages (for tests).

It speaks enough of Binance's protocol for :class:`rtqis.producers.binance_ws.BinanceStream`: it waits
for a ``SUBSCRIBE`` request, answers ``{"result": null, "id": N}``, then sends the recorded frames of the
subscribed streams (frames whose ``stream`` cannot be read, such as deliberately broken ones, are always
sent). A single cursor runs over the frames for the whole server, like a live feed: a new connection
continues where the previous one stopped, unless its :class:`Plan` rewinds (the client sees duplicates)
or skips (the client sees a gap). Each connection follows the next :class:`Plan` (then
``default_plan``): send some frames, then close, abort or hold the connection open and silent.

``sent`` logs the index of every frame sent, across connections, so tests can compute exactly what the
client should have yielded. :meth:`ReplayServer.broadcast` pushes extra frames to open connections.

Usage::

    frames = load_recorded([SPOT / "spot_btcusdt_20240808.gz"], limit=2000)
    async with ReplayServer([f.text for f in frames]) as server:
        stream = BinanceStream(["BTCUSDT"], base_url=server.url)
"""

from __future__ import annotations

import asyncio
import gzip
import heapq
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from rtqis.process import free_port

__all__ = ["Plan", "RecordedLine", "ReplayServer", "free_port", "load_recorded"]


@dataclass(frozen=True)
class RecordedLine:
    """One line of a capture: local receive time (ns) and the raw JSON text."""

    recv_ns: int
    text: str


def _read_lines(path: Path, limit: int | None) -> Iterator[RecordedLine]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                return
            ts, _, text = line.rstrip("\n").partition(" ")
            yield RecordedLine(int(ts), text)


def load_recorded(paths: Sequence[Path], limit: int | None = None) -> list[RecordedLine]:
    """The first ``limit`` lines of each capture (``<recv ns> <json>``), merged by receive time."""
    return list(heapq.merge(*(_read_lines(p, limit) for p in paths), key=lambda r: r.recv_ns))


@dataclass(frozen=True)
class Plan:
    """What the server does on one connection.

    ``rewind``/``skip``: move the cursor back (re-send frames: duplicates) or forward (never send them: a
    gap) before sending; ``send``: how many frames to send (None: all that remain); ``then``: ``"hold"``
    keeps the connection open and silent, ``"close"`` closes it with ``close_code``, ``"abort"`` drops the
    TCP connection without a close frame; ``reply``: answer the SUBSCRIBE request.
    """

    send: int | None = None
    then: Literal["hold", "close", "abort"] = "hold"
    rewind: int = 0
    skip: int = 0
    close_code: int = 1000
    reply: bool = True


def _stream_of(frame: str | bytes) -> str | None:
    try:
        obj = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        return None
    s = obj.get("stream") if isinstance(obj, dict) else None
    return s if isinstance(s, str) else None


class ReplayServer:
    """Replays ``frames`` on ``ws://127.0.0.1:<port>/stream`` (see the module docstring)."""

    def __init__(
        self,
        frames: Sequence[str | bytes] = (),
        *,
        plans: Sequence[Plan] = (),
        default_plan: Plan = Plan(),
        port: int = 0,
        interval_s: float = 0.0,
        reject_first: int = 0,
    ) -> None:
        self.frames = list(frames)
        self.plans = list(plans)
        self.default_plan = default_plan
        self.port = port
        self.interval_s = interval_s  # pause between two frames sent
        self.reject_first = reject_first  # answer the first N handshakes with HTTP 503
        self.pos = 0  # next frame to send
        self.sent: list[int] = []  # indices of frames sent, in order, over all connections
        self.starts: list[int] = []  # cursor when each connection subscribed (before its rewind/skip)
        self.requests: list[dict[str, Any]] = []  # every JSON request received (SUBSCRIBE, ...)
        self.paths: list[str] = []  # request path of every accepted handshake
        self.connections: list[ServerConnection] = []  # every accepted connection, in order
        self.handshakes = 0
        self.exhausted = asyncio.Event()  # set when the cursor reached the end of the frames
        self._streams = [_stream_of(f) for f in self.frames]
        self._changed = asyncio.Condition()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        """Base URL to give the client (it appends ``/stream``)."""
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await serve(
            self._handler, "127.0.0.1", self.port, process_request=self._process_request, close_timeout=1
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_connections(self, n: int, timeout_s: float = 10.0) -> ServerConnection:
        """Wait until ``n`` connections have been accepted and subscribed; return the ``n``-th."""

        async def ready() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.requests) >= n)

        await asyncio.wait_for(ready(), timeout_s)
        return self.connections[n - 1]

    async def broadcast(self, frame: str | bytes) -> int:
        """Send one extra frame to every open connection; return how many got it."""
        n = 0
        for ws in list(self.connections):
            try:
                await ws.send(frame)
                n += 1
            except ConnectionClosed:
                pass
        return n

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        if self.handshakes <= self.reject_first:
            return Response(503, "Service Unavailable", Headers(), b"try again later\n")
        return None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handler(self, ws: ServerConnection) -> None:
        index = len(self.connections)
        plan = self.plans[index] if index < len(self.plans) else self.default_plan
        self.connections.append(ws)
        self.paths.append(ws.request.path if ws.request is not None else "")
        try:
            request = json.loads(await ws.recv())
            self.requests.append(request)
            self.starts.append(self.pos)
            await self._notify()
            subscribed = set(request.get("params", []))
            if plan.reply:
                await ws.send(json.dumps({"result": None, "id": request.get("id")}))
            self.pos = min(len(self.frames), max(0, self.pos - plan.rewind) + plan.skip)
            sent_here = 0
            while self.pos < len(self.frames) and (plan.send is None or sent_here < plan.send):
                i = self.pos
                stream = self._streams[i]
                if stream is None or stream in subscribed:
                    if ws.state is not State.OPEN:  # closing: the frame stays for the next connection
                        break
                    # Open now means the frame is written even if send() then raises: count it as sent.
                    self.sent.append(i)
                    self.pos = i + 1
                    sent_here += 1
                    await ws.send(self.frames[i])
                    if self.interval_s:
                        await asyncio.sleep(self.interval_s)
                else:
                    self.pos = i + 1
            if self.pos >= len(self.frames):
                self.exhausted.set()
            if plan.then == "close":
                await ws.close(plan.close_code, "replay plan")
            elif plan.then == "abort":
                if ws.transport is not None:
                    ws.transport.abort()
            else:
                await ws.wait_closed()
        except ConnectionClosed:
            pass
