"""Velocity contracts on the robot side: every fault path ramps the command to zero, never a jump.

A forward_velocity_controller keeps executing the last command it got, so for a velocity contract
"publish nothing" or "repeat the last command" would leave the arm moving. These tests drive the real
SafetyFilter, Supervisor and PolicyController with a real exported (constant) ONNX policy.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from velocity_robot import CONTRACT

from mpo_ros.contract.observation import observation_size
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.robot.controller import PolicyController
from mpo_ros.robot.onnx_policy import OnnxPolicy
from mpo_ros.robot.safety import (
    FAULT_BAD_INPUT,
    FAULT_NONFINITE_ACTION,
    FAULT_NONFINITE_OBSERVATION,
    SafetyFilter,
    policy_step,
)
from mpo_ros.robot.supervisor import SafetyState, Supervisor
from mpo_ros.training.export import export_module

torch.set_num_threads(1)

SPEC = RobotSpec.from_dict(CONTRACT)
MAX_DELTA = SPEC.joint_arrays.max_delta  # 0.4 rad/s per step for both joints
MIDDLE = np.array([-0.7, 1.5])  # the default pose, far from the limits
ACTION = (0.75, -0.5)  # -> 1.875 and -1.5 rad/s (exact in float32, the policy's output type)
MS = 1_000_000


class ConstantPolicy(torch.nn.Module):
    """Always the same action: the ramp's start velocity is known exactly."""

    def __init__(self, action: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("action", torch.tensor(action, dtype=torch.float32))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return observations[:, :1] * 0.0 + self.action.to(observations.dtype)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> OnnxPolicy:
    path = tmp_path_factory.mktemp("velocity") / "constant.onnx"
    obs_dim = observation_size(SPEC)
    parity = np.random.default_rng(0).normal(size=(1000, obs_dim))
    export_module(ConstantPolicy(ACTION), obs_dim, 2, path, robot_spec=SPEC, parity_observations=parity)
    return OnnxPolicy(path, require_contract=True)


class Clock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now


def _running(policy: OnnxPolicy, **settings) -> tuple[PolicyController, Supervisor, Clock]:
    """A controller whose policy has run long enough to command its full speed (1.875, -1.5 rad/s)."""
    clock = Clock()
    supervisor = Supervisor(SPEC, state_timeout=0.1, clock_ns=clock, **settings)
    controller = PolicyController(policy, supervisor)
    _feed(supervisor)
    supervisor.accept_goal([0.3, 0.0])
    assert supervisor.enable(True)[0]
    commands = [controller.tick()[0] for _ in range(8)]
    np.testing.assert_allclose(commands[0], [0.4, -0.4])  # enabled from rest: bumpless
    np.testing.assert_array_equal(commands[-1], [1.875, -1.5])
    return controller, supervisor, clock


def _feed(supervisor: Supervisor, positions=MIDDLE) -> bool:
    return supervisor.accept_joint_state(["shoulder", "elbow"], list(positions), [0.0, 0.0])


def _assert_ramp(commands: list[np.ndarray], start: np.ndarray) -> None:
    """Down to exactly zero, at max_delta per step, never faster, never away from zero."""
    values = np.array([start, *commands])
    steps = np.abs(np.diff(values, axis=0))
    assert (steps <= MAX_DELTA + 1e-9).all(), f"a jump: {values.tolist()}"
    assert (np.abs(values[1:]) <= np.abs(values[:-1]) + 1e-12).all()
    np.testing.assert_array_equal(values[-1], [0.0, 0.0])
    # At max_delta, not slower: the joint that starts fastest needs ceil(|v| / max_delta) steps.
    needed = max(math.ceil(abs(v) / d - 1e-9) for v, d in zip(start, MAX_DELTA, strict=True))
    assert len(commands) >= needed and np.any(values[needed] == 0.0) and np.all(values[needed] == 0.0)


def _ticks(
    controller: PolicyController, count: int, clock: Clock | None = None, feed: Supervisor | None = None
):
    out = []
    for _ in range(count):
        if clock is not None:
            clock.now += 20 * MS
        if feed is not None:
            _feed(feed)
        out.append(controller.tick())
    return out


@pytest.mark.parametrize("on_disabled", ["hold", "stop"])
def test_disable_ramps_to_zero(policy: OnnxPolicy, on_disabled: str) -> None:
    controller, supervisor, _ = _running(policy, on_disabled=on_disabled)
    start = controller.last_command
    supervisor.enable(False)
    ticks = _ticks(controller, 10)
    commands = [c for c, _ in ticks if c is not None]
    assert all(state is SafetyState.DISABLED for _, state in ticks)
    _assert_ramp(commands, start)
    if on_disabled == "hold":  # keeps publishing zeros, as a position hold keeps publishing its pose
        assert len(commands) == 10
    else:  # the ramp and the first zero, then quiet: the forward controller keeps executing the zero
        assert len(commands) == 5 and ticks[5][0] is None and ticks[9][0] is None


@pytest.mark.parametrize("on_stale", ["hold", "stop"])
def test_stale_joint_states_ramp_to_zero(policy: OnnxPolicy, on_stale: str) -> None:
    controller, _, clock = _running(policy, on_stale=on_stale)
    start = controller.last_command
    clock.now += 150 * MS  # no /joint_states for longer than state_timeout
    ticks = _ticks(controller, 8, clock)
    assert all(state is SafetyState.STALE for _, state in ticks)
    _assert_ramp([c for c, _ in ticks if c is not None], start)
    assert (ticks[-1][0] is None) == (on_stale == "stop")


def test_non_finite_joint_states_ramp_to_zero_then_the_policy_resumes_from_there(policy: OnnxPolicy) -> None:
    controller, supervisor, _ = _running(policy)
    assert not supervisor.accept_joint_state(["shoulder", "elbow"], [math.nan, 1.0], [0.0, 0.0])
    commands = [c for c, _ in _ticks(controller, 3)]
    np.testing.assert_allclose(commands, [[1.475, -1.1], [1.075, -0.7], [0.675, -0.3]], atol=1e-12)
    _feed(supervisor)
    resumed = controller.tick()[0]  # slew-limited from the ramp's last command: no jump back to full speed
    np.testing.assert_allclose(resumed, [1.075, -0.7], atol=1e-12)


def test_a_fault_ramps_to_zero_then_goes_quiet(policy: OnnxPolicy) -> None:
    controller, supervisor, _ = _running(policy)
    start = controller.last_command
    _feed(supervisor, positions=(1.0, 1.5))  # shoulder 0.6 rad past its upper limit: a fault
    ticks = _ticks(controller, 8)
    assert all(state is SafetyState.FAULT for _, state in ticks)
    commands = [c for c, _ in ticks if c is not None]
    _assert_ramp(commands, start)
    assert ticks[-1][0] is None


def test_deactivate_and_shutdown_ramp_with_stop_command(policy: OnnxPolicy) -> None:
    controller, _, _ = _running(policy)
    start = controller.last_command
    commands = []
    while (command := controller.stop_command()) is not None:
        commands.append(command)
        assert len(commands) < 20
    _assert_ramp(commands, start)
    assert controller.stop_command() is None


@pytest.mark.parametrize("on_fault", ["hold", "stop"])
def test_nonfinite_and_bad_policy_steps_ramp_to_zero(policy: OnnxPolicy, on_fault: str) -> None:
    safety = SafetyFilter(SPEC, on_fault=on_fault)
    safety.reset(MIDDLE)
    for _ in range(6):
        decision = policy_step(policy, safety, MIDDLE, np.zeros(2), np.array([0.3, 0.0]))
    start = decision.command
    obs = np.zeros(observation_size(SPEC), np.float32)
    faults = [
        safety.step(obs, np.array([math.nan, 0.0]), MIDDLE),
        safety.step(obs, np.zeros(2), None),
        policy_step(policy, safety, np.array([math.nan, 1.5]), np.zeros(2), np.array([0.3, 0.0])),
    ]
    assert faults[0].fault == FAULT_NONFINITE_ACTION
    if on_fault == "hold":
        assert [d.fault for d in faults[1:]] == [FAULT_BAD_INPUT, FAULT_NONFINITE_OBSERVATION]
    decisions = faults + [safety.step(obs, np.zeros(2), MIDDLE) for _ in range(4)]
    published = [d.command for d in decisions if d.publish]
    _assert_ramp(published, start)
    if on_fault == "stop":  # latched: the ramp and the first zero are published, then nothing
        assert not decisions[-1].publish and safety.stopped


def test_the_hot_path_and_the_general_path_agree_under_a_velocity_contract(policy: OnnxPolicy) -> None:
    fast, general = SafetyFilter(SPEC), SafetyFilter(SPEC)
    fast.reset(MIDDLE), general.reset(MIDDLE)
    positions = np.array([0.35, 2.3])  # near both upper limits: the braking bound is active
    for _ in range(6):
        a = policy_step(policy, fast, positions, np.zeros(2), np.array([0.3, 0.0]))
        b = policy_step(policy, general, positions.tolist(), [0.0, 0.0], [0.3, 0.0])
        assert a.command.tolist() == b.command.tolist() and a.fault is None and b.fault is None
    assert fast.last_action.tolist() == general.last_action.tolist()
    assert a.command[0] < 1.875 and fast.limited_steps == 6


def test_a_position_contract_still_stops_publishing(tmp_path: Path) -> None:
    """The ramp is a velocity contract's: a position contract's stop stays 'publish nothing'."""
    from mpo_ros.contract.spec import load_spec

    safety = SafetyFilter(load_spec("arm2"))
    safety.reset(np.array([0.3, -0.2]))
    safety.disable()
    assert safety.stop() is None
