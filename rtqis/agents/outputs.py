"""Where the agents' results go: the output topics, through the project's producer, and the dead letters.

Outputs (candles, tickers, signals, alerts, ADF results, leg samples) are produced with confluent-kafka
(:class:`~rtqis.kafka.clients.MessageProducer`), not Faust's ``topic.send``, which costs ~100 us of
Python a message (channel, future, aiokafka's batch builder and sender) against a few for ``produce``;
a 1-pair replay publishes ~20,000 signals per million ticks (bench/README.md). The table changelogs
stay Faust's. What must not be lost is in an outbox in the table state until its delivery report
(served after each send and on a timer), so a crash loses nothing. Keys go to the same partitions as
with Faust (``murmur2_random``, the Java and aiokafka partitioner).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from rtqis.agents.books import LOCAL_LEG
from rtqis.agents.outbox import Outbox, Output
from rtqis.kafka.clients import MessageProducer
from rtqis.schemas import models as m
from rtqis.schemas.codec import encode
from rtqis.schemas.deadletters import bounded_dead_letter
from rtqis.settings import Settings
from rtqis.topics import ADF, ALERTS, CANDLES_1M, CANDLES_5M, LEGS, PAIR, TopicSpec

__all__ = ["Outputs"]

log = logging.getLogger(__name__)

#: Output kind (see :class:`~rtqis.agents.outbox.Output`) -> its topic and model.
ROUTES: dict[str, tuple[TopicSpec, type[m.Message]]] = {
    "1m": (CANDLES_1M, m.Candle),
    "5m": (CANDLES_5M, m.Candle),
    "leg": (LEGS, m.LegSamples),
    PAIR.name: (PAIR, m.PairSignal),
    ALERTS.name: (ALERTS, m.Alert),
    ADF.name: (ADF, m.AdfResult),
}


#: outputs that may wait for their delivery report before the worker handles another event
#: (:meth:`Outputs.room`): they sit in the outboxes of the stored states, ~1.3 KB of JSON each for a
#: signal, so a state stays far below the broker's 1 MB record limit
MAX_IN_FLIGHT = 256
#: log a wait for deliveries this often (s): the broker is away or very slow
_ROOM_LOG_S = 30.0


class Outputs:
    """The worker's output producer (made on first use) and its dead-letter topic (a Faust topic)."""

    def __init__(self, settings: Settings, deadletter: Any) -> None:
        self.settings = settings
        self.deadletter = deadletter
        self.dead_letters = 0  # count, for the log
        self._producer: MessageProducer | None = None

    @property
    def producer(self) -> MessageProducer:
        if self._producer is None:
            self._producer = MessageProducer(self.settings, partitioner="murmur2_random")
        return self._producer

    def publish(
        self,
        topic: TopicSpec,
        model: m.Message,
        key: str,
        on_delivered: Callable[[], None] | None = None,
        on_failed: Callable[[], None] | None = None,
    ) -> None:
        """Produce ``model`` to ``topic``; ``on_delivered`` runs once the broker acknowledged it,
        ``on_failed`` if its delivery failed."""
        self.producer.send(topic, model, key=key, on_delivered=on_delivered, on_failed=on_failed)

    def send(self, outbox: Outbox[Any], outputs: Iterable[Output], key: str) -> None:
        """Publish a book's outputs under ``key`` (leg samples: under their pair), in order; outbox rows
        report their delivery to ``outbox``. :data:`LOCAL_LEG` rows were applied in the agent: skipped."""
        for o in outputs:
            if o.kind == LOCAL_LEG:
                continue
            topic, model = ROUTES[o.kind]
            ok = partial(outbox.on_delivered, o.key) if o.key is not None else None
            failed = partial(outbox.on_failed, o.key) if o.key is not None else None
            self.publish(
                topic, model(**o.row), o.row["pair"] if o.kind == "leg" else key, on_delivered=ok, on_failed=failed
            )

    def poll(self) -> None:
        """Serve delivery reports (callbacks) when no event comes to trigger them."""
        if self._producer is not None:
            self._producer.poll()

    async def room(self, limit: int = MAX_IN_FLIGHT, timeout_s: float | None = None) -> bool:
        """Before an event: if more than ``limit`` outputs wait for their delivery report, wait (serving
        reports, never blocking the event loop) until at most half of them do. False if ``timeout_s``
        (None: no limit) passed first.

        Why: an output stays in its state's outbox until its delivery is seen, and the state is written
        whole at every event. When the deliveries lag (a replay flat out, a slow or absent broker), the
        outboxes grew with every event: a replay wrote a pair state of 1,004,366 bytes, over the
        broker's 1 MB record limit, and the worker crashed on it. Waiting here bounds them; a broker away
        now stops the worker's progress (logged every 30 s) instead of growing its state."""
        if self._producer is None or self._producer.in_flight <= limit:
            return True
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_log = start + _ROOM_LOG_S
        while self._producer.in_flight > limit // 2:
            self._producer.poll(0)
            now = loop.time()
            if timeout_s is not None and now - start > timeout_s:
                return False
            if now > next_log:
                next_log = now + _ROOM_LOG_S
                log.warning(
                    "%d outputs have waited for their delivery for %.0f s: the next event waits for them "
                    "(broker away or slow?)",
                    self._producer.in_flight,
                    now - start,
                )
            await asyncio.sleep(0.002)
        return True

    async def delivered(self, timeout_s: float = 60.0) -> bool:
        """Wait (serving delivery reports, never blocking the event loop) until every output sent so far
        has its delivery report, delivered or failed; False if that took longer than ``timeout_s``.

        Called before each offset commit (:func:`~rtqis.agents.patches.patch_commit_after_outputs`), so
        that a committed input offset means its outputs are on the broker: the outbox already makes them
        crash-safe, but a replay, the crash drills and any user script take "the worker's group has
        committed the end" for "its outputs are there", and a worker that handles a whole input within
        one commit interval (1 s) had committed before the last outputs left (a drill's reference run
        stored no candle)."""
        if self._producer is None:
            return True
        st = self._producer.stats
        target = st.sent
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while st.delivered + st.failed < target:
            self._producer.poll(0)
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    def flush(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for every output's delivery: the number still undelivered."""
        return self._producer.flush(timeout_s) if self._producer is not None else 0

    async def dead_letter(self, event: Any, reason: str, payload: bytes, stage: str) -> None:
        """Send the rejected input of ``event`` to ``deadletter`` with the reason (keyed by ``stage``),
        bounded in size (:func:`~rtqis.schemas.deadletters.bounded_dead_letter`: a huge message is kept as
        an excerpt, never a message the broker refuses)."""
        self.dead_letters += 1
        msg = event.message
        dl = bounded_dead_letter(
            stage, reason, payload, source_topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key
        )
        value, headers = encode(dl, self.settings.codec)
        await self.deadletter.send(key=stage.encode(), value=value, headers=headers)
        log.warning(
            "dead-lettered %s[%s]@%s: %s (total %d)", msg.topic, msg.partition, msg.offset, dl.reason, self.dead_letters
        )
