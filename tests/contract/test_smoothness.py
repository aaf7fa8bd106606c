"""Command smoothness figures against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from mpo_ros.contract.smoothness import command_smoothness


def test_a_ramp_is_smooth_and_a_square_wave_at_the_slew_limit_is_not() -> None:
    rate = 50.0
    t = np.arange(100)
    ramp = np.stack([0.01 * t, -0.02 * t], axis=1)
    figures = command_smoothness(ramp, np.array([0.2, 0.2]), rate)
    assert figures["command_rate"] == pytest.approx(0.015)  # mean of 0.01 and 0.02 per step
    assert figures["slew_limited_fraction"] == 0.0
    # Alternating +-0.1 around zero (25 Hz, Nyquist) moves 0.2 rad, the slew limit, at every step.
    square = np.where(t % 2 == 0, 0.1, -0.1)[:, None]
    chatter = command_smoothness(square, np.array([0.2]), rate)
    assert chatter["command_rate"] == pytest.approx(0.2) and chatter["slew_limited_fraction"] == 1.0
    assert chatter["high_frequency_share"] == pytest.approx(1.0)


def test_the_high_frequency_share_splits_a_sum_of_sines_by_their_energy() -> None:
    rate, n = 100.0, 1000
    t = np.arange(n) / rate
    slow, fast = 1.0 * np.sin(2 * np.pi * 1.0 * t), 0.5 * np.sin(2 * np.pi * 10.0 * t)
    figures = command_smoothness((slow + fast)[:, None], np.array([1.0]), rate, cutoff_hz=5.0)
    # Energy ratio of the sines: amplitude squared, 0.25 / (1 + 0.25).
    assert figures["high_frequency_share"] == pytest.approx(0.25 / 1.25, rel=1e-6)


def test_short_or_badly_shaped_commands_are_refused() -> None:
    with pytest.raises(ValueError, match="T >= 2"):
        command_smoothness(np.zeros((1, 2)), np.ones(2), 50.0)
