"""The worker process: the Faust app with its stop state, the agents' event loop and the crash-only stop.

A stop (SIGTERM/SIGINT) never commits offsets: the agents park at a frame boundary, the producers are
flushed (table changelogs and outputs durable), and the process exits. The next worker resumes from the
last periodic commit and skips what it already applied (idempotent by trade id; outboxes replay).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import faust

from rtqis.settings import Settings

if TYPE_CHECKING:
    from rtqis.agents.outputs import Outputs

__all__ = ["BackPressureLog", "Handler", "RtqisApp", "handle_event", "make_worker", "progress_line", "run_events"]

log = logging.getLogger(__name__)


def _flush_logs() -> None:
    """Write out what the root logger's handlers hold: before ``os._exit``, which skips that."""
    for h in logging.getLogger().handlers:
        h.flush()


class RtqisApp(faust.App):
    """faust.App with the RT-QIS settings, the outputs and the stop state attached."""

    rtqis: Settings
    recovery_fix: str  # "off", "end-offsets" or "batch1" (rtqis.agents.config.recovery_fix)
    pause: asyncio.Event  # set on SIGTERM/SIGINT: agents stop before their next event
    parked: asyncio.Event
    busy: int  # agents in the middle of an event
    outputs: Outputs  # the agents' output producer and dead letters
    progress: dict[tuple[str, int], list[int]]  # (topic, partition) -> [events handled, last offset]

    def attach(self, settings: Settings, recovery_fix: str, outputs: Outputs) -> None:
        """Set the RT-QIS attributes (once, right after construction)."""
        self.rtqis = settings
        self.recovery_fix = recovery_fix
        self.pause = asyncio.Event()
        self.parked = asyncio.Event()
        self.busy = 0
        self.outputs = outputs
        self.progress = {}

    def fatal(self, reason: str) -> NoReturn:
        """Exit at once, as a crash (exit code 1), with ``reason`` as the last log line: for an event that
        could be neither handled nor dead-lettered. No offset commit passes it, so a restarted worker
        reads it again; the agents are crash-safe (see :func:`make_worker`). Going on would skip it: the
        one thing the worker must not do with an input."""
        log.critical("%s", reason)
        _flush_logs()
        os._exit(1)

    async def outputs_delivered(self) -> None:
        """Before each offset commit (:func:`rtqis.agents.patches.patch_commit_after_outputs`): wait for
        the delivery reports of every output sent so far (then a committed offset means its outputs are
        on the broker); after a minute without them, commit anyway (the outbox still holds them)."""
        if not await self.outputs.delivered(60.0):
            log.warning("outputs undelivered after 60 s: committing anyway (they stay in the outbox)")


class Handler(Protocol):
    """What an agent does with one event (:mod:`rtqis.agents.handlers`)."""

    stage: str  # the stage its dead letters name

    async def __call__(self, event: Any) -> None: ...

    def forget(self) -> None:
        """Drop what it keeps in memory: the next event starts from the tables, as in a new worker."""


async def handle_event(outputs: Outputs, event: Any, handle: Handler) -> bool:
    """``handle(event)``; True if it was handled, False if it was dead-lettered.

    Bad input is dead-lettered by the handlers themselves; this is for the unexpected (a bug, a failed
    import, ...). Stock Faust logs the agent as crashed, restarts it and goes on with the *next* event:
    the failed frame was lost, and with it trades from the candles and samples from the pairs (seen
    when a refit raced an import: a replay lost two frames and 27 signals). Here the event is tried
    again as a restarted worker would try it: the handler first forgets its in-memory state (the failed
    attempt may have changed it in place), then reads its tables again, where the event is either not
    applied or applied in part, which the handlers skip (trade ids, the aligner) and whose outputs wait
    in the outbox, sent again. An event that fails twice is dead-lettered with the error, so the agent
    goes on and the frame can be found and replayed. If that dead letter fails too, the error is raised:
    :func:`run_events` then stops the worker (:meth:`RtqisApp.fatal`) rather than go past the event."""
    try:
        await handle(event)
        return True
    except Exception as e:  # noqa: BLE001 - logged, retried, then dead-lettered: never a silent loss
        first = e
    msg = event.message
    where = f"{msg.topic}[{msg.partition}]@{msg.offset}"
    log.error("%s: the agent failed on it: %s: %s; trying it again from the tables", where, type(first).__name__, first,
              exc_info=first)  # fmt: skip
    handle.forget()
    try:
        await handle(event)
        log.warning("%s: handled on the second try", where)
        return True
    except Exception as e:  # noqa: BLE001
        handle.forget()
        log.error("%s: the agent failed on it again: dead-lettered", where, exc_info=e)
        reason = f"the worker failed on it twice: {type(e).__name__}: {e}"
        await outputs.dead_letter(event, reason, event.value or b"", handle.stage)
        return False


async def run_events(app: RtqisApp, stream: Any, handle: Handler) -> None:
    """An agent's body: ``handle(event)`` for every event of ``stream`` (:func:`handle_event`), counted in
    ``app.busy``; once ``app.pause`` is set, park before the next event and leave it unprocessed and
    unacknowledged."""
    async for event in stream.events():
        await app.outputs.room()  # bounded outboxes: at most MAX_IN_FLIGHT outputs await delivery
        if app.pause.is_set():  # stopping: leave this event unprocessed and unacknowledged
            app.parked.set()
            await asyncio.Event().wait()
        app.busy += 1
        try:
            await handle_event(app.outputs, event, handle)
        except Exception as e:  # noqa: BLE001 - neither handled nor dead-lettered (the dead letter failed too)
            msg = event.message
            app.fatal(
                f"{msg.topic}[{msg.partition}]@{msg.offset}: neither handled nor dead-lettered "
                f"({type(e).__name__}: {e}): the worker exits without committing it, a restarted worker reads it again"
            )
        finally:
            app.busy -= 1
        msg = event.message
        seen = app.progress.setdefault((msg.topic, msg.partition), [0, -1])
        seen[0] += 1
        seen[1] = msg.offset


def progress_line(progress: dict[tuple[str, int], list[int]], before: dict[tuple[str, int], int]) -> str:
    """One log line of what the agents handled since ``before`` (events per input partition, then its
    last offset): ``ticks.trade[0] +12 @95, pairs.legs[1] +0 @570``; ``before`` is updated. A partition
    that stays at +0 while its topic grows is the first thing to look at when outputs stop."""
    parts = []
    for (topic, partition), (n, offset) in sorted(progress.items()):
        short = ".".join(topic.split(".")[-2:])
        parts.append(f"{short}[{partition}] +{n - before.get((topic, partition), 0)} @{offset}")
        before[(topic, partition)] = n
    return ", ".join(parts) or "no event yet"


class BackPressureLog(logging.Filter):
    """Counts Faust's producer back-pressure instead of logging each wait as a warning.

    When an agent writes tables faster than their changelog records are sent (a replay, a backlog),
    Faust waits for its producer buffer and logs "producer buffer full size N" (WARNING) and "producer
    flush took S" (INFO) each time: hundreds of lines a minute in a replay's log for the normal flow
    control of a worker running flat out. Installed on Faust's producer logger, this drops those two
    lines (they still show with debug logging), counts the waits and their seconds, and the worker's
    progress line reports them (:meth:`summary`)."""

    LOGGER = "faust.transport.producer"

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0
        self.seconds = 0.0
        self._reported = (0, 0.0)

    @classmethod
    def install(cls) -> BackPressureLog:
        """A new filter on Faust's producer logger, in place of any earlier one (a process that builds
        several apps, as tests do, keeps one filter, the newest app's)."""
        logger = logging.getLogger(cls.LOGGER)
        for old in [f for f in logger.filters if isinstance(f, cls)]:
            logger.removeFilter(old)
        new = cls()
        logger.addFilter(new)
        return new

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        if record.msg.startswith("producer buffer full size"):
            self.waits += 1
        elif record.msg.startswith("producer flush took"):
            try:
                self.seconds += float(record.msg.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                return True
        else:
            return True
        return logging.getLogger().isEnabledFor(logging.DEBUG)

    def summary(self) -> str:
        """The waits since the last call: ``""`` if none, else ``"; producer back-pressure: 12 waits, 0.4 s"``."""
        waits, seconds = self.waits - self._reported[0], self.seconds - self._reported[1]
        self._reported = (self.waits, self.seconds)
        return f"; producer back-pressure: {waits} waits, {seconds:.1f} s" if waits else ""


def make_worker(app: RtqisApp, loglevel: str) -> Any:
    """A Faust worker whose SIGTERM/SIGINT stop at a frame boundary, flush, and exit without a final
    offset commit.

    Faust's own shutdown stops the tables and flushes the producer *before* it stops the agents, and a
    final commit at stop (ours or Faust's) was seen to run ahead of the table changelog: a table came
    back short after SIGTERM in about 1 run of 3, never after SIGKILL. So a stop here is crash-only:
    the agents park before their next event, the producer is flushed (changelogs and outputs
    durable), and the process exits. The next worker resumes from the last periodic commit (made
    after a full flush) and skips the frames it already applied (idempotent by trade id).
    """
    from faust.worker import Worker

    class SafeStopWorker(Worker):
        _rtqis_stopping = False

        def _schedule_shutdown(self, signal: Any) -> None:
            if self._rtqis_stopping:
                return
            self._rtqis_stopping = True
            app.pause.set()
            asyncio.ensure_future(self._safe_stop(signal), loop=self.loop)

        async def _safe_stop(self, signal: Any) -> None:
            code = 0
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 10.0
                while app.busy and loop.time() < deadline:
                    await asyncio.sleep(0.005)
                await app.producer.flush()
                left = app.outputs.flush(10.0)
                if left:
                    log.warning("%d output messages undelivered at stop (outbox rows are sent again)", left)
                log.info("stopped on %s at a frame boundary; outputs flushed", getattr(signal, "name", signal))
            except Exception:  # noqa: BLE001 - never hang on stop; the next worker reprocesses
                log.exception("clean stop failed; exiting without committing")
                code = 1
            _flush_logs()
            os._exit(code)

    return SafeStopWorker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
