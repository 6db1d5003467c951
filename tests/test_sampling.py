"""Event-time sampling of pair legs and their alignment: exact, order-independent, redelivery-proof."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rtqis.analytics.alerts import ENTER_LONG, ENTER_SHORT, EXIT, ZAlert
from rtqis.analytics.sampling import LegSampler, PairAligner


def _reference(times: np.ndarray, prices: np.ndarray, step: int) -> list[tuple[int, float, int]]:
    """Brute force: every sample time from the first boundary after the first tick to the last tick."""
    out = []
    b = (int(times[0]) // step + 1) * step
    while b <= times[-1]:
        before = np.flatnonzero(times < b)[-1]
        out.append((b, float(prices[before]), int(times[before])))
        b += step
    return out


def _run(sampler: LegSampler, times: np.ndarray, prices: np.ndarray, cuts: list[int]) -> list[tuple[int, float, int]]:
    out: list[tuple[int, float, int]] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(times)], strict=True):
        t, p, lt = sampler.update(times[lo:hi], prices[lo:hi], np.arange(lo, hi))
        out += list(zip(t.tolist(), p.tolist(), lt.tolist(), strict=True))
    return out


def test_sampler_worked_example() -> None:
    s = LegSampler(step_ms=1000)
    t, p, lt = s.update(np.array([100, 900, 1500, 2100]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert t.tolist() == [1000, 2000] and p.tolist() == [2.0, 3.0] and lt.tolist() == [900, 1500]
    assert s.update(np.array([2500]), np.array([5.0]))[0].tolist() == []  # 3000 not complete yet
    t, p, lt = s.update(np.array([5200]), np.array([6.0]))
    assert t.tolist() == [3000, 4000, 5000] and p.tolist() == [5.0] * 3 and lt.tolist() == [2500] * 3


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 2500), min_size=2, max_size=80),
    cut_seed=st.integers(0, 2**32 - 1),
)
def test_sampler_equals_brute_force_whatever_the_framing(gaps: list[int], cut_seed: int) -> None:
    times = 10_000 + np.cumsum(gaps).astype(np.int64)
    prices = 100.0 + np.arange(len(times), dtype=np.float64)
    rng = np.random.default_rng(cut_seed)
    cuts = sorted(set(rng.integers(1, len(times), size=rng.integers(0, 6)).tolist()))
    got = _run(LegSampler(step_ms=1000, max_fill=10_000), times, prices, cuts)
    assert got == _reference(times, prices, 1000)


def test_sampler_skips_redelivered_ticks_and_bad_prices() -> None:
    times = np.array([100, 900, 1500, 2100, 3300], dtype=np.int64)
    prices = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    s = LegSampler()
    first = s.update(times[:4], prices[:4], np.arange(4))
    again = s.update(times[:4], prices[:4], np.arange(4))  # the same frame redelivered
    assert len(again[0]) == 0 and s.price == 4.0
    bad = s.update(np.array([3000, 3100]), np.array([np.nan, -1.0]), np.array([10, 11]))
    assert len(bad[0]) == 0 and s.price == 4.0
    t, p, _ = s.update(times[4:], prices[4:], np.array([4]))
    assert first[0].tolist() == [1000, 2000] and t.tolist() == [3000] and p.tolist() == [4.0]


def test_sampler_bounds_a_long_silence_and_round_trips_its_state() -> None:
    s = LegSampler(step_ms=1000, max_fill=5)
    s.update(np.array([500]), np.array([10.0]))
    restored = LegSampler.from_state(json.loads(json.dumps(s.state())))
    t, p, lt = restored.update(np.array([3_600_500]), np.array([11.0]))
    assert t.tolist() == [1000, 2000, 3000, 4000, 5000, 3_600_000]
    assert p.tolist() == [10.0] * 6 and lt.tolist() == [500] * 6  # old: flagged stale downstream


def _legs(n: int, offset: float) -> tuple[list[int], list[float], list[int]]:
    t = [1000 * (i + 1) for i in range(n)]
    return t, [offset + i for i in range(n)], [x - 10 for x in t]


@settings(max_examples=60, deadline=None)
@given(
    order=st.lists(st.sampled_from(["x", "y", "drain", "restore"]), min_size=0, max_size=40), seed=st.integers(0, 99)
)
def test_aligner_rows_do_not_depend_on_arrival_order(order: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    legs = {"x": _legs(30, 100.0), "y": _legs(25, 200.0)}
    legs["y"] = tuple([v for i, v in enumerate(col) if i % 7 != 3] for col in legs["y"])  # y misses some seconds
    sent = {"x": 0, "y": 0}
    a = PairAligner()
    rows: list[tuple[int, float, float]] = []

    def drain() -> None:
        r = a.drain()
        rows.extend(zip(r.time.tolist(), r.x.tolist(), r.y.tolist(), strict=True))

    for step in [*order, "x", "y", "x", "y", "drain"]:
        if step in ("x", "y"):
            t, p, lt = legs[step]
            k = len(t) if step == order[-1:] else int(rng.integers(sent[step], len(t) + 1))
            lo = max(0, sent[step] - 2)  # overlap: redelivered samples are skipped
            a.push(step, t[lo:k], p[lo:k], lt[lo:k])
            sent[step] = max(sent[step], k)
        elif step == "restore":
            a = PairAligner.from_state(json.loads(json.dumps(a.state())))
        else:
            drain()
    for leg in ("x", "y"):
        t, p, lt = legs[leg]
        a.push(leg, t, p, lt)
    drain()
    # reference: every time of either leg up to the slower leg's last, each leg carried forward
    tx, px, _ = legs["x"]
    ty, py, _ = legs["y"]
    expect = []
    for t in sorted(set(tx) | set(ty)):
        if t > min(tx[-1], ty[-1]):
            break
        xv = [p for tt, p in zip(tx, px, strict=True) if tt <= t]
        yv = [p for tt, p in zip(ty, py, strict=True) if tt <= t]
        if xv and yv:
            expect.append((t, xv[-1], yv[-1]))
    assert rows == expect


def test_aligner_releases_rows_when_one_leg_stays_silent() -> None:
    a = PairAligner(max_pending=10)
    a.push("y", [1000], [50.0], [900])
    t, p, lt = _legs(25, 100.0)
    a.push("x", t, p, lt)
    r = a.drain()
    assert len(r) == 15 and r.y.tolist() == [50.0] * 15 and r.y_time.tolist() == [900] * 15
    assert len(a.pending["x"]) == 10


def test_alert_hysteresis_and_cooldown() -> None:
    al = ZAlert(enter=2.0, exit=0.5, cooldown_ms=10_000)
    path = [(0, 0.0), (1, 2.1), (2, 2.5), (3, 1.0), (4, 2.2), (5, 0.6), (6, 0.4), (8, -2.2), (20, -2.5),
            (21, -1.0), (40, 3.0), (41, 0.3), (42, 2.5), (43, float("nan"))]  # fmt: skip
    got = [(t, [k for k, _ in f]) for t, z in path if (f := al.update(t * 1000, z))]
    assert got == [
        (1, [ENTER_SHORT]),  # 2.5, 1.0, 2.2, 0.6 stay inside the band: nothing
        (6, [EXIT]),
        (20, [ENTER_LONG]),  # -2.2 at 8 s came within the 10 s cooldown of the exit
        (40, [EXIT, ENTER_SHORT]),  # straight through to the other side
        (41, [EXIT]),  # exits ignore the cooldown; the entry at 42 s does not
    ]
    assert al.position == 0
    assert ZAlert.from_state(json.loads(json.dumps(al.state()))) == al
