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
    # Alternating +-0.1 around zero (25 Hz, Nyquist) moves 0.2 rad, the slew limit, at every step. An odd
    # length starts and ends on +0.1, so the end-point line is flat and all the energy is the chatter's.
    square = np.where(np.arange(101) % 2 == 0, 0.1, -0.1)[:, None]
    chatter = command_smoothness(square, np.array([0.2]), rate)
    assert chatter["command_rate"] == pytest.approx(0.2) and chatter["slew_limited_fraction"] == 1.0
    assert chatter["high_frequency_share"] == pytest.approx(1.0, abs=0.005)


def test_the_high_frequency_share_splits_a_sum_of_sines_by_their_energy() -> None:
    rate, n = 100.0, 1000
    t = np.arange(n) / rate
    slow, fast = 1.0 * np.sin(2 * np.pi * 1.0 * t), 0.5 * np.sin(2 * np.pi * 10.0 * t)
    figures = command_smoothness((slow + fast)[:, None], np.array([1.0]), rate, cutoff_hz=5.0)
    # Energy ratio of the sines: amplitude squared, 0.25 / (1 + 0.25) (to the small end-point line the
    # window's last sample leaves: both sines end 1/100 s short of a whole period).
    assert figures["high_frequency_share"] == pytest.approx(0.25 / 1.25, rel=2e-3)


def test_a_smooth_reach_that_ends_elsewhere_has_no_high_frequency_energy() -> None:
    """Regression: the spectrum of the mean-removed command saw the jump from the last value back to the
    first (the DFT's periodic extension) and put 60-80 % of a smooth reach's energy above 5 Hz."""
    rate = 50.0
    s = np.clip(np.arange(75) / rate / 0.5, 0.0, 1.0)
    reach = 0.5 * (10 * s**3 - 15 * s**4 + 6 * s**5)  # minimum-jerk 0 -> 0.5 rad in 0.5 s, then hold
    assert command_smoothness(reach[:, None], np.array([0.2]), rate)["high_frequency_share"] < 1e-3
    # A first-order low-pass step response at 3 Hz: |H|^2 / f^2 puts a few per cent above 5 Hz.
    lowpass = 0.3 * (1.0 - np.exp(-2 * np.pi * 3.0 * np.arange(75) / rate))
    share = command_smoothness(lowpass[:, None], np.array([0.2]), rate)["high_frequency_share"]
    assert 0.01 < share < 0.1
    # A step is not smooth: its 1/f^2 energy spectrum leaves ~8 % above 5 Hz over 1.5 s at 50 Hz.
    step = np.where(np.arange(75) > 0, 0.3, 0.0)
    share = command_smoothness(step[:, None], np.array([0.4]), rate)["high_frequency_share"]
    assert 0.05 < share < 0.12


def test_short_or_badly_shaped_commands_are_refused() -> None:
    with pytest.raises(ValueError, match="T >= 2"):
        command_smoothness(np.zeros((1, 2)), np.ones(2), 50.0)
