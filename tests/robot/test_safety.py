"""SafetyFilter and policy_step: limits, delta limits, NaN handling, and agreement with simulation."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from policy_files import export_tiny

from mpo_ros.contract.observation import (
    action_to_command,
    command_to_action,
    default_command,
    executed_action,
    policy_command,
)
from mpo_ros.contract.policy_file import MissingContractError
from mpo_ros.contract.spec import load_spec
from mpo_ros.errors import ContractError
from mpo_ros.robot.onnx_policy import OnnxPolicy
from mpo_ros.robot.safety import (
    FAULT_BAD_INPUT,
    FAULT_NONFINITE_ACTION,
    FAULT_NONFINITE_OBSERVATION,
    FAULT_NOT_ENABLED,
    FAULT_STOPPED,
    SafetyFilter,
    policy_step,
)

torch.set_num_threads(1)

SPEC = load_spec("arm2")
LOWER = np.array([j.lower for j in SPEC.joints])
UPPER = np.array([j.upper for j in SPEC.joints])
MAX_DELTA = np.array([j.max_delta for j in SPEC.joints])
OBS = np.zeros(8, np.float32)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> OnnxPolicy:
    path = tmp_path_factory.mktemp("policies") / "arm2.onnx"
    export_tiny(path, SPEC)
    return OnnxPolicy(path, require_contract=True)


def _enabled(on_fault: str = "hold", hold: np.ndarray | None = None) -> SafetyFilter:
    safety = SafetyFilter(SPEC, on_fault=on_fault)
    safety.reset(np.array([0.3, -0.2]) if hold is None else hold)
    return safety


def test_nothing_is_published_before_enable_or_after_disable() -> None:
    safety = SafetyFilter(SPEC)
    decision = safety.step(OBS, np.zeros(2))
    assert not decision.publish and decision.fault == FAULT_NOT_ENABLED
    safety.reset(np.zeros(2))
    assert safety.step(OBS, np.zeros(2)).publish
    safety.disable()
    assert safety.step(OBS, np.zeros(2)).fault == FAULT_NOT_ENABLED
    assert safety.fault_counts == {FAULT_NOT_ENABLED: 2}


def test_reset_holds_the_measured_pose_like_the_simulator_starts() -> None:
    hold = np.array([0.5, 9.0])  # elbow reading beyond its limit: hold at the limit, not beyond
    safety = _enabled(hold=hold)
    np.testing.assert_array_equal(safety.last_command, [0.5, UPPER[1]])
    expected_action = np.clip(command_to_action(SPEC, safety.last_command), -1, 1)
    np.testing.assert_array_equal(safety.last_action, expected_action)
    for bad in (np.array([np.nan, 0.0]), np.zeros(3)):
        with pytest.raises(ContractError, match="cannot enable"):
            safety.reset(bad)


def test_commands_respect_joint_and_delta_limits_for_any_action() -> None:
    rng = np.random.default_rng(0)
    safety = _enabled()
    previous = safety.last_command
    for _ in range(500):
        action = rng.normal(0.0, 3.0, 2)  # often far outside [-1, 1]
        decision = safety.step(OBS, action)
        assert decision.publish and decision.fault is None
        assert np.all(decision.command >= LOWER) and np.all(decision.command <= UPPER)
        assert np.all(np.abs(decision.command - previous) <= MAX_DELTA + 1e-12)
        previous = decision.command
    assert 0 < safety.limited_steps <= safety.steps == 500


def test_step_goes_through_the_contract_mapping() -> None:
    safety = _enabled(hold=default_command(SPEC))
    action = np.array([0.01, -0.02])  # small: no limit active
    decision = safety.step(OBS, action)
    # The contract's step: the target, arm2's low-pass from the held command, then the limits.
    hold = default_command(SPEC)
    alpha = SPEC.filter_alpha
    assert alpha < 1.0, "arm2 ships with a low-pass action filter"
    np.testing.assert_allclose(decision.command, hold + alpha * (action_to_command(SPEC, action) - hold))
    np.testing.assert_array_equal(decision.command, policy_command(SPEC, hold, action))
    assert safety.limited_steps == 0
    # The next observation's last action is the executed (filtered) command mapped back: alpha * action.
    np.testing.assert_allclose(safety.last_action, alpha * action, atol=1e-12)
    big = safety.step(OBS, np.array([1.0, 1.0]))  # delta-limited towards the target
    np.testing.assert_allclose(big.command, decision.command + MAX_DELTA)
    assert safety.limited_steps == 1
    # The last action is what the robot executed (the limited command), not the policy's raw output.
    np.testing.assert_allclose(safety.last_action, executed_action(SPEC, big.command))
    assert np.all(safety.last_action < 1.0)


@pytest.mark.parametrize("edge", ["lower", "upper"])
def test_commands_never_leave_the_joint_limits(edge: str) -> None:
    """Start at a limit and push outwards: the command stays inside and settles on the mapped target."""
    limit, push = (LOWER, -1.0) if edge == "lower" else (UPPER, 1.0)
    safety = _enabled(hold=limit.copy())
    for _ in range(200):
        decision = safety.step(OBS, np.full(2, push * 3.0))
        assert np.all(decision.command >= LOWER) and np.all(decision.command <= UPPER)
    np.testing.assert_allclose(decision.command, action_to_command(SPEC, np.full(2, push)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_hold_mode_holds_on_non_finite_data_and_resumes(bad: float) -> None:
    safety = _enabled()
    good = safety.step(OBS, np.array([0.2, 0.2])).command
    decision = safety.step(OBS, np.array([bad, 0.0]))
    assert decision.publish and decision.fault == FAULT_NONFINITE_ACTION
    np.testing.assert_array_equal(decision.command, good)
    observation = OBS.copy()
    observation[3] = bad
    decision = safety.step(observation, np.zeros(2))
    assert decision.publish and decision.fault == FAULT_NONFINITE_OBSERVATION
    np.testing.assert_array_equal(decision.command, good)
    resumed = safety.step(OBS, np.array([-1.0, -1.0]))
    assert resumed.fault is None and np.all(np.abs(resumed.command - good) <= MAX_DELTA + 1e-12)
    assert safety.fault_counts == {FAULT_NONFINITE_ACTION: 1, FAULT_NONFINITE_OBSERVATION: 1}


def test_stop_mode_stops_publishing_until_reset() -> None:
    safety = _enabled(on_fault="stop")
    safety.step(OBS, np.zeros(2))
    decision = safety.step(OBS, np.array([np.nan, 0.0]))
    assert not decision.publish and decision.fault == FAULT_NONFINITE_ACTION and safety.stopped
    later = safety.step(OBS, np.zeros(2))  # good data does not silently resume
    assert not later.publish and later.fault == FAULT_STOPPED
    safety.reset(np.zeros(2))
    assert safety.step(OBS, np.zeros(2)).publish and not safety.stopped


def test_wrong_sizes_are_faults_not_crashes() -> None:
    safety = _enabled()
    assert safety.step(OBS, np.zeros(3)).fault == FAULT_BAD_INPUT
    assert safety.step_command(OBS, np.zeros(5)).fault == FAULT_BAD_INPUT
    before = safety.last_command
    command = safety.step_command(OBS, np.array([10.0, -10.0]))
    assert command.fault is None
    np.testing.assert_allclose(command.command, before + np.array([1.0, -1.0]) * MAX_DELTA)


def test_for_policy_refuses_contract_less_policies(tmp_path: Path) -> None:
    export_tiny(tmp_path / "gym.onnx", None, obs_dim=5, act_dim=2)
    with pytest.raises(MissingContractError):
        SafetyFilter.for_policy(OnnxPolicy(tmp_path / "gym.onnx"))
    with pytest.raises(ValueError, match="on_fault"):
        SafetyFilter(SPEC, on_fault="ignore")


# --- policy_step ---------------------------------------------------------------------------------------


def test_policy_step_faults_without_running_the_policy(policy: OnnxPolicy) -> None:
    safety = SafetyFilter.for_policy(policy)
    policy.reset_latency_stats()
    assert policy_step(policy, safety, np.zeros(2), np.zeros(2), np.zeros(2)).fault == FAULT_NOT_ENABLED
    safety.reset(np.zeros(2))
    nan_state = policy_step(policy, safety, np.array([0.0, np.nan]), np.zeros(2), np.array([0.3, 0.0]))
    assert nan_state.fault == FAULT_NONFINITE_OBSERVATION and nan_state.publish
    bad_goal = policy_step(policy, safety, np.zeros(2), np.zeros(2), np.zeros(3))
    assert bad_goal.fault == FAULT_BAD_INPUT and bad_goal.publish
    assert policy.latency_stats().count == 0  # the policy never ran on bad data
    ok = policy_step(policy, safety, np.zeros(2), np.zeros(2), np.array([0.3, 0.0]))
    assert ok.fault is None and policy.latency_stats().count == 1


def test_policy_step_reproduces_the_simulated_control_loop(policy: OnnxPolicy) -> None:
    """Same observation (incl. the last action fed back) and same command as the MuJoCo env, step by step."""
    env = gym.make("mpo_ros_sim:Arm2Reach-v0")
    try:
        obs, info = env.reset(seed=3, options={"joint_positions": [0.4, -0.7]})
        sim = env.unwrapped.sim
        safety = SafetyFilter.for_policy(policy)
        positions, velocities = sim.measure()
        safety.reset(positions)
        goal = env.unwrapped.goal
        for _ in range(30):
            np.testing.assert_allclose(obs[4:6], safety.last_action, atol=1e-6)
            decision = policy_step(policy, safety, positions, velocities, goal)
            obs, _, _, _, info = env.step(policy.act(obs))
            assert decision.fault is None
            np.testing.assert_allclose(decision.command, info["command"], atol=1e-6)
            positions, velocities = obs[:2] + default_command(SPEC), obs[2:4]
    finally:
        env.close()


def _states(rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Joint states inside and beyond the limits, fast and slow, and goals across the task's range."""
    span = UPPER - LOWER
    return [
        (
            rng.uniform(LOWER - 0.3 * span, UPPER + 0.3 * span),
            rng.normal(0.0, 2.0, 2),
            rng.uniform(SPEC.task.goal_low, SPEC.task.goal_high),
        )
        for _ in range(count)
    ]


def test_policy_step_fast_path_equals_the_general_path(policy: OnnxPolicy) -> None:
    """float ndarrays take the StepMapper path, lists the vectorised one: identical decisions and state."""
    fast, general = _enabled(), _enabled()
    policy.reset_latency_stats()
    states = _states(np.random.default_rng(5), 600)
    for i, (positions, velocities, goal) in enumerate(states):
        if i % 3 == 0:  # float32 inputs (e.g. a view of a float32 message array) also take the fast path
            positions, velocities = positions.astype(np.float32), velocities.astype(np.float32)
        a = policy_step(policy, fast, positions, velocities, goal)
        b = policy_step(policy, general, positions.tolist(), velocities.tolist(), goal.tolist())
        assert a.publish == b.publish and a.fault == b.fault is None
        assert a.command.dtype == b.command.dtype == np.float64
        assert a.command.tobytes() == b.command.tobytes()
        assert fast.last_action.tobytes() == general.last_action.tobytes()
    assert fast.limited_steps == general.limited_steps > 0 and fast.steps == general.steps == 600
    assert policy.latency_stats().count == 1200  # both paths count their inference


def test_policy_step_fast_path_faults_like_the_general_path(policy: OnnxPolicy) -> None:
    good = (np.array([0.1, -0.2]), np.zeros(2), np.array([0.3, 0.0]))
    cases = {
        "nan position": ((np.array([np.nan, 0.0]), *good[1:]), FAULT_NONFINITE_OBSERVATION),
        "inf velocity": ((good[0], np.array([0.0, np.inf]), good[2]), FAULT_NONFINITE_OBSERVATION),
        "nan goal": ((*good[:2], np.array([np.nan, 0.0])), FAULT_NONFINITE_OBSERVATION),
        # finite in float64, inf once rounded to the policy's float32 input
        "float32 overflow": ((good[0], np.array([1e39, 0.0]), good[2]), FAULT_NONFINITE_OBSERVATION),
        "goal too long": ((*good[:2], np.zeros(3)), FAULT_BAD_INPUT),
        "2-D positions": ((good[0][None], *good[1:]), FAULT_BAD_INPUT),
        "int velocities": ((good[0], np.array([0, 1]), good[2]), None),
    }
    for name, (inputs, fault) in cases.items():
        safety = _enabled()
        before = safety.last_command
        with np.errstate(over="ignore"):
            decision = policy_step(policy, safety, *inputs)
        assert decision.fault == fault, name
        assert decision.publish
        if fault is not None:
            np.testing.assert_array_equal(decision.command, before)
            assert safety.fault_counts == {fault: 1}, name
        np.testing.assert_array_equal(safety.last_command, decision.command)


def test_policy_step_non_finite_action_holds(tmp_path: Path) -> None:
    """A graph that returns NaN for some observations: hold (fast and general path alike), then resume."""

    class SqrtPolicy(torch.nn.Module):
        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            return torch.sqrt(observations[:, :2]).clamp(-1.0, 1.0)  # NaN when a relative position < 0

    from mpo_ros.training.export import export_module

    rng = np.random.default_rng(0)
    parity = rng.uniform(0.0, 1.0, (1000, 8)).astype(np.float32)
    export_module(SqrtPolicy(), 8, 2, tmp_path / "sqrt.onnx", robot_spec=SPEC, parity_observations=parity)
    sqrt_policy = OnnxPolicy(tmp_path / "sqrt.onnx", require_contract=True)
    default = default_command(SPEC)
    for as_list in (False, True):
        safety = _enabled(hold=default.copy())
        below = default - 0.1
        inputs = (below, np.zeros(2), np.array([0.3, 0.0]))
        if as_list:
            inputs = tuple(x.tolist() for x in inputs)
        decision = policy_step(sqrt_policy, safety, *inputs)
        assert decision.fault == FAULT_NONFINITE_ACTION and decision.publish
        np.testing.assert_array_equal(decision.command, default)
        resumed = policy_step(sqrt_policy, safety, default + 0.1, np.zeros(2), np.array([0.3, 0.0]))
        assert resumed.fault is None and np.all(resumed.command > default)
