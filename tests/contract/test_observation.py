"""Observation layout and action/command mapping of the robot contract (mpo_ros/contract/observation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mpo_ros.contract import observation
from mpo_ros.contract.spec import JointSpec, RobotSpec, TaskSpec, load_spec
from mpo_ros.errors import ContractError, SpecError


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


# --- StepMapper: the single-step form must equal the vectorised functions bit for bit ------------------


def _awkward_spec() -> RobotSpec:
    """Another layout order, no last_action block, floats that do not round nicely, a limit at 0.0."""
    third = 1.0 / 3.0
    joints = (
        # Default -0.0 at a lower limit of +0.0: numpy and StepMapper must agree even on signed zeros.
        JointSpec("j0", 0.0, 1.0 + third, 2.0, -0.0, 0.7 + third, 0.05 + 1e-9),
        JointSpec("j1", -2.1 - third, 0.4, 3.3, -0.3, 1.9, 0.2 + third),  # scale reaches past both limits
        JointSpec("j2", -0.5, 0.5, 1.0, 0.1, 1e-3, 1e-4),
    )
    task = TaskSpec("reach", (0.1, -0.2, 0.0), (0.3, 0.2 + third, 0.1), 0.025, 1.5)
    return RobotSpec("awkward3", joints, 123.456789, 7, ("goal", "joint_velocities", "joint_positions"), task)


def _as_velocity(spec: RobotSpec) -> RobotSpec:
    """The same robot under a velocity contract: action_scale at most velocity_limit, max_delta in rad/s."""
    import dataclasses

    joints = tuple(
        dataclasses.replace(
            j, action_scale=min(j.action_scale, j.velocity_limit), max_delta=3.0 * j.max_delta
        )
        for j in spec.joints
    )
    return dataclasses.replace(spec, joints=joints, command_interface="velocity")


@pytest.fixture(
    scope="module",
    params=["arm2", "arm6", "awkward3", "arm2_lowpass", "arm2v", "arm6v", "awkward3v", "arm2v_lowpass"],
)
def any_spec(request) -> RobotSpec:
    """Position and velocity contracts: StepMapper must equal the vectorised functions under both."""
    import dataclasses

    name = request.param.removesuffix("_lowpass")
    velocity = name.endswith("v")
    name = name.removesuffix("v") if velocity else name
    spec = _awkward_spec() if name == "awkward3" else load_spec(name)
    if request.param.endswith("_lowpass"):  # the contract's action filter in the fused path too
        spec = dataclasses.replace(spec, action_filter="lowpass", action_filter_cutoff_hz=4.0)
    return _as_velocity(spec) if velocity else spec


def _bits(values) -> np.ndarray:
    """Integer view of float64/float32 values: equal bits, signed zeros included."""
    array = np.ascontiguousarray(values)
    return array.view(np.int64 if array.dtype == np.float64 else np.int32)


def _random_actions(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """Policy-like float32 actions, far out-of-range values, and the exact edges -1, 0, -0.0, 1."""
    actions = rng.normal(0.0, 1.5, (count, size))
    edges = rng.choice(np.array([-1.0, 1.0, 0.0, -0.0, 5.0, -5.0]), (count, size))
    use_edge = rng.random((count, size)) < 0.15
    actions = np.where(use_edge, edges, actions)
    as_float32 = rng.random(count) < 0.5  # what OnnxPolicy returns
    actions[as_float32] = actions[as_float32].astype(np.float32)
    return actions


def _random_positions(rng: np.random.Generator, spec: RobotSpec, count: int) -> np.ndarray:
    """Joint positions inside, on and beyond the joint limits (a measured hold pose can be past a limit)."""
    arrays = spec.joint_arrays
    span = arrays.upper - arrays.lower
    positions = rng.uniform(arrays.lower - 0.5 * span, arrays.upper + 0.5 * span, (count, spec.num_joints))
    on_limit = rng.choice(np.stack([arrays.lower, arrays.upper]), count)  # rows of lower or upper
    pick = rng.random((count, spec.num_joints)) < 0.1
    # Close to a limit, where a velocity contract's braking bound is active.
    near = on_limit + rng.normal(0.0, 0.05, on_limit.shape) * span
    pick_near = rng.random((count, spec.num_joints)) < 0.3
    mixed = np.where(pick, on_limit, np.where(pick_near, near, positions))
    # Whole rows well inside the limits, so that with 6 joints some steps have no joint near a limit.
    central = rng.uniform(arrays.lower + 0.3 * span, arrays.upper - 0.3 * span, mixed.shape)
    return np.where(rng.random((count, 1)) < 0.4, central, mixed)


def _random_commands(rng: np.random.Generator, spec: RobotSpec, count: int) -> np.ndarray:
    """Commands inside, on and beyond the contract's static bounds (joint limits, or +-velocity_limit)."""
    if not spec.velocity_commands:
        return _random_positions(rng, spec, count)
    limit = spec.joint_arrays.velocity_limit
    commands = rng.uniform(-1.5 * limit, 1.5 * limit, (count, spec.num_joints))
    on_limit = rng.choice(np.stack([-limit, limit, 0.0 * limit]), count)
    return np.where(rng.random((count, spec.num_joints)) < 0.1, on_limit, commands)


def test_step_mapper_command_equals_the_vectorised_mappings(any_spec: RobotSpec) -> None:
    spec, rng = any_spec, np.random.default_rng(7)
    mapper = observation.StepMapper(spec)
    count = 4000
    actions = _random_actions(rng, count, spec.action_dim)
    previous = _random_commands(rng, spec, count)
    wanted = observation.action_to_command(spec, actions)
    # About half the steps start within about one max_delta of the mapped target, where the per-step
    # limit is often inactive, so both outcomes of `limited` are exercised.
    near = rng.random(count) < 0.5
    offsets = rng.uniform(-1.2, 1.2, (count, spec.num_joints)) * spec.joint_arrays.max_delta
    previous[near] = (wanted + offsets)[near]
    positions = _random_positions(rng, spec, count)
    expected = observation.policy_command(spec, previous, actions, positions)
    expected_executed = observation.executed_action(spec, expected)
    expected_limited = np.any(expected != observation.filter_command(spec, previous, wanted), axis=-1)
    results = [
        mapper.command(p.tolist(), a.tolist(), q.tolist())
        for p, a, q in zip(previous, actions, positions, strict=True)
    ]
    commands = np.array([r[0] for r in results])
    executed = np.array([r[1] for r in results])
    limited = np.array([r[2] for r in results])
    assert 0.05 < limited.mean() < 0.95, "both limited and unlimited steps are covered"
    np.testing.assert_array_equal(_bits(commands), _bits(expected))
    np.testing.assert_array_equal(_bits(executed), _bits(expected_executed))
    np.testing.assert_array_equal(limited, expected_limited)


def test_step_mapper_command_equals_the_vectorised_mappings_along_a_trajectory(any_spec: RobotSpec) -> None:
    """Fed back on itself like the control loop, so limits are hit from the states the loop produces."""
    spec, rng = any_spec, np.random.default_rng(11)
    mapper = observation.StepMapper(spec)
    fast = vectorised = _random_commands(rng, spec, 1)[0]
    fast = fast.tolist()
    # A velocity contract's positions follow the commands (integrated), so the braking bound meets them.
    positions = _random_positions(rng, spec, 1)[0]
    for action in _random_actions(rng, 2000, spec.action_dim):
        fast, executed, limited = mapper.command(fast, action.tolist(), positions.tolist())
        wanted = observation.filter_command(spec, vectorised, observation.action_to_command(spec, action))
        vectorised = observation.limit_command(spec, vectorised, wanted, positions)
        if spec.velocity_commands:
            positions = positions + vectorised / spec.control_rate_hz
        assert _bits(np.array(fast)).tolist() == _bits(vectorised).tolist()
        assert (
            _bits(np.array(executed)).tolist()
            == _bits(observation.executed_action(spec, vectorised)).tolist()
        )
        assert limited == (not np.array_equal(vectorised, wanted))


def test_step_mapper_observation_equals_build_observation(any_spec: RobotSpec) -> None:
    spec, rng = any_spec, np.random.default_rng(3)
    mapper = observation.StepMapper(spec)
    n, count = spec.num_joints, 4000
    assert mapper.observation_size == observation.observation_size(spec)
    positions = _random_commands(rng, spec, count)
    velocities = rng.normal(0.0, 3.0, (count, n)) * rng.choice([1e-6, 1.0, 1e3], (count, 1))
    last_actions = observation.executed_action(spec, _random_commands(rng, spec, count))
    goals = rng.uniform(-2.0, 2.0, (count, spec.task.goal_dim))
    positions[:5] = positions[:5].astype(np.float32)  # float32 inputs (a JointState view) convert exactly
    expected = observation.build_observation(spec, positions, velocities, last_actions, goals)
    out = np.empty((count, mapper.observation_size), np.float32)
    for i in range(count):
        mapper.write_observation(
            out[i], positions[i].tolist(), velocities[i].tolist(), last_actions[i].tolist(), goals[i].tolist()
        )
    np.testing.assert_array_equal(_bits(out), _bits(expected))


def test_step_mapper_rejects_wrong_sizes(any_spec: RobotSpec) -> None:
    spec = any_spec
    mapper = observation.StepMapper(spec)
    n, out = spec.num_joints, np.empty(observation.observation_size(spec), np.float32)
    goal = [0.0] * spec.task.goal_dim
    with pytest.raises(ContractError, match="joint_positions"):
        mapper.write_observation(out, [0.0] * (n + 1), [0.0] * n, [0.0] * n, goal)
    with pytest.raises(ContractError, match="goal"):
        mapper.write_observation(out, [0.0] * n, [0.0] * n, [0.0] * n, [*goal, 0.0])
    with pytest.raises(ContractError, match="action"):
        mapper.command([0.0] * n, [0.0] * (n - 1), [0.0] * n)
    if spec.velocity_commands:
        with pytest.raises(ContractError, match="joint_positions"):
            mapper.command([0.0] * n, [0.0] * n, [0.0] * (n + 1))
        with pytest.raises(ContractError, match="pass joint_positions"):
            mapper.command([0.0] * n, [0.0] * n)


def test_the_lowpass_filter_is_a_first_order_lag_and_conversion_inverts_it() -> None:
    import dataclasses
    import math

    spec = dataclasses.replace(load_spec("arm2"), action_filter="lowpass", action_filter_cutoff_hz=5.0)
    alpha = 1.0 - math.exp(-2.0 * math.pi * 5.0 / 50.0)
    assert spec.filter_alpha == pytest.approx(alpha)
    previous = observation.default_command(spec)
    target = observation.action_to_command(spec, np.array([0.05, -0.05]))  # small: no slew limit
    command = observation.policy_command(spec, previous, np.array([0.05, -0.05]))
    np.testing.assert_allclose(command, previous + alpha * (target - previous))
    # A step input decays as (1 - alpha)^k: the -3 dB point of a first-order lag at the cutoff.
    commands, c = [], previous
    for _ in range(40):
        c = observation.policy_command(spec, c, np.array([0.1, 0.1]))
        commands.append(c)
    final = observation.action_to_command(spec, np.array([0.1, 0.1]))
    gap = np.abs(final - np.array(commands))[:, 0]
    np.testing.assert_allclose(gap[1:15] / gap[:14], 1.0 - alpha, rtol=1e-6)
    before = np.vstack([previous, np.array(commands[:-1])])
    recovered = observation.command_to_action(
        spec, observation.unfilter_commands(spec, before, np.array(commands))
    )
    np.testing.assert_allclose(recovered, 0.1, atol=1e-12)
    with pytest.raises(SpecError, match=r"action_filter_cutoff_hz 30.0 must lie in \(0, 25\) Hz"):
        dataclasses.replace(spec, action_filter_cutoff_hz=30.0)
