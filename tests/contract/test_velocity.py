"""The velocity command interface of the contract: mapping, braking bound, slew, filter, executed action."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from mpo_ros.contract import observation
from mpo_ros.contract.spec import JointSpec, RobotSpec, TaskSpec, contract_differences
from mpo_ros.errors import ContractError, SpecError

RATE = 50.0


def _spec(**changes) -> RobotSpec:
    joints = (
        JointSpec("a", -1.0, 1.0, velocity_limit=2.0, default=0.0, action_scale=1.5, max_delta=0.2),
        JointSpec("b", 0.0, 2.0, velocity_limit=3.0, default=1.0, action_scale=3.0, max_delta=0.5),
    )
    task = TaskSpec("reach", (0.0, 0.0), (0.1, 0.1), 0.03, 1.0)
    fields = dict(
        name="v2",
        joints=joints,
        control_rate_hz=RATE,
        physics_substeps=10,
        observation=("joint_positions", "joint_velocities", "last_action", "goal"),
        task=task,
        command_interface="velocity",
    )
    return RobotSpec(**{**fields, **changes})


SPEC = _spec()
MIDDLE = np.array([0.0, 1.0])  # far from every limit: the braking bound is above velocity_limit


def _brake(delta: float, distance: float) -> float:
    """The closed form: move one period at b, then brake at a = delta * rate, stop at the limit."""
    return math.sqrt(delta**2 + 2.0 * delta * RATE * max(distance, 0.0)) - delta


def test_actions_map_to_velocities_and_back() -> None:
    actions = np.array([[0.5, -0.25], [2.0, -3.0], [-1.0, 1.0]])
    np.testing.assert_array_equal(
        observation.action_to_command(SPEC, actions), [[0.75, -0.75], [1.5, -3.0], [-1.5, 3.0]]
    )
    commands = np.array([[0.75, -0.75], [3.0, -6.0]])
    np.testing.assert_allclose(observation.command_to_action(SPEC, commands), [[0.5, -0.25], [2.0, -2.0]])
    np.testing.assert_allclose(observation.executed_action(SPEC, commands), [[0.5, -0.25], [1.0, -1.0]])
    np.testing.assert_array_equal(observation.default_command(SPEC), [0.0, 0.0])
    np.testing.assert_array_equal(observation.start_command(SPEC, np.array([0.3, 1.9])), [0.0, 0.0])


def test_the_braking_bound_is_the_closed_form_and_zero_beyond_a_limit() -> None:
    positions = np.array([[0.9, 0.2], [1.0, 0.0], [1.3, -0.5], [-1.0, 2.5], [0.0, 1.0]])
    low, high = observation.braking_bounds(SPEC, positions)
    for (qa, qb), lo, hi in zip(positions, low, high, strict=True):
        assert hi[0] == pytest.approx(min(_brake(0.2, 1.0 - qa), 2.0), abs=1e-12)
        assert lo[0] == pytest.approx(-min(_brake(0.2, qa + 1.0), 2.0), abs=1e-12)
        assert hi[1] == pytest.approx(min(_brake(0.5, 2.0 - qb), 3.0), abs=1e-12)
        assert lo[1] == pytest.approx(-min(_brake(0.5, qb - 0.0), 3.0), abs=1e-12)
    # At and beyond a limit no velocity toward it is allowed, away from it is.
    assert high[1, 0] == 0.0 and high[2, 0] == 0.0 and low[2, 0] < 0
    assert low[1, 1] == 0.0 and low[2, 1] == 0.0 and high[2, 1] > 0
    # One period at the bound, then braking at a = max_delta * rate, ends exactly at the limit.
    bound, distance, accel = high[0, 0], 1.0 - 0.9, 0.2 * RATE
    assert bound / RATE + bound**2 / (2 * accel) == pytest.approx(distance, rel=1e-12)
    # Tighter than the continuous-time sqrt(2 a s) the issue names, never looser.
    assert bound < math.sqrt(2 * accel * distance)


def test_slew_limits_the_change_and_the_velocity_limit_caps_it() -> None:
    command = np.zeros(2)
    steps = []
    for _ in range(12):
        command = observation.policy_command(SPEC, command, np.array([1.0, -1.0]), MIDDLE)
        steps.append(command)
    steps = np.array(steps)
    np.testing.assert_allclose(steps[:3, 0], [0.2, 0.4, 0.6])
    np.testing.assert_allclose(steps[:3, 1], [-0.5, -1.0, -1.5])
    assert steps[-1, 0] == 1.5 and steps[-1, 1] == -3.0  # action_scale and velocity_limit
    assert np.all(np.abs(np.diff(steps, axis=0)) <= np.array([0.2, 0.5]) + 1e-12)


def test_the_braking_bound_wins_over_the_slew_limit() -> None:
    """Running at 1.5 rad/s 0.02 rad before the upper limit: the bound is far below previous - max_delta."""
    previous = np.array([1.5, 0.0])
    positions = np.array([0.98, 1.0])
    command = observation.policy_command(SPEC, previous, np.array([1.0, 0.0]), positions)
    expected = _brake(0.2, 0.02)
    assert command[0] == pytest.approx(expected) and command[0] < previous[0] - 0.2
    # The same from below the lower limit side, and a joint beyond its limit is stopped from outward motion.
    command = observation.limit_command(
        SPEC, np.array([-1.5, -2.0]), np.array([-1.5, -2.0]), np.array([-0.98, 0.1])
    )
    assert command[0] == pytest.approx(-expected)
    assert command[1] == pytest.approx(-_brake(0.5, 0.1))
    beyond = observation.limit_command(SPEC, np.array([0.1, 0.0]), np.array([1.0, 0.0]), np.array([1.2, 1.0]))
    assert beyond[0] == 0.0


def test_the_lowpass_filter_acts_on_the_velocity_target() -> None:
    spec = dataclasses.replace(SPEC, action_filter="lowpass", action_filter_cutoff_hz=5.0)
    alpha = 1.0 - math.exp(-2.0 * math.pi * 5.0 / RATE)
    previous = np.array([0.1, -0.1])
    command = observation.policy_command(spec, previous, np.array([0.2, 0.1]), MIDDLE)
    np.testing.assert_allclose(command, previous + alpha * (np.array([0.3, 0.3]) - previous))
    recovered = observation.command_to_action(spec, observation.unfilter_commands(spec, previous, command))
    np.testing.assert_allclose(recovered, [0.2, 0.1])


def test_a_velocity_contract_needs_the_measured_positions() -> None:
    with pytest.raises(ContractError, match="pass joint_positions"):
        observation.policy_command(SPEC, np.zeros(2), np.zeros(2))
    with pytest.raises(ContractError, match="joint_positions"):
        observation.braking_bounds(SPEC, np.zeros(3))


def test_ramp_to_rest_never_jumps_and_brakes_harder_near_a_limit() -> None:
    command, seen = np.array([1.1, -1.2]), []
    while np.any(command != 0.0):
        command = observation.ramp_to_rest(SPEC, command)
        seen.append(command)
    np.testing.assert_allclose(np.array(seen)[:, 0], [0.9, 0.7, 0.5, 0.3, 0.1, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.array(seen)[:3, 1], [-0.7, -0.2, 0.0], atol=1e-12)
    near = observation.ramp_to_rest(SPEC, np.array([1.5, 0.0]), np.array([0.98, 1.0]))
    assert near[0] == pytest.approx(_brake(0.2, 0.02))


def test_following_the_commands_never_passes_a_limit() -> None:
    """A joint that does what it is told (q += v / rate) stays inside its limits under any actions."""
    rng = np.random.default_rng(0)
    positions, command = MIDDLE.copy(), np.zeros(2)
    lowest, highest = positions.copy(), positions.copy()
    for step in range(3000):
        action = (
            np.sign(np.sin(step / 40.0 + np.array([0.0, 1.0]))) if step % 500 < 250 else rng.uniform(-1, 1, 2)
        )
        command = observation.policy_command(SPEC, command, action, positions)
        positions = positions + command / RATE
        lowest, highest = np.minimum(lowest, positions), np.maximum(highest, positions)
    arrays = SPEC.joint_arrays
    assert np.all(lowest >= arrays.lower - 1e-9) and np.all(highest <= arrays.upper + 1e-9)
    assert np.all(lowest < arrays.lower + 0.05) and np.all(highest > arrays.upper - 0.05), (
        "limits were reached"
    )


def test_velocity_contract_validation_lists_every_problem() -> None:
    fast = (
        dataclasses.replace(SPEC.joints[0], action_scale=2.5),
        dataclasses.replace(SPEC.joints[1], action_scale=4.0),
    )
    with pytest.raises(SpecError) as info:
        _spec(joints=fast)
    text = str(info.value)
    assert "2 problems" in text
    assert "joint 'a': action_scale 2.5 rad/s exceeds velocity_limit 2.0" in text
    assert "joint 'b': action_scale 4.0 rad/s exceeds velocity_limit 3.0" in text
    # The same numbers are fine under a position contract (action_scale is rad there).
    assert _spec(joints=fast, command_interface="position").command_interface == "position"
    with pytest.raises(SpecError, match="command_interface 'effort' is not supported"):
        _spec(command_interface="effort")


def test_the_interface_rides_in_the_json_and_is_a_contract_difference() -> None:
    assert RobotSpec.from_json(SPEC.to_json()) == SPEC
    position = _spec(command_interface="position")
    assert contract_differences(SPEC, position, ("velocity", "position")) == [
        "command_interface: velocity 'velocity', position 'position'"
    ]
