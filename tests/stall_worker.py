"""``rtqis worker`` with a fault injected, for tests/test_watchdog.py: once the worker is ready, every
``ticks.trade`` partition it was assigned is paused in Faust's consumer and never resumed by Faust, the
state a lost resume leaves behind. Only the worker's own stall watchdog can bring them back.

Run as ``python tests/stall_worker.py`` with the worker's environment; prints ``INJECTED`` when done.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rtqis.agents.app as app_module  # noqa: E402
from rtqis.cli import main  # noqa: E402

_create_app = app_module.create_app


def create_app(settings: Any, **kwargs: Any) -> Any:
    app = _create_app(settings, **kwargs)
    done: list[bool] = []

    @app.timer(0.5)
    async def inject() -> None:
        if done or app.rebalancing or getattr(app, "in_recovery", True) or not app.consumer.assignment():
            return
        done.append(True)
        await asyncio.sleep(1.0)
        tps = {tp for tp in app.consumer.assignment() if tp.topic.endswith("ticks.trade")}
        app.consumer.pause_partitions(tps)
        print(f"INJECTED: paused {sorted(tp.partition for tp in tps)}", flush=True)

    return app


app_module.create_app = create_app
sys.exit(main(["worker"]))
