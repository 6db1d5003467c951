"""The Faust behaviours RT-QIS patches, checked on the real classes (no broker needed)."""

from __future__ import annotations

import asyncio

from mode.utils.queues import FlowControlEvent, FlowControlQueue

from rtqis.agents.app import _patch_flow_resume


def test_resume_while_flowing_keeps_queued_messages() -> None:
    """Faust resumes the flow once more when table recovery completes, while it is already flowing:
    the frames fetched meanwhile must stay queued for the agent (stock mode cleared them, and the
    worker skipped them: a count came back short after a restart)."""
    _patch_flow_resume()

    async def go() -> tuple[list[str], list[str], bool]:
        flow = FlowControlEvent()  # starts suspended, as Faust's
        q: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        q.put_nowait("before any resume")
        flow.resume()  # resume after a suspension: what was queued before it is stale
        after_first = list(q._queue)  # type: ignore[attr-defined]
        q.put_nowait("frame at offset 143")
        flow.resume()  # the resume at the end of recovery: already flowing
        kept = list(q._queue)  # type: ignore[attr-defined]
        flow.suspend()  # a rebalance
        flow.resume()
        return after_first, kept, q.empty() and flow.is_active()

    after_first, kept, cleared_after_suspension = asyncio.run(go())
    assert after_first == []
    assert kept == ["frame at offset 143"]
    assert cleared_after_suspension
