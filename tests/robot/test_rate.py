"""The fixed-rate loop keeps absolute deadlines; statistics are computed correctly."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mpo_ros.robot.rate import FixedRateLoop, LoopStats


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


class FakeTime:
    """A clock that moves only when the loop sleeps (plus a wake-up delay) or a step works."""

    def __init__(self, wake_delay_ns: int) -> None:
        self.now = 1_000_000_000
        self.wake_delay_ns = wake_delay_ns

    def clock_ns(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += round(seconds * 1e9) + self.wake_delay_ns

    def work(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)


def test_absolute_deadlines_do_not_drift_with_step_or_wakeup_time() -> None:
    """Steps taking 60 % of the period and 50 us late wake-ups must not lengthen the period."""
    fake = FakeTime(wake_delay_ns=50_000)
    ticks: list[int] = []

    def step() -> None:
        ticks.append(fake.now)
        fake.work(0.003)

    loop = FixedRateLoop(200.0, step, wait="sleep", clock_ns=fake.clock_ns, sleep=fake.sleep)
    loop.run_for(1.0)
    assert len(ticks) == 200
    start = ticks[0] - 50_000 - 5_000_000  # first deadline is one period after the start
    expected = start + 5_000_000 * np.arange(1, 201) + 50_000
    np.testing.assert_array_equal(ticks, expected)
    summary = loop.stats.summary()
    assert summary.rate_hz == pytest.approx(200.0)
    assert summary.lateness_p50 == pytest.approx(50e-6)
    assert summary.overruns == 0


def test_sleep_spin_starts_ticks_on_the_deadline() -> None:
    fake = FakeTime(wake_delay_ns=30_000)
    ticks: list[int] = []

    def clock_ns() -> int:
        fake.now += 1_000  # each clock read while spinning costs 1 us
        return fake.now

    loop = FixedRateLoop(
        100.0,
        lambda: ticks.append(fake.now),
        wait="sleep_spin",
        spin_margin=100e-6,
        clock_ns=clock_ns,
        sleep=fake.sleep,
    )
    loop.run_for(0.2)
    lateness = np.array([loop.stats.summary().lateness_p50, loop.stats.summary().lateness_p99])
    assert (lateness <= 2e-6).all(), "spinning out the last 100 us hides the 30 us wake-up delay"


def test_overrun_skips_missed_deadlines_instead_of_bursting() -> None:
    fake = FakeTime(wake_delay_ns=0)
    ticks: list[int] = []

    def step() -> None:
        ticks.append(fake.now)
        if len(ticks) == 3:
            fake.work(0.035)  # ends 5 ms after the third deadline after it

    loop = FixedRateLoop(100.0, step, wait="sleep", clock_ns=fake.clock_ns, sleep=fake.sleep)
    loop.run_for(0.1)
    gaps = np.diff(ticks) / 1e6
    # Two deadlines are skipped, the third runs 5 ms late, then the grid resumes: no burst.
    assert loop.stats.overruns == 2
    np.testing.assert_allclose(gaps, [10.0, 10.0, 35.0, 5.0, 10.0, 10.0, 10.0, 10.0, 10.0])


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


def test_idle_work_fills_the_wait_but_stops_before_the_deadline() -> None:
    """`idle` gets the time up to idle_margin before each deadline, never past it."""
    fake = FakeTime(wake_delay_ns=0)
    slices: list[tuple[int, float]] = []
    ticks: list[int] = []

    def idle(budget: float) -> None:
        slices.append((fake.now, budget))
        fake.work(min(budget, 0.004))  # e.g. spin_once handling callbacks for up to 4 ms

    loop = FixedRateLoop(
        100.0,
        lambda: ticks.append(fake.now),
        wait="sleep",
        idle=idle,
        idle_margin=0.0003,
        clock_ns=fake.clock_ns,
        sleep=fake.sleep,
    )
    loop.run_for(0.05)
    assert len(ticks) == 5 and slices
    deadlines = np.array(ticks)
    np.testing.assert_array_equal(np.diff(deadlines), 10_000_000)
    for start, budget in slices:
        next_deadline = deadlines[deadlines > start].min()
        assert start + budget * 1e9 <= next_deadline - 300_000 + 1


def test_warmup_runs_once_before_every_step() -> None:
    events: list[str] = []
    loop = FixedRateLoop(
        200.0,
        lambda: events.append("step"),
        warmup=lambda: events.append("warm"),
        warmup_lead=0.001,
    )
    loop.run_for(0.1)
    assert events[:2] == ["warm", "step"]
    assert events == ["warm", "step"] * (len(events) // 2)
    assert len(events) == 2 * 20


def test_warmup_lead_must_fit_in_the_period() -> None:
    with pytest.raises(ValueError, match="warmup_lead"):
        FixedRateLoop(1000.0, lambda: None, warmup=lambda: None, warmup_lead=0.002)
