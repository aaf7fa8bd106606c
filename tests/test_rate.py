"""The fixed-rate loop keeps absolute deadlines; statistics are computed correctly."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mpo_ros.rate import FixedRateLoop, LoopStats


def test_stats_from_known_ticks() -> None:
    stats = LoopStats(period_s=0.01, window=8)
    ticks = [0, 10, 20, 31, 40, 50]  # ms; one period 1 ms long, the next 1 ms short
    for t in ticks:
        stats.record(t * 1_000_000, deadline_ns=t * 1_000_000)
    summary = stats.summary()
    assert summary.samples == 5
    assert summary.rate_hz == pytest.approx(100.0)
    assert summary.jitter_max == pytest.approx(0.001)
    assert summary.jitter_p50 == pytest.approx(0.0)


def test_stats_ring_buffer_keeps_the_newest_window() -> None:
    stats = LoopStats(period_s=0.001, window=4)
    for k in range(10):
        stats.record(k * 2_000_000)  # 2 ms periods, then the window holds ticks 6..9
    assert stats.summary().samples == 3
    np.testing.assert_allclose(stats.periods(), [0.002] * 3)


def test_absolute_deadlines_do_not_drift_with_step_time() -> None:
    """A step that takes 60 % of the period must not lengthen the period (sleep-after-work would)."""

    def busy() -> None:
        end = time.monotonic() + 0.003
        while time.monotonic() < end:
            pass

    loop = FixedRateLoop(200.0, busy, wait="sleep")
    start = time.monotonic()
    summary = loop.run_for(0.5)
    elapsed = time.monotonic() - start
    assert summary.samples == 99
    # 100 ticks of 5 ms: sleep-after-work would take ~0.8 s.
    assert elapsed == pytest.approx(0.5, abs=0.08)
    assert summary.rate_hz == pytest.approx(200.0, rel=0.05)


def test_overrun_skips_missed_deadlines_instead_of_bursting() -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(time.monotonic_ns())
        if len(calls) == 3:
            time.sleep(0.035)  # misses three 10 ms deadlines

    loop = FixedRateLoop(100.0, step, wait="sleep")
    loop.run_for(0.1)
    assert loop.stats.overruns >= 2
    gaps = np.diff(calls) / 1e6
    assert gaps.min() > 1.0, "a missed deadline must not be followed by back-to-back steps"


def test_thread_start_stop_and_error_is_kept() -> None:
    ticked = threading.Event()

    def step() -> None:
        ticked.set()
        raise RuntimeError("boom")

    loop = FixedRateLoop(500.0, step, wait="sleep_spin", spin_margin=50e-6)
    loop.start()
    assert ticked.wait(1.0)
    loop.stop()
    assert not loop.running
    assert isinstance(loop.error, RuntimeError)


def test_stop_interrupts_a_slow_loop_at_once() -> None:
    loop = FixedRateLoop(0.5, lambda: None, wait="sleep")
    loop.start()
    start = time.monotonic()
    loop.stop()
    assert time.monotonic() - start < 0.5 and not loop.running


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(rate_hz=0.0),
        dict(rate_hz=float("nan")),
        dict(rate_hz=100.0, wait="poll"),
        dict(rate_hz=1000.0, spin_margin=0.002),
    ],
)
def test_rejects_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        FixedRateLoop(step=lambda: None, **kwargs)
