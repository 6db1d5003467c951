"""The stall watchdog: an input partition with messages waiting and none handled for :data:`STALL_S`.

Faust decides which assigned partitions its fetcher reads (``Consumer._active_partitions``): a partition
leaves that set when an agent's queue is under pressure (``on_buffer_full``) or while tables recover
(``pause_partitions``), and comes back when the queue drains or recovery ends. A partition that never
came back would wait for ever with no error: the outputs of its symbols stop while everything else
runs. So would a partition whose records Faust fetched and dropped during a rebalance and never read
again: in CI, the survivor of a SIGKILLed worker published nothing more for the pairs of one leg after
taking over (tests/test_scale_out.py), with nothing in its log. This watchdog found the cause (fetched,
not paused, read None, committed None: fixed in :mod:`rtqis.agents.patches`) and stays as the net.

So the worker checks its input partitions every few seconds (:func:`rtqis.agents.app.create_app`):
a partition whose end offset is past what was handled, whose position has not moved for
:data:`STALL_S` seconds, outside a rebalance or recovery, is logged with the consumer's view of it
(fetched or not, paused, buffered, read and committed offsets, the agents' queue sizes), resumed, and the
consumer sought to its committed offsets (the beginning where a partition has none). Both are what
Faust itself does when recovery completes; what is read twice is skipped (idempotent agents). This
module is the bookkeeping (no Faust) and the check; the timer is in :mod:`rtqis.agents.app`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["STALL_S", "Stall", "StallWatch", "agent_queues", "check_stalls", "consumer_view"]

log = logging.getLogger(__name__)

#: the default of ``RTQIS_WORKER_STALL_S``: an input partition with messages waiting and no progress for
#: this long is stalled (s); a busy agent handles a frame in milliseconds, a rebalance or recovery is
#: excluded, so this is far from normal work
STALL_S = 30.0

Key = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Stall:
    """A stalled input partition: next offset to handle, end offset, and for how long (s)."""

    topic: str
    partition: int
    position: int
    end: int
    for_s: float


class StallWatch:
    """Remembers, per input partition, its position, since when it has not moved and when its stall was
    last reported (a stall that lasts is reported again every :attr:`repeat_s`)."""

    def __init__(self, stall_s: float = STALL_S, repeat_s: float = 10 * STALL_S) -> None:
        self.stall_s = stall_s
        self.repeat_s = repeat_s
        self._since: dict[Key, tuple[int, float, float | None]] = {}  # key -> (position, since, reported)

    def reset(self) -> None:
        """Forget everything (a rebalance or recovery is under way: positions jump, partitions move)."""
        self._since.clear()

    def observe(self, now: float, positions: Mapping[Key, int], ends: Mapping[Key, int]) -> list[Stall]:
        """The partitions to report as stalled at time ``now`` (s, monotonic): those of ``ends`` with
        messages past their position (``positions``: the next offset to handle, 0 if unknown) that has
        not moved for :attr:`stall_s`; reported once, then every :attr:`repeat_s` while it lasts."""
        out: list[Stall] = []
        since: dict[Key, tuple[int, float, float | None]] = {}
        for key, end in ends.items():
            pos = positions.get(key, 0)
            if end <= pos:
                continue  # nothing waiting
            prev = self._since.get(key)
            first, reported = (prev[1], prev[2]) if prev is not None and prev[0] == pos else (now, None)
            if now - first >= self.stall_s and (reported is None or now - reported >= self.repeat_s):
                out.append(Stall(key[0], key[1], pos, end, round(now - first, 1)))
                reported = now
            since[key] = (pos, first, reported)
        self._since = since
        return out


def consumer_view(consumer: Any, tp: Any) -> str:
    """What Faust's consumer says of ``tp``: fetched (in the active set), paused, buffered (an agent
    queue was full), its read and committed offsets (Faust internals, read defensively)."""
    active = getattr(consumer, "_active_partitions", None)
    parts = [
        f"fetched={active is not None and tp in active}",
        f"paused={tp in getattr(consumer, '_paused_partitions', ())}",
        f"buffered={tp in getattr(consumer, '_buffered_partitions', ())}",
        f"read={getattr(consumer, '_read_offset', {}).get(tp)}",
        f"committed={getattr(consumer, '_committed_offset', {}).get(tp)}",
    ]
    return " ".join(parts)


async def check_stalls(app: Any, watch: StallWatch, inputs: set[str]) -> list[Stall]:
    """One check of the worker ``app``'s assigned partitions of the ``inputs`` topics: each stalled one
    is logged with :func:`consumer_view` and the agents' queue sizes, then resumed, and the consumer
    sought to its committed offsets. Outside a rebalance, a recovery or a stop only (the watch is reset
    then)."""
    if app.rebalancing or getattr(app, "in_recovery", False) or app.pause.is_set():
        watch.reset()
        return []
    consumer = app.consumer
    tps = [tp for tp in consumer.assignment() if tp.topic in inputs]
    if not tps:
        watch.reset()
        return []
    ends = await consumer.highwaters(*tps)
    if app.rebalancing or getattr(app, "in_recovery", False):
        watch.reset()
        return []
    committed = getattr(consumer, "_committed_offset", {})
    by_key = {(tp.topic, tp.partition): tp for tp in tps}
    positions = {key: max(app.progress.get(key, [0, -1])[1] + 1, committed.get(tp) or 0) for key, tp in by_key.items()}
    end_of = {(tp.topic, tp.partition): int(end) for tp, end in ends.items() if end is not None}
    found = watch.observe(asyncio.get_running_loop().time(), positions, end_of)
    for st in found:
        tp = by_key[(st.topic, st.partition)]
        log.warning(
            "input partition %s[%d] stalled for %.0f s: %d messages waiting (next %d, end %d); consumer: %s; "
            "agent queues %s, agents busy %d; resuming it and seeking to the committed offsets",
            st.topic, st.partition, st.for_s, st.end - st.position, st.position, st.end,
            consumer_view(consumer, tp), agent_queues(app), app.busy,
        )  # fmt: skip
        getattr(consumer, "_buffered_partitions", set()).discard(tp)
        consumer.resume_partitions({tp})
    if found:
        # what Faust does once recovery completes: every partition back to its committed offset, and
        # (patched, rtqis.agents.patches) to its beginning where it has none, so records fetched and
        # dropped are read again; the agents skip what they already applied
        await consumer.perform_seek()
    return found


def agent_queues(app: Any) -> dict[str, int | None]:
    """Events queued per agent (the agent's stream queue; None where Faust has none yet)."""
    out: dict[str, int | None] = {}
    for name, agent in app.agents.items():
        q = getattr(getattr(agent, "_channel_iterator", None), "_queue", None)
        out[name.rsplit(".", 1)[-1]] = q.qsize() if q is not None else None
    return out
