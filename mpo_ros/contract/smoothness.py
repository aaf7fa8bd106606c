"""How smooth a command stream is, in the units hardware cares about (pure numpy).

One implementation for every place that judges motion: `mpo-ros eval` (simulated episodes), the demo and
the benchmarks (commands a policy node published over ROS 2). Figures, for commands c_t [T, n] at the
contract's rate:

- ``command_rate``: mean |c_t - c_{t-1}| over steps and joints (rad per step);
- ``slew_limited_fraction``: the share of (step, joint) changes at the contract's ``max_delta`` (a command
  pinned at its slew limit is a bang-bang signal);
- ``high_frequency_share``: the share of the command's energy above ``cutoff_hz`` (5 Hz by default: arm
  reaches live well below it, chatter above it), from the spectrum of the command with the straight line
  from its first to its last value removed.

Why the line: a discrete Fourier transform treats the episode as one period of a periodic signal. A reach
ends somewhere else than it started, so the periodic extension jumps from the last value back to the first,
and that artificial jump is a near-impulse whose flat spectrum puts ~80 % of the energy above 5 Hz at 50 Hz
for a perfectly smooth move (measured on the mean-removed command). Removing the end-point line makes the
extension continuous (the standard end-point-matching detrend), so what is left above the cutoff is the
command's own high-frequency content: a genuine step keeps its 1/f^2 spectrum, chatter its peak.
"""

from __future__ import annotations

import numpy as np

__all__ = ["command_smoothness"]


def command_smoothness(
    commands: np.ndarray, max_delta: np.ndarray, rate_hz: float, cutoff_hz: float = 5.0
) -> dict[str, float]:
    """Smoothness figures of one episode's commands [T, n] (see the module docstring)."""
    commands = np.asarray(commands, dtype=np.float64)
    if commands.ndim != 2 or len(commands) < 2:
        raise ValueError(f"commands must be [T >= 2, n], got shape {commands.shape}")
    steps = np.abs(np.diff(commands, axis=0))
    limit = np.asarray(max_delta, dtype=np.float64).reshape(1, -1)
    ramp = np.linspace(0.0, 1.0, len(commands)).reshape(-1, 1)
    detrended = commands - (commands[:1] + ramp * (commands[-1:] - commands[:1]))
    power = np.abs(np.fft.rfft(detrended, axis=0)) ** 2
    frequencies = np.fft.rfftfreq(len(commands), d=1.0 / rate_hz)
    total = float(power[1:].sum())
    high = float(power[frequencies > cutoff_hz].sum())
    return {
        "command_rate": float(steps.mean()),
        "slew_limited_fraction": float(np.mean(steps >= limit * (1.0 - 1e-6))),
        # A constant command has no spectrum; rounding noise (~1e-30) is not chatter.
        "high_frequency_share": high / total if total > 1e-18 * len(commands) else 0.0,
    }
