"""Observation layout and action/command mapping of the robot contract (mpo_ros/observation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mpo_ros import observation
from mpo_ros.errors import ContractError
from mpo_ros.spec import load_spec


@pytest.fixture(scope="module", params=["arm2", "arm6"])
def spec(request):
    return load_spec(request.param)


def test_action_command_round_trip_inside_the_limits(spec) -> None:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(500, spec.action_dim))
    commands = observation.action_to_command(spec, actions)
    lower = np.array([j.lower for j in spec.joints])
    upper = np.array([j.upper for j in spec.joints])
    inside = np.all((commands > lower) & (commands < upper), axis=-1)
    assert inside.any()
    np.testing.assert_allclose(
        observation.command_to_action(spec, commands[inside]), actions[inside], atol=1e-12
    )
    # Zero action is the default pose; commands never leave the joint limits.
    np.testing.assert_allclose(
        observation.action_to_command(spec, np.zeros(spec.action_dim)), observation.default_command(spec)
    )
    extreme = observation.action_to_command(spec, 5.0 * np.sign(actions))
    assert np.all(extreme >= lower) and np.all(extreme <= upper)


def test_out_of_range_actions_are_clipped_and_logged_commands_are_not(spec) -> None:
    big = np.full(spec.action_dim, 3.0)
    np.testing.assert_allclose(
        observation.action_to_command(spec, big),
        observation.action_to_command(spec, np.ones(spec.action_dim)),
    )
    default = observation.default_command(spec)
    scale = np.array([j.action_scale for j in spec.joints])
    # A logged command beyond the action range shows up as |action| > 1 instead of being hidden.
    assert np.all(observation.command_to_action(spec, default + 1.5 * scale) == pytest.approx(1.5))


def test_limit_command_bounds_the_step_and_the_limits(spec) -> None:
    max_delta = np.array([j.max_delta for j in spec.joints])
    previous = observation.default_command(spec)
    far = previous + 10.0
    limited = observation.limit_command(spec, previous, far)
    np.testing.assert_allclose(limited, np.minimum(previous + max_delta, [j.upper for j in spec.joints]))
    near = previous + 0.5 * max_delta
    np.testing.assert_allclose(observation.limit_command(spec, previous, near), near)
    at_upper = np.array([j.upper for j in spec.joints])
    assert np.all(observation.limit_command(spec, at_upper, at_upper + 1.0) <= at_upper)


def test_observation_layout_matches_names_and_is_relative_to_default(spec) -> None:
    n, g = spec.num_joints, spec.task.goal_dim
    default = observation.default_command(spec)
    obs = observation.build_observation(
        spec, default + 0.1, np.full(n, 2.0), np.full(n, -0.5), np.arange(g) + 1.0
    )
    names = observation.observation_names(spec)
    assert obs.dtype == np.float32
    assert obs.shape == (observation.observation_size(spec),) == (len(names),)
    by_name = dict(zip(names, obs, strict=True))
    assert by_name[f"joint_positions/{spec.joint_names[0]}"] == pytest.approx(0.1)
    assert by_name[f"joint_velocities/{spec.joint_names[-1]}"] == pytest.approx(2.0)
    assert by_name[f"last_action/{spec.joint_names[0]}"] == pytest.approx(-0.5)
    assert by_name[f"goal/{g - 1}"] == pytest.approx(float(g))


def test_observation_is_vectorised_and_broadcasts_the_goal(spec) -> None:
    rng = np.random.default_rng(1)
    n, g = spec.num_joints, spec.task.goal_dim
    positions, velocities, actions = rng.normal(size=(3, 7, n))
    goal = rng.normal(size=g)
    batch = observation.build_observation(spec, positions, velocities, actions, goal)
    assert batch.shape == (7, observation.observation_size(spec))
    single = observation.build_observation(spec, positions[3], velocities[3], actions[3], goal)
    np.testing.assert_array_equal(batch[3], single)


def test_wrong_sizes_raise_contract_errors(spec) -> None:
    n = spec.num_joints
    with pytest.raises(ContractError, match="joint_positions must have last dimension"):
        observation.build_observation(
            spec, np.zeros(n + 1), np.zeros(n), np.zeros(n), np.zeros(spec.task.goal_dim)
        )
    with pytest.raises(ContractError, match="action must have last dimension"):
        observation.action_to_command(spec, np.zeros(n + 2))


def test_joint_array_reorders_by_name_and_ignores_extras(spec) -> None:
    names = [*spec.joint_names[::-1], "gripper_finger"]
    values = np.arange(len(names), dtype=float)
    ordered = observation.joint_array(spec, names, values)
    for i, joint in enumerate(spec.joint_names):
        assert ordered[i] == values[names.index(joint)]


def test_joint_array_names_a_missing_joint(spec) -> None:
    names = list(spec.joint_names[1:])
    with pytest.raises(ContractError, match=rf"\['{spec.joint_names[0]}'\] missing from the message"):
        observation.joint_array(spec, names, np.zeros(len(names)))
    with pytest.raises(ContractError, match="names but"):
        observation.joint_array(spec, list(spec.joint_names), np.zeros(spec.num_joints + 1))
