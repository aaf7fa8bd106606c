"""Excitation signals: bounded, faded in and out, one joint at a time when asked, plans that return home."""

from __future__ import annotations

import numpy as np
import pytest

from mpo_ros.calibration.signals import SIGNALS, ExcitationConfig, ExcitationPlan, excitation_offsets
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ConfigError


@pytest.mark.parametrize("signal", SIGNALS)
def test_offsets_stay_within_the_amplitude_and_fade_to_zero(nominal_spec: RobotSpec, signal: str) -> None:
    config = ExcitationConfig(signal=signal, amplitude=0.2, duration=10.0)
    times = np.arange(0.0, 10.0, 0.02)
    offsets = excitation_offsets(nominal_spec, config, times)
    assert np.max(np.abs(offsets)) <= 0.2 + 1e-12
    assert np.max(np.abs(offsets)) > 0.1  # and it really excites
    np.testing.assert_allclose(offsets[0], 0.0, atol=1e-12)
    assert np.max(np.abs(offsets[-1])) < 0.01


def test_chirp_sweeps_from_f_min_to_f_max(nominal_spec: RobotSpec) -> None:
    config = ExcitationConfig(signal="chirp", f_min=0.5, f_max=4.0, duration=20.0, ramp_seconds=0.1)
    times = np.arange(0.0, 20.0, 0.001)
    wave = excitation_offsets(nominal_spec, config, times)[:, 0]
    crossings = times[1:][np.diff(np.sign(wave)) != 0]
    early = 1.0 / (2 * np.mean(np.diff(crossings[(crossings > 0.5) & (crossings < 3.0)])))
    late = 1.0 / (2 * np.mean(np.diff(crossings[crossings > 19.0])))
    assert early == pytest.approx(0.55, rel=0.15)  # log sweep: ~0.55 Hz around t = 1.5 s
    assert late == pytest.approx(4.0, rel=0.1)


def test_per_joint_excites_one_joint_at_a_time(nominal_spec: RobotSpec) -> None:
    config = ExcitationConfig(duration=10.0, per_joint=True)
    times = np.arange(0.0, 10.0, 0.02)
    offsets = excitation_offsets(nominal_spec, config, times)
    first, second = times < 5.0, times >= 5.0
    assert np.all(offsets[second, 0] == 0) and np.all(offsets[first, 1] == 0)
    assert np.std(offsets[first, 0]) > 0.02 and np.std(offsets[second, 1]) > 0.02


def test_only_the_chosen_joints_move(nominal_spec: RobotSpec) -> None:
    offsets = excitation_offsets(
        nominal_spec, ExcitationConfig(joints=("elbow",)), np.arange(0.0, 30.0, 0.02)
    )
    assert np.all(offsets[:, 0] == 0) and np.std(offsets[:, 1]) > 0.02


def test_plan_ramps_from_the_start_pose_and_back(nominal_spec: RobotSpec) -> None:
    start = np.array([0.3, 0.4])
    plan = ExcitationPlan(nominal_spec, ExcitationConfig(duration=4.0, ramp_seconds=1.0), start)
    np.testing.assert_allclose(plan.target(0.0), start)
    np.testing.assert_allclose(plan.target(1.0), nominal_spec.joint_arrays.default, atol=1e-12)
    np.testing.assert_allclose(plan.target(plan.total_seconds), start)
    times = np.arange(0.0, plan.total_seconds, 0.02)
    np.testing.assert_allclose(plan.targets(times), np.array([plan.target(t) for t in times]), atol=1e-12)


def test_bad_configurations_say_what_is_wrong(nominal_spec: RobotSpec) -> None:
    with pytest.raises(ConfigError, match="half the control rate"):
        ExcitationConfig(f_max=30.0).check(nominal_spec)
    with pytest.raises(ConfigError, match=r"joint\(s\) \['wrist'\]"):
        ExcitationConfig(joints=("wrist",)).check(nominal_spec)
    with pytest.raises(ConfigError, match="signal 'sine' unknown"):
        ExcitationConfig(signal="sine").check(nominal_spec)
