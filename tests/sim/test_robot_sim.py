"""RobotSim: the physics layer the env and the ROS sim node share (latency, jitter, safety)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from mpo_ros_sim.randomization import RandomizationProfile, Range
from mpo_ros_sim.robot_sim import RobotSim

from mpo_ros.contract.spec import RobotSpec, load_spec
from mpo_ros.errors import ContractError, SpecError


@pytest.fixture(scope="module")
def arm2() -> RobotSpec:
    return load_spec("arm2")


def _latency_sim(spec: RobotSpec, steps: int, fraction: float) -> RobotSim:
    profile = RandomizationProfile(
        latency_steps=Range(steps, steps), latency_fraction=Range(fraction, fraction)
    )
    sim = RobotSim(spec, profile, seed=0)
    sim.randomize(np.random.default_rng(0))
    sim.reset(np.zeros(spec.num_joints))
    return sim


@pytest.mark.parametrize("latency_steps", [0, 1, 3])
def test_latency_delays_the_command_by_whole_control_steps(arm2: RobotSpec, latency_steps: int) -> None:
    sim = _latency_sim(arm2, latency_steps, 0.0)
    target = np.array([0.5, -0.4])
    sim.apply_command(target)
    for _ in range(latency_steps):
        sim.step()
        np.testing.assert_array_equal(sim.actuator_targets, [0.0, 0.0])
        assert np.allclose(sim.joint_positions, 0.0, atol=1e-9)
    sim.step()
    np.testing.assert_array_equal(sim.actuator_targets, target)
    assert np.all(np.abs(sim.joint_positions) > 1e-4)


def test_fractional_latency_releases_mid_period(arm2: RobotSpec) -> None:
    sim = _latency_sim(arm2, 1, 0.5)
    assert sim.latency_substeps == 15
    sim.apply_command(np.array([0.5, -0.4]))
    sim.step(14)
    np.testing.assert_array_equal(sim.actuator_targets, [0.0, 0.0])
    sim.step(1)
    np.testing.assert_array_equal(sim.actuator_targets, [0.0, 0.0])
    sim.step(1)  # released at the start of substep 15
    np.testing.assert_array_equal(sim.actuator_targets, [0.5, -0.4])


def test_commands_are_released_in_order(arm2: RobotSpec) -> None:
    sim = _latency_sim(arm2, 2, 0.0)
    sim.apply_command(np.array([0.1, 0.1]))
    sim.step()
    sim.apply_command(np.array([0.2, 0.2]))
    sim.step()
    sim.step()
    np.testing.assert_allclose(sim.actuator_targets, [0.1, 0.1])
    sim.step()
    np.testing.assert_allclose(sim.actuator_targets, [0.2, 0.2])


def test_servo_reaches_a_held_target(arm2: RobotSpec) -> None:
    sim = RobotSim(arm2, seed=0)
    target = np.array([1.0, -1.2])
    sim.apply_command(target)
    for _ in range(arm2.episode_steps):
        sim.step()
    np.testing.assert_allclose(sim.joint_positions, target, atol=2e-3)
    assert np.abs(sim.joint_velocities).max() < 0.05
    assert sim.time == pytest.approx(arm2.task.episode_seconds)


def test_bad_commands_keep_the_previous_targets(arm2: RobotSpec) -> None:
    sim = RobotSim(arm2, seed=0)
    sim.apply_command(np.array([0.3, 0.3]))
    sim.step()
    with pytest.raises(ContractError, match="NaN or inf"):
        sim.apply_command(np.array([np.nan, 0.0]))
    with pytest.raises(ContractError, match=r"2 entries in the order \['shoulder', 'elbow'\]"):
        sim.apply_command(np.zeros(3))
    sim.step()
    np.testing.assert_allclose(sim.actuator_targets, [0.3, 0.3])
    sim.apply_command(np.array([10.0, -10.0]))  # beyond the limits: clipped to them
    sim.step()
    np.testing.assert_allclose(sim.actuator_targets, [arm2.joints[0].upper, arm2.joints[1].lower])


def test_control_jitter_varies_the_period_within_bounds(arm2: RobotSpec) -> None:
    profile = RandomizationProfile(control_jitter=Range(0.2, 0.2))
    sim = RobotSim(arm2, profile, seed=0)
    sim.randomize(np.random.default_rng(0))
    substeps = [sim.step() for _ in range(200)]
    assert min(substeps) >= 8 and max(substeps) <= 12
    assert len(set(substeps)) > 1
    assert RobotSim(arm2, seed=0).step() == arm2.physics_substeps


def test_measurement_noise_is_seeded(arm2: RobotSpec) -> None:
    profile = RandomizationProfile(observation_noise_position=Range(0.01, 0.01))
    readings = []
    for _ in range(2):
        sim = RobotSim(arm2, profile, seed=5)
        sim.randomize(np.random.default_rng(0))
        sim.reset()
        readings.append(sim.measure()[0])
    np.testing.assert_array_equal(readings[0], readings[1])
    default = np.array([j.default for j in arm2.joints])
    assert 0 < np.abs(readings[0] - default).max() < 0.1
    np.testing.assert_array_equal(sim.joint_positions, default)


def test_spec_and_mjcf_must_agree_and_every_problem_is_listed(arm2: RobotSpec) -> None:
    import dataclasses

    renamed = dataclasses.replace(
        arm2, joints=(dataclasses.replace(arm2.joints[0], name="hip"), arm2.joints[1])
    )
    with pytest.raises(SpecError, match=r"joint 'hip' is not in the MJCF \(it has \['shoulder', 'elbow'\]\)"):
        RobotSim(renamed)
    with pytest.raises(SpecError, match="end_effector site 'gripper'"):
        RobotSim(dataclasses.replace(arm2, end_effector="gripper"))
    with pytest.raises(SpecError, match=r"control_rate_hz 100.0 is not what .*; set physics_substeps: 5"):
        RobotSim(dataclasses.replace(arm2, control_rate_hz=100.0))
    wide = dataclasses.replace(arm2.joints[0], lower=-3.0)
    with pytest.raises(SpecError, match="exceed the MJCF range"):
        RobotSim(dataclasses.replace(arm2, joints=(wide, arm2.joints[1])))
    with pytest.raises(SpecError, match="not found"):
        RobotSim(dataclasses.replace(arm2, mjcf="missing.xml"))
    # All at once, each with its fix (a user should not iterate problem by problem).
    everything = dataclasses.replace(
        arm2, joints=(dataclasses.replace(wide, name="hip"), arm2.joints[1]), end_effector="gripper",
        control_rate_hz=100.0,
    )  # fmt: skip
    with pytest.raises(SpecError, match=r"\(3 problem\(s\)\)") as info:
        RobotSim(everything)
    assert str(info.value).count("\n  - ") == 3


def test_a_velocity_actuator_under_a_position_contract_is_refused(arm2: RobotSpec, tmp_path) -> None:
    """MuJoCo compiles <velocity> like <position> (fixed gain, affine bias); the randomiser used to write
    biasprm[1] = -kp into it at every reset, silently turning a velocity servo into a position servo."""
    import dataclasses

    from mpo_ros.contract.spec import models_dir

    xml = (models_dir() / "arm2.xml").read_text()
    xml = re.sub(r'<position ([^>]*?)kp="[^"]*" ', r"<velocity \1", xml, count=1)
    assert "<velocity" in xml
    (tmp_path / "arm2_velocity.xml").write_text(xml)
    spec = dataclasses.replace(arm2, mjcf="arm2_velocity.xml", source_dir=str(tmp_path))
    with pytest.raises(
        SpecError, match=r"driven by a velocity actuator, but the contract.s command_interface is .position."
    ):
        RobotSim(spec)
