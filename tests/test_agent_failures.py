"""An agent that fails on an event (a bug, a failed import; not bad input, which the handlers dead-letter
themselves) loses nothing: the event is tried again from the tables, as a restarted worker would try it,
and an event that fails twice is dead-lettered with the error (rtqis.agents.worker.handle_event).

The real trades handler, books and output producer (a real broker); the tables are in-memory dicts (a
Faust ``Table(default=dict)``), the events stand-ins with the fields the handler reads, and the
dead-letter topic (a Faust topic, which needs a running app) a stand-in that records what is sent."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest

from rtqis.agents.books import PairBook, SymbolBook
from rtqis.agents.handlers import TradesHandler
from rtqis.agents.outbox import Outbox, Output
from rtqis.agents.outputs import Outputs
from rtqis.agents.worker import handle_event, run_events
from rtqis.analytics.huber import HuberFairValue
from rtqis.producers.feed import trade_frames
from rtqis.producers.synthetic import SymbolSpec, SyntheticMarket
from rtqis.schemas.codec import encode
from rtqis.settings import Settings
from rtqis.topics import TRADES

pytestmark = [pytest.mark.broker]


class _DeadLetters:
    """The dead-letter topic's stand-in: what the worker would send to it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, key: bytes, value: bytes, headers: Any) -> None:
        self.sent.append({"key": key, "value": value})


class _RecordingOutputs(Outputs):
    """The worker's real output producer, recording every row it publishes (kind, key, row)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, _DeadLetters())
        self.rows: list[tuple[str, str | None, dict[str, Any]]] = []

    def send(self, outbox: Any, outputs: Any, key: str) -> None:
        outputs = list(outputs)
        self.rows.extend((o.kind, o.key, o.row) for o in outputs if o.key is not None)
        super().send(outbox, outputs, key)


def _events(settings: Settings) -> list[Any]:
    """Trade frames of both legs of the pair, in event-time order, as the trades agent gets them."""
    market = SyntheticMarket([SymbolSpec("BTCUSDT", 60_000.0), SymbolSpec("ETHUSDT", 3_000.0)], seed=5, trade_rate=20)
    frames = [f for _ in range(8) for b in market.advance(30_000)[0] for f in trade_frames(b, 200)]
    frames.sort(key=lambda f: int(f.cols["event_time"][0]))
    events = []
    for i, f in enumerate(frames):
        value, headers = encode(f, settings.codec)
        msg = SimpleNamespace(topic=TRADES.full_name(settings.namespace), partition=0, offset=i, key=f.symbol.encode())
        events.append(SimpleNamespace(value=value, headers=headers, message=msg))
    return events


def _run(settings: Settings, events: list[Any], *, stock: bool = False) -> dict[str, Any]:
    """Every event through a new trades handler: its tables, what it published, what it dead-lettered.
    ``stock``: what Faust does when an agent raises (the event is skipped, the agent goes on)."""
    outputs = _RecordingOutputs(settings)
    tables: dict[str, defaultdict[str, dict[str, Any]]] = {"candles": defaultdict(dict), "last": defaultdict(dict)}
    symbols = SymbolBook(settings, candles=True, sample=True, colocated=True)
    handler = TradesHandler(outputs, symbols, tables["candles"], tables["last"], PairBook(settings))

    async def go() -> list[bool]:
        handled = []
        for e in events:
            if stock:
                try:
                    await handler(e)
                    handled.append(True)
                except RuntimeError:
                    handled.append(False)
            else:
                handled.append(await handle_event(outputs, e, handler))
            outputs.poll()
        return handled

    handled = asyncio.run(go())
    assert outputs.flush(30.0) == 0
    return {"handled": handled, "tables": tables, "rows": outputs.rows, "dead": outputs.deadletter.sent}


def _state(tables: dict[str, Any]) -> str:
    """What the tables hold, without the write counters and outboxes (those depend on delivery timing),
    as JSON (a NaN equals a NaN there)."""
    return json.dumps(
        {
            name: {k: {f: v for f, v in st.items() if f not in ("seq", "outbox")} for k, st in t.items()}
            for name, t in tables.items()
        },
        sort_keys=True,
    )


def _published(rows: list[tuple[str, str | None, dict[str, Any]]]) -> dict[str, str]:
    """Every distinct output (by its outbox key) with its row as JSON; a repeat must carry the same row."""
    out: dict[str, str] = {}
    for _kind, key, row in rows:
        assert key is not None
        text = json.dumps(row, sort_keys=True)
        assert out.setdefault(key, text) == text, f"{key} published twice with different values"
    return out


def _fail_once_at(monkeypatch: pytest.MonkeyPatch, call: int, always: bool = False) -> list[int]:
    """Huber refits raise at their ``call``-th update (once; ``always``: from then on), in the middle of a
    frame: the pair state may already be written, the symbol's not yet."""
    calls = [0]
    update = HuberFairValue.update

    def failing(self: HuberFairValue, x: float, y: float) -> tuple[float, float]:
        calls[0] += 1
        if calls[0] == call or (always and calls[0] >= call):
            raise RuntimeError("injected failure")
        return update(self, x, y)

    monkeypatch.setattr(HuberFairValue, "update", failing)
    return calls


def test_an_event_that_fails_once_is_applied_on_the_retry_and_nothing_is_lost(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings.model_copy(update={"pairs": ["ETHUSDT/BTCUSDT"]})
    events = _events(s)
    clean = _run(s, events)
    assert all(clean["handled"]) and not clean["dead"]
    signals = [k for k, _, _ in clean["rows"] if k == "analytics.pair"]
    assert len(signals) > 200, "the pair must be producing signals for the failure to land mid-frame"

    calls = _fail_once_at(monkeypatch, 150)
    failed = _run(s, events)
    assert calls[0] > 150  # the failure happened, and processing went on
    assert all(failed["handled"]) and not failed["dead"]
    assert _state(failed["tables"]) == _state(clean["tables"])
    assert _published(failed["rows"]) == _published(clean["rows"])

    # what stock Faust does (skip the event, restart the agent): the frame is lost, the numbers differ
    _fail_once_at(monkeypatch, 150)
    stock = _run(s, events, stock=True)
    assert stock["handled"].count(False) == 1
    assert _state(stock["tables"]) != _state(clean["tables"])
    assert set(_published(stock["rows"])) != set(_published(clean["rows"]))


def test_an_event_that_fails_twice_is_dead_lettered_with_the_error_and_the_agent_goes_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings.model_copy(update={"pairs": ["ETHUSDT/BTCUSDT"]})
    events = _events(s)[:60]
    clean = _run(s, events)
    _fail_once_at(monkeypatch, 100, always=True)  # every refit from the 100th update on fails
    failed = _run(s, events)
    dead = failed["handled"].count(False)
    assert dead >= 1 and len(failed["dead"]) == dead
    assert failed["dead"][0]["key"] == b"worker.trades"
    assert b"the worker failed on it twice: RuntimeError: injected failure" in failed["dead"][0]["value"]
    first = failed["handled"].index(False)
    assert all(failed["handled"][:first])  # every event before the failure handled
    # the agent went on (candles, samples) but published fewer distinct outputs, each one as the clean run
    # did (a failed event's stored outputs are sent again: repeats, with the same values)
    published, want = _published(failed["rows"]), _published(clean["rows"])
    assert 0 < len(published) < len(want) and all(want[k] == v for k, v in published.items())


def test_outputs_delivered_waits_for_every_delivery_report(settings: Settings) -> None:
    """What the worker awaits before each offset commit: every output sent so far has its report."""
    s = settings.model_copy(update={"pairs": ["ETHUSDT/BTCUSDT"]})
    outputs = _RecordingOutputs(s)
    symbols = SymbolBook(s, candles=True, sample=True, colocated=True)
    handler = TradesHandler(outputs, symbols, defaultdict(dict), defaultdict(dict), PairBook(s))

    async def go() -> bool:
        for e in _events(s)[:40]:
            await handler(e)
        return await outputs.delivered(30.0)

    assert asyncio.run(go()) is True
    st = outputs.producer.stats
    assert st.sent > 100 and st.delivered == st.sent and st.failed == 0


class _Fatal(Exception):
    """Raised by the test app's ``fatal`` (the real one exits the process)."""


def test_an_event_neither_handled_nor_dead_lettered_stops_the_worker_before_the_next_event(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler fails twice and the dead letter fails too (the topic refuses it): the worker must not
    go on to the next event, which stock Faust does (the agent restarts) and which would let a commit
    pass the lost one. run_events calls the app's ``fatal`` with the event's place and the error."""
    s = settings.model_copy(update={"pairs": ["ETHUSDT/BTCUSDT"]})
    events = _events(s)[:60]
    outputs = _RecordingOutputs(s)

    async def refused(key: bytes, value: bytes, headers: Any) -> None:
        raise RuntimeError("dead-letter topic refused it")

    outputs.deadletter.send = refused  # type: ignore[method-assign]
    handler = TradesHandler(
        outputs, SymbolBook(s, candles=True, sample=True, colocated=True), defaultdict(dict), defaultdict(dict),
        PairBook(s),
    )  # fmt: skip
    _fail_once_at(monkeypatch, 100, always=True)
    reasons: list[str] = []

    def fatal(reason: str) -> None:
        reasons.append(reason)
        raise _Fatal(reason)

    app = SimpleNamespace(pause=asyncio.Event(), busy=0, outputs=outputs, progress={}, fatal=fatal)

    class _Stream:
        async def events(self) -> Any:
            for e in events:
                yield e

    with pytest.raises(_Fatal):
        asyncio.run(run_events(app, _Stream(), handler))  # type: ignore[arg-type]
    outputs.flush(30.0)
    assert len(reasons) == 1
    handled = sum(n for n, _ in app.progress.values())
    assert 0 < handled < len(events)  # it stopped at the failing event, and never counted it as handled
    topic = TRADES.full_name(s.namespace)
    assert reasons[0].startswith(f"{topic}[0]@{handled}: neither handled nor dead-lettered (RuntimeError: ")
    assert "dead-letter topic refused it" in reasons[0] and app.busy == 0


def _alerts(n: int) -> list[Output]:
    """``n`` alert outputs with outbox keys ``k0``, ``k1``, ..."""
    row = {"pair": "ETHUSDT/BTCUSDT", "kind": "exit", "zscore": 0.1, "threshold": 0.5, "spread": 0.0, "beta": 1.0,
           "x": 1.0, "y": 1.0, "message": "m"}  # fmt: skip
    return [Output("alerts", {**row, "time": i}, f"k{i}") for i in range(n)]


def test_room_waits_until_half_the_outputs_in_flight_are_delivered(settings: Settings) -> None:
    """Before each event the worker waits while more than MAX_IN_FLIGHT outputs await their delivery
    (their rows sit in the stored states' outboxes, which must stay far below the 1 MB record limit)."""
    outputs = Outputs(settings, _DeadLetters())
    outbox: Any = Outbox(str)

    async def go() -> tuple[bool, int, int]:
        outputs.send(outbox, _alerts(300), "ETHUSDT/BTCUSDT")
        before = outputs.producer.in_flight
        ok = await outputs.room(limit=100, timeout_s=60)
        return ok, before, outputs.producer.in_flight

    ok, before, after = asyncio.run(go())
    assert before > 100  # the reports had not come yet: there was something to wait for
    assert ok and after <= 50 and len(outbox.delivered) >= 250


def test_room_gives_up_only_at_its_timeout_when_the_broker_is_away(tmp_path: Any) -> None:
    """No broker: nothing is delivered, the wait does not end by itself (the worker stops progressing
    instead of growing its states; the real call has no timeout)."""
    from rtqis.process import free_port
    from tests.conftest import make_settings

    s = make_settings(f"127.0.0.1:{free_port()}", tmp_path)  # nobody listens there
    outputs = Outputs(s, _DeadLetters())

    async def go() -> tuple[bool, int]:
        outputs.send(Outbox(str), _alerts(20), "ETHUSDT/BTCUSDT")
        assert await outputs.room(limit=50, timeout_s=0.5)  # under the limit: no wait
        return await outputs.room(limit=10, timeout_s=1.0), outputs.producer.in_flight

    ok, left = asyncio.run(go())
    assert not ok and left == 20
