"""The outbox: outputs that must not be lost, kept in the agents' table state until their delivery is seen.

An agent writes its new state to a Faust table (made durable by the table's changelog) and only then
publishes what the event produced. A crash between the two would lose the outputs, so the ones that
matter (closed candles, corrections, leg samples, pair signals, alerts, ADF results) are stored *with*
the state, in an outbox, and leave it only once this process has seen their delivery report:

- **pending outputs keyed by identity**: every entry has a key (e.g. ``BTCUSDT|1m|<open>|<trades>|False``),
  so two entries for different symbols or pairs at the same times never collide;
- **forget on delivery**: the producer's delivery callback marks the key (:meth:`Outbox.on_delivered`);
  the next write of that state drops the entry, and the key leaves this process's memory with it
  (:meth:`Outbox.commit`), so memory holds one event's outputs, not the whole run's. Given ``serve``
  (the producer's poll), the reports are served just before a state is written (:meth:`Outbox.settle`),
  so a state carries only the outputs whose delivery is still unknown then;
- **send again on failure**: a delivery that failed (the broker away longer than the producer's message
  timeout) unmarks the key as sent (:meth:`Outbox.on_failed`), so the next event of that state sends the
  entry again, as a restarted worker would (before, it waited in the outbox until a restart);
- **bounded**: entries are the outputs not yet seen delivered, and the worker lets at most
  :data:`rtqis.agents.outputs.MAX_IN_FLIGHT` outputs wait for their delivery before it handles another
  event (:meth:`rtqis.agents.outputs.Outputs.room`), so a stored state stays far below the broker's
  1 MB record limit (a replay whose deliveries lagged wrote a 1,004,366-byte pair state, and the worker
  crashed on it);
- **replay on restart**: an entry restored from the changelog that this process never sent is sent
  again (:meth:`Outbox.restore`). Consumers upsert or deduplicate, so a repeat is harmless; a loss is
  impossible (effectively once).

Pure bookkeeping: no Faust, no Kafka. Used by :mod:`rtqis.agents.books`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

__all__ = ["Outbox", "OutboxDraft", "Output"]

E = TypeVar("E")


class Output(NamedTuple):
    """One row an agent publishes: ``kind`` names its topic (a topic's short name, a candle interval,
    ``"leg"``), ``key`` is its outbox identity (publish with a delivery callback) or None (a live update,
    sent once and never replayed)."""

    kind: str
    row: dict[str, Any]
    key: str | None


@dataclass
class OutboxDraft(Generic[E]):
    """The outbox of one stored state while an event is applied (from :meth:`Outbox.restore`).

    ``entries``: what to store with the new state (the undelivered stored entries, then the new ones);
    ``resend``: stored entries this process never sent (restored from the changelog), in order;
    ``gone``: keys of stored entries whose delivery was seen (dropped from ``entries``).
    """

    entries: list[E]
    resend: list[E]
    gone: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when delivered entries left: the state must be written even if nothing else changed."""
        return bool(self.gone)


class Outbox(Generic[E]):
    """The delivery bookkeeping of one kind of outbox entry ``E``, identified by ``key(entry)``.

    The entries themselves live in the table state (they survive a crash); this object only remembers,
    for this process, which keys it has sent (``sent``) and which of those were delivered
    (``delivered``). Use per event: :meth:`restore` the stored entries, :meth:`add` the new outputs,
    store ``draft.entries`` with the new state, then :meth:`commit` the draft.
    """

    def __init__(self, key: Callable[[E], str], serve: Callable[[], None] | None = None) -> None:
        self.key = key
        self.serve = serve  # serves the producer's delivery reports (runs on_delivered / on_failed), if given
        self.delivered: set[str] = set()  # keys whose delivery report this process saw
        self.sent: set[str] = set()  # keys this process has sent (and not yet forgotten)

    def on_delivered(self, key: str) -> None:
        """The producer's delivery callback for the output ``key``."""
        self.delivered.add(key)

    def on_failed(self, key: str) -> None:
        """The producer's callback for a failed delivery of the output ``key``: not sent, as far as this
        process knows, so the next :meth:`restore` of its state sends it again."""
        self.sent.discard(key)

    def restore(self, stored: Sequence[E]) -> OutboxDraft[E]:
        """Start an event on a state whose outbox holds ``stored``: delivered entries are dropped, and
        entries never sent by this process (restored from the changelog) are marked sent and returned
        in ``resend`` to be published again."""
        draft: OutboxDraft[E] = OutboxDraft(entries=[], resend=[])
        for entry in stored:
            key = self.key(entry)
            if key in self.delivered:
                draft.gone.append(key)
                continue
            draft.entries.append(entry)
            if key not in self.sent:
                self.sent.add(key)
                draft.resend.append(entry)
        return draft

    def add(self, draft: OutboxDraft[E], entry: E) -> str:
        """Put a new output in the outbox (it is about to be sent): its key."""
        key = self.key(entry)
        self.sent.add(key)
        draft.entries.append(entry)
        return key

    def settle(self, draft: OutboxDraft[E]) -> None:
        """Just before the state with ``draft.entries`` is written: serve the delivery reports that came
        while the event was applied (:attr:`serve`) and leave out the entries they cover, as the next
        :meth:`restore` would. Without it a state carried the outputs of the events before it, delivered
        but not yet seen so: a replay flat out wrote each pair state with 34 outbox entries on average
        (two events' outputs besides its own), 32 KB a state and most of the changelog's bytes."""
        if self.serve is None:
            return
        self.serve()
        if not self.delivered:
            return
        kept = []
        for entry in draft.entries:
            key = self.key(entry)
            if key in self.delivered:
                draft.gone.append(key)
            else:
                kept.append(entry)
        draft.entries = kept

    def forget_sent(self) -> None:
        """Forget which keys this process sent, as a new process would: every stored entry not seen
        delivered is sent again at its state's next event (after a failed event, whose outputs were
        added here but perhaps never reached the producer)."""
        self.sent.clear()

    def commit(self, draft: OutboxDraft[E]) -> None:
        """The state with ``draft.entries`` was written: forget the delivered keys that left it (without
        this, ``sent`` and ``delivered`` would grow by every output for good). Not called when the state
        is not written: its stored entries, delivered ones included, are still there."""
        self.delivered.difference_update(draft.gone)
        self.sent.difference_update(draft.gone)
