"""Fixed-rate loops that hold their period, and the statistics that show whether they did.

A control loop that sleeps a fixed period *after* its work drifts (the work time adds up), and one
woken by a relative timer inherits every wake-up delay into the next period. `FixedRateLoop` instead
keeps absolute deadlines ``t0 + k * period`` on the monotonic clock: a late tick does not shift the
ones after it, and a tick that overruns by whole periods skips the missed deadlines (counted) rather
than firing a burst of catch-up steps at a robot.

Waiting for a deadline uses one of two strategies (``wait``):

- ``"sleep"``: one ``time.sleep`` to the deadline. The kernel wakes the thread late by the timer
  slack (50 us by default on Linux, lowered to 1 ns here with ``prctl(PR_SET_TIMERSLACK)``) plus the
  scheduling latency, so most ticks land 40-90 us late and p99 period jitter is ~50 us on an idle
  2-core machine.
- ``"sleep_spin"`` (default): sleep until ``spin_margin`` before the deadline, then poll the clock.
  The tick then starts within a microsecond of its deadline whenever the thread was woken in time,
  at the cost of up to ``spin_margin`` of CPU per period (10 % of one core at 1 kHz with 100 us).

``warmup`` (with ``warmup_lead``) is called that long before each deadline, after which the loop
busy-waits to the deadline instead of sleeping or serving callbacks. Why: a step that runs after
the thread slept a whole period runs on cold caches. On this project's loaded 2-vCPU VM an ONNX
inference of the arm2 policy took ~235 us p50 after 20 ms asleep against ~7 us in a hot loop (a numpy
MLP of the same size: ~146 us vs 7 us, so it is the machine's caches, not onnxruntime's thread
pools or allocator: no session option changed it). Running the policy once just before the deadline
and not letting the thread sleep again brings the real step close to hot-loop speed
(benchmarks/inference_in_node.py); it costs ``warmup_lead`` of busy CPU per period.

ROS-free on purpose: the same loop drives the policy node, the simulated robot and the benchmarks,
and is unit-tested without ROS.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "WAIT_STRATEGIES",
    "FixedRateLoop",
    "LatencyWindow",
    "LoopStats",
    "RateSummary",
    "percentile_summary",
    "set_realtime_priority",
    "set_timer_slack",
]

WAIT_STRATEGIES = ("sleep", "sleep_spin")

_PR_SET_TIMERSLACK = 29


def set_timer_slack(slack_ns: int = 1) -> bool:
    """Lower the calling thread's timer slack so sleeps end closer to their deadline (Linux only).

    Returns False where the call is unavailable; the loop still works, its wake-ups are just later.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_TIMERSLACK, int(slack_ns), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def set_realtime_priority(priority: int) -> str:
    """Put the calling thread under SCHED_FIFO at `priority` (1..99); "" on success, else why not.

    On a loaded machine this is what keeps multi-millisecond preemptions by other processes out of
    the control period (needs root or CAP_SYS_NICE / an rtprio limit; the kernel's RT throttling
    still leaves 5 % to others). Failure is reported, never fatal: the loop runs at normal priority.
    """
    if not 1 <= priority <= 99:
        return f"priority must be in 1..99, got {priority}"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        return f"SCHED_FIFO {priority} refused ({exc}); running at normal priority"
    return ""


@dataclass(frozen=True)
class RateSummary:
    """What a loop achieved over a window. Times in seconds; jitter = |actual period - nominal|."""

    samples: int
    rate_hz: float
    nominal_rate_hz: float
    jitter_p50: float
    jitter_p99: float
    jitter_max: float
    lateness_p50: float
    lateness_p99: float
    overruns: int

    @property
    def rate_error(self) -> float:
        """Relative error of the achieved rate, e.g. 0.001 = 0.1 %."""
        if self.nominal_rate_hz <= 0 or not math.isfinite(self.rate_hz):
            return math.nan
        return self.rate_hz / self.nominal_rate_hz - 1.0

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = dict(self.__dict__)
        out["rate_error"] = self.rate_error
        return out


def percentile_summary(values_s: np.ndarray | list[float]) -> dict[str, float]:
    """p50/p99/max of a sample of durations (seconds); NaN when empty."""
    values = np.asarray(values_s, dtype=np.float64)
    if values.size == 0:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


class LoopStats:
    """Tick times of a periodic loop in a ring buffer; thread-safe summaries over the last window.

    Records start-of-tick times (monotonic ns) and each tick's lateness against its deadline. The
    buffer is preallocated so that recording never allocates inside the control loop.
    """

    def __init__(self, period_s: float, window: int = 4096) -> None:
        if not period_s > 0:
            raise ValueError(f"period must be > 0 s, got {period_s}")
        self.period_ns = round(period_s * 1e9)
        self._ticks = np.zeros(window, dtype=np.int64)
        self._lateness = np.zeros(window, dtype=np.int64)
        self._count = 0
        self.overruns = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    def record(self, tick_ns: int, deadline_ns: int | None = None) -> None:
        with self._lock:
            i = self._count % self._ticks.size
            self._ticks[i] = tick_ns
            self._lateness[i] = 0 if deadline_ns is None else tick_ns - deadline_ns
            self._count += 1

    def add_overruns(self, missed: int) -> None:
        with self._lock:
            self.overruns += missed

    def _window(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            n = min(self._count, self._ticks.size)
            start = self._count % self._ticks.size if self._count > self._ticks.size else 0
            order = (np.arange(n) + start) % self._ticks.size
            return self._ticks[order].copy(), self._lateness[order].copy()

    def periods(self) -> np.ndarray:
        """Consecutive tick-to-tick periods (s) in the current window."""
        ticks, _ = self._window()
        return np.diff(ticks) / 1e9

    def summary(self) -> RateSummary:
        ticks, lateness = self._window()
        nominal = 1e9 / self.period_ns
        if ticks.size < 2:
            nan = math.nan
            return RateSummary(int(ticks.size), nan, nominal, nan, nan, nan, nan, nan, self.overruns)
        periods = np.diff(ticks)
        jitter = np.abs(periods - self.period_ns) / 1e9
        span = (ticks[-1] - ticks[0]) / 1e9
        return RateSummary(
            samples=int(periods.size),
            rate_hz=periods.size / span if span > 0 else math.nan,
            nominal_rate_hz=nominal,
            jitter_p50=float(np.percentile(jitter, 50)),
            jitter_p99=float(np.percentile(jitter, 99)),
            jitter_max=float(jitter.max()),
            lateness_p50=float(np.percentile(lateness, 50)) / 1e9,
            lateness_p99=float(np.percentile(lateness, 99)) / 1e9,
            overruns=self.overruns,
        )


class LatencyWindow:
    """The last `window` durations (s) of something timed in a loop; preallocated, thread-safe."""

    def __init__(self, window: int = 4096) -> None:
        self._values = np.zeros(window, dtype=np.float64)
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    def record(self, seconds: float) -> None:
        with self._lock:
            self._values[self._count % self._values.size] = seconds
            self._count += 1

    def values(self) -> np.ndarray:
        with self._lock:
            return self._values[: min(self._count, self._values.size)].copy()

    def summary(self) -> dict[str, float]:
        return percentile_summary(self.values())


class FixedRateLoop:
    """Calls ``step()`` at ``rate_hz`` with absolute deadlines, on its own thread or the caller's.

    ``start()`` runs the loop on a dedicated thread; ``run()`` runs it on the calling thread until
    ``stop()``. With ``idle`` (e.g. ``lambda t: executor.spin_once(timeout_sec=t)``) the waiting time
    is handed to other work, which gets no new slice within ``idle_margin`` of a deadline: one thread
    then serves the ROS callbacks and the control step with no GIL hand-over between threads.
    ``step`` runs on the loop thread; an exception in it (or in ``idle``) stops the loop and is kept
    in ``error`` (the owner decides what a failed control step means; the loop never retries blindly).
    """

    def __init__(
        self,
        rate_hz: float,
        step: Callable[[], None],
        wait: str = "sleep_spin",
        spin_margin: float = 100e-6,
        name: str = "fixed_rate_loop",
        stats_window: int = 4096,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], object] | None = None,
        idle: Callable[[float], object] | None = None,
        idle_margin: float = 300e-6,
        priority: int = 0,
        warmup: Callable[[], object] | None = None,
        warmup_lead: float = 0.0,
    ) -> None:
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"rate_hz must be a positive number, got {rate_hz}")
        if wait not in WAIT_STRATEGIES:
            raise ValueError(f"wait must be one of {WAIT_STRATEGIES}, got {wait!r}")
        if not (0 <= spin_margin < 1.0 / rate_hz):
            raise ValueError(f"spin_margin must be in [0, period), got {spin_margin} s at {rate_hz} Hz")
        self.rate_hz = float(rate_hz)
        self.period_ns = round(1e9 / rate_hz)
        self.wait = wait
        self.spin_margin_ns = round(spin_margin * 1e9) if wait == "sleep_spin" else 0
        if not (0 <= idle_margin < 1.0 / rate_hz):
            raise ValueError(f"idle_margin must be in [0, period), got {idle_margin} s at {rate_hz} Hz")
        self._idle = idle
        if not (0 <= warmup_lead < 1.0 / rate_hz):
            raise ValueError(f"warmup_lead must be in [0, period), got {warmup_lead} s at {rate_hz} Hz")
        self._warmup = warmup if warmup_lead > 0 else None
        self.warmup_lead_ns = round(warmup_lead * 1e9) if self._warmup is not None else 0
        self.priority = int(priority)
        # Why the requested real-time priority could not be set ("" = set, or none requested).
        self.priority_error = ""
        self.idle_margin_ns = max(round(idle_margin * 1e9), self.spin_margin_ns)
        self.stats = LoopStats(1.0 / rate_hz, window=stats_window)
        self.error: BaseException | None = None
        self._step = step
        self._clock_ns = clock_ns
        self._stop = threading.Event()
        # Event.wait doubles as an interruptible sleep: stop() wakes the loop at once.
        self._sleep = self._stop.wait if sleep is None else sleep
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def set_idle(self, idle: Callable[[float], object] | None) -> None:
        """Hand the waiting time to `idle` (see the class docstring); call before `run()`."""
        self._idle = idle

    def run(self) -> None:
        """Run on the calling thread until `stop()` (or an error, kept in `error`)."""
        self._run()

    def run_for(self, seconds: float) -> RateSummary:
        """Run in the calling thread for `seconds` (benchmarks, tests); returns the summary."""
        ticks = max(1, round(seconds * self.rate_hz))
        self._run(max_ticks=ticks)
        return self.stats.summary()

    # --- the loop ------------------------------------------------------------------------------
    def _wait_until(self, deadline_ns: int) -> None:
        if self._warmup is not None:
            self._wait_plain(deadline_ns - self.warmup_lead_ns)
            if self._stop.is_set():
                return
            self._warmup()
            while self._clock_ns() < deadline_ns and not self._stop.is_set():
                pass
            return
        self._wait_plain(deadline_ns)

    def _wait_plain(self, deadline_ns: int) -> None:
        if self._idle is not None:
            while not self._stop.is_set():
                budget = deadline_ns - self.idle_margin_ns - self._clock_ns()
                if budget <= 0:
                    break
                self._idle(budget / 1e9)
        remaining = deadline_ns - self.spin_margin_ns - self._clock_ns()
        if remaining > 0:
            self._sleep(remaining / 1e9)
        if self.spin_margin_ns:
            while self._clock_ns() < deadline_ns and not self._stop.is_set():
                pass

    def _run(self, max_ticks: int | None = None) -> None:
        set_timer_slack(1)
        if self.priority > 0:
            self.priority_error = set_realtime_priority(self.priority)
        deadline = self._clock_ns() + self.period_ns
        done = 0
        try:
            while not self._stop.is_set():
                self._wait_until(deadline)
                if self._stop.is_set():
                    break
                now = self._clock_ns()
                self.stats.record(now, deadline)
                self._step()
                done += 1
                if max_ticks is not None and done >= max_ticks:
                    break
                deadline += self.period_ns
                behind = self._clock_ns() - deadline
                if behind >= self.period_ns:
                    # Overran whole periods: skip them instead of bursting to catch up.
                    missed = behind // self.period_ns
                    deadline += missed * self.period_ns
                    self.stats.add_overruns(int(missed))
        except BaseException as exc:  # kept for the owner; the loop must not die silently
            self.error = exc
