"""The safety filter and the one control step: policy action -> joint command that respects the contract.

ROS-free (numpy, onnxruntime through :class:`~mpo_ros.robot.onnx_policy.OnnxPolicy`), so every rule is
unit-tested and the ROS node stays a shell.

- :class:`SafetyFilter` turns actions into joint position commands that respect joint limits and
  per-step deltas (``observation.limit_command``), and holds or stops on non-finite data.
- :func:`policy_step` is one control step, joint state in, :class:`SafetyDecision` out; the policy
  node's controller (:mod:`mpo_ros.robot.controller`) calls it once per tick and the latency
  benchmark measures exactly this call. For float arrays of the contract's sizes it takes a hot path
  (``observation.StepMapper`` writing straight into the policy's bound input buffer,
  :meth:`OnnxPolicy.act_bound`); other inputs take the vectorised functions, with identical results.

Typical use::

    policy = OnnxPolicy("models/arm2.onnx", device="cpu", require_contract=True)
    safety = SafetyFilter.for_policy(policy, on_fault="hold")
    safety.reset(measured_joint_positions)            # at enable (e-stop released)
    ...
    decision = policy_step(policy, safety, joint_positions, joint_velocities, goal)  # every tick
    if decision.publish:
        send(decision.command)

Not thread-safe: one SafetyFilter belongs to one control loop.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from mpo_ros.contract.observation import StepMapper, build_observation, executed_action, limit_command
from mpo_ros.contract.policy_file import MissingContractError
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ContractError
from mpo_ros.robot.onnx_policy import NonFiniteActionError, OnnxPolicy

__all__ = [
    "FAULT_BAD_INPUT",
    "FAULT_NONFINITE_ACTION",
    "FAULT_NONFINITE_OBSERVATION",
    "FAULT_NOT_ENABLED",
    "FAULT_STOPPED",
    "ON_FAULT",
    "SafetyDecision",
    "SafetyFilter",
    "policy_step",
]

FAULT_NOT_ENABLED = "not_enabled"  # step before reset(), or after disable()
FAULT_NONFINITE_OBSERVATION = "nonfinite_observation"  # NaN/inf joint state, velocity or goal
FAULT_NONFINITE_ACTION = "nonfinite_action"  # NaN/inf from the policy
FAULT_BAD_INPUT = "bad_input"  # wrong vector sizes (a contract violation upstream)
FAULT_STOPPED = "stopped"  # on_fault="stop" latched after an earlier fault; reset() to resume

ON_FAULT = ("hold", "stop")


class SafetyDecision(NamedTuple):
    """What to do this control step.

    command: joint position targets [num_joints] in contract order (rad). On a fault it is the last
        safe command (the hold position). Always within joint limits.
    publish: send ``command`` this step. False when stopped or not enabled: send nothing and let the
        controller's own hold/timeout behaviour take over.
    fault: None when the policy's command passed (possibly clamped); else a FAULT_* code.
    """

    command: np.ndarray
    publish: bool
    fault: str | None


def _finite(values: np.ndarray) -> bool:
    # Exact for float32 inputs (a float64 sum of float32 values cannot overflow at these sizes).
    # ravel: an observation broadcast to 2-D by a wrongly shaped input is a fault (the policy refuses
    # its shape), not a TypeError from summing nested lists.
    return math.isfinite(sum(values.ravel().tolist()))


class SafetyFilter:
    """Last line of defence between the policy and the joints.

    Commands pass through ``observation.limit_command`` (joint limits and per-step ``max_delta``,
    the same function simulation applies, so the policy was trained under the same limits). Non-finite
    observations or actions are rejected and counted by reason; then

    - ``on_fault="hold"``: publish the last safe command (the robot holds still) and carry on with the
      next good step, which is delta-limited from the held command;
    - ``on_fault="stop"``: tell the caller to stop publishing (``publish=False``) and stay stopped
      (``FAULT_STOPPED``) until :meth:`reset`.

    Before the first :meth:`reset` (and after :meth:`disable`) nothing is published. :meth:`reset`
    takes the measured joint positions at enable time as the initial hold command, so enabling never
    makes the arm jump, and sets the last action fed back into observations the way simulation does
    at an episode start (the action of the held pose).

    The last command and last action are kept as Python floats for ``observation.StepMapper``, the
    single-step form of the contract mappings (bit-identical to the vectorised ones, a third of the
    cost); :attr:`last_command` and :attr:`last_action` give them as arrays.
    """

    def __init__(self, spec: RobotSpec, on_fault: str = "hold") -> None:
        if on_fault not in ON_FAULT:
            raise ValueError(f"on_fault must be one of {ON_FAULT}, got {on_fault!r}")
        self.spec = spec
        self.on_fault = on_fault
        self.fault_counts: dict[str, int] = {}
        self.steps = 0
        # Steps where limit_command changed the policy's command (joint or delta limit active).
        self.limited_steps = 0
        self._lower = np.array([j.lower for j in spec.joints])
        self._upper = np.array([j.upper for j in spec.joints])
        self._mapper = StepMapper(spec)
        self._command: list[float] = [j.default for j in spec.joints]
        self._action: list[float] = [0.0] * spec.action_dim
        self.enabled = False
        self.stopped = False
        # Whether `_command` was ever sent (reset, a step or a hold): before that it is the
        # contract's default pose, which a hold must not slew from.
        self.has_command = False

    @classmethod
    def for_policy(cls, policy: OnnxPolicy, on_fault: str = "hold") -> SafetyFilter:
        """A filter for ``policy``'s robot contract; refuses contract-less (plain gym) policies."""
        if policy.spec is None:
            raise MissingContractError(
                f"{policy.path} has no robot contract, so it cannot drive a robot; export a policy trained on a robot spec"
            )
        return cls(policy.spec, on_fault)

    @property
    def last_command(self) -> np.ndarray:
        """The last safe command (a copy): what the robot is told to hold."""
        return np.array(self._command)

    @property
    def last_action(self) -> np.ndarray:
        """The executed action (a copy) the next observation's ``last_action`` block carries."""
        return np.array(self._action)

    @last_action.setter
    def last_action(self, value: np.ndarray) -> None:
        action = np.asarray(value, dtype=np.float64)
        if action.shape != (self.spec.action_dim,):
            raise ContractError(f"last_action must have shape ({self.spec.action_dim},), got {action.shape}")
        self._action = action.tolist()

    def reset(self, hold_positions: np.ndarray) -> None:
        """Enable: hold ``hold_positions`` (measured joints, contract order), clear the fault latch.

        Raises ContractError if the positions are not finite or of the wrong size: enabling from an
        unknown pose is refused rather than guessed.
        """
        hold = np.asarray(hold_positions, dtype=np.float64)
        if hold.shape != (self.spec.num_joints,) or not np.isfinite(hold).all():
            raise ContractError(
                f"cannot enable: hold positions must be {self.spec.num_joints} finite values for "
                f"{list(self.spec.joint_names)}, got {hold.tolist()}; wait for a valid /joint_states"
            )
        command = np.clip(hold, self._lower, self._upper)
        self._command = command.tolist()
        # As in simulation (sim/reach_env.py reset): the held pose is the previous command and its
        # action, clipped to [-1, 1], the last action the first observation sees.
        self._action = executed_action(self.spec, command).tolist()
        self.enabled = True
        self.stopped = False
        self.has_command = True

    def hold(self, target: np.ndarray | None = None) -> np.ndarray | None:
        """The command that holds ``target`` (None: the last command), slewed and limited from the last one.

        Used while the policy does not run (disabled, stale, waiting for a goal): the hold obeys the
        same joint and per-step limits as policy commands, so control passing between the policy and
        a hold never jumps. Returns None when there is nothing to hold (no command sent yet and no
        target). Does not enable the filter.
        """
        if target is None:
            return self.last_command if self.has_command else None
        target = np.asarray(target, dtype=np.float64)
        previous = np.array(self._command) if self.has_command else target
        command = limit_command(self.spec, previous, target)
        self._command = command.tolist()
        self.has_command = True
        return command

    def disable(self) -> None:
        """E-stop: publish nothing until the next :meth:`reset`."""
        self.enabled = False

    def step(self, observation: np.ndarray, action: np.ndarray) -> SafetyDecision:
        """Command for a policy action in [-1, 1] (``action_to_command``, then limits)."""
        observation, action = np.asarray(observation), np.asarray(action)
        gate = self._gate(observation, action)
        if gate is not None:
            return gate
        if action.shape != (self.spec.action_dim,):
            return self.reject(FAULT_BAD_INPUT)
        return self._accept_action(np.asarray(action, dtype=np.float64).tolist())

    def step_command(self, observation: np.ndarray, command: np.ndarray) -> SafetyDecision:
        """Like :meth:`step` for a controller that already produced joint position targets (rad)."""
        observation, command = np.asarray(observation), np.asarray(command)
        gate = self._gate(observation, command)
        if gate is not None:
            return gate
        if command.shape != (self.spec.num_joints,):
            return self.reject(FAULT_BAD_INPUT)
        wanted = np.asarray(command, dtype=np.float64)
        limited = limit_command(self.spec, np.array(self._command), wanted)
        self.steps += 1
        if not np.array_equal(limited, wanted):
            self.limited_steps += 1
        self._command = limited.tolist()
        self.has_command = True
        return SafetyDecision(limited, True, None)

    def reject(self, fault: str) -> SafetyDecision:
        """Count ``fault`` and return the hold (or stop) decision for it."""
        self.steps += 1
        self.fault_counts[fault] = self.fault_counts.get(fault, 0) + 1
        hold = np.array(self._command)
        if not self.enabled:
            return SafetyDecision(hold, False, fault)
        if self.on_fault == "stop":
            self.stopped = True
            return SafetyDecision(hold, False, fault)
        return SafetyDecision(hold, True, fault)

    def _gate(self, observation: np.ndarray, action: np.ndarray) -> SafetyDecision | None:
        if not self.enabled:
            return self.reject(FAULT_NOT_ENABLED)
        if self.stopped:
            return self.reject(FAULT_STOPPED)
        if not _finite(observation):
            return self.reject(FAULT_NONFINITE_OBSERVATION)
        if not _finite(action):
            return self.reject(FAULT_NONFINITE_ACTION)
        return None

    def _accept_action(self, action: list[float]) -> SafetyDecision:
        """A finite action of the right size: map, limit, and remember command and executed action."""
        command, self._action, limited = self._mapper.command(self._command, action)
        self.steps += 1
        if limited:
            self.limited_steps += 1
        self._command = command
        self.has_command = True
        return SafetyDecision(np.array(command), True, None)


def policy_step(
    policy: OnnxPolicy,
    safety: SafetyFilter,
    joint_positions: np.ndarray,
    joint_velocities: np.ndarray,
    goal: np.ndarray,
) -> SafetyDecision:
    """One control step: joint state (contract order, rad, rad/s) and goal -> the command to send.

    Builds the observation from the joint state, the goal and the safety filter's last action, runs
    the policy, and filters its action. Never raises on bad data: wrong sizes, NaN/inf inputs or
    outputs become a fault decision (hold or stop, see :class:`SafetyFilter`). The policy is not run
    while the filter is disabled or stopped.

    With an :class:`OnnxPolicy` and 1-D float arrays of the contract's sizes (what the node passes)
    the step runs on ``observation.StepMapper``; anything else goes through the vectorised
    ``observation`` functions. Both give bit-identical commands (tests/test_safety.py).
    """
    if not safety.enabled or safety.stopped:
        return safety.reject(FAULT_NOT_ENABLED if not safety.enabled else FAULT_STOPPED)
    mapper = safety._mapper
    if (
        type(policy) is OnnxPolicy
        and policy.obs_dim == mapper.observation_size
        and policy.act_dim == mapper.num_joints
    ):
        positions = _floats(joint_positions, mapper.num_joints)
        velocities = _floats(joint_velocities, mapper.num_joints)
        goal_values = _floats(goal, mapper.goal_dim)
        if positions is not None and velocities is not None and goal_values is not None:
            # The hot path: same mappings (StepMapper), same checks, same faults as the general path
            # below, without building intermediate arrays.
            observation = policy.input_buffer
            mapper.write_observation(observation, positions, velocities, safety._action, goal_values)
            if not math.isfinite(sum(observation.tolist())):
                return safety.reject(FAULT_NONFINITE_OBSERVATION)
            try:
                action = policy.act_bound()
            except NonFiniteActionError:
                return safety.reject(FAULT_NONFINITE_ACTION)
            return safety._accept_action(action)
    # Anything else (lists, other dtypes or sizes, a policy object that is not an OnnxPolicy): the
    # vectorised mappings, which also turn wrong sizes into ContractError -> FAULT_BAD_INPUT.
    try:
        observation = build_observation(
            safety.spec, joint_positions, joint_velocities, np.array(safety._action), goal
        )
        if not _finite(observation):
            return safety.reject(FAULT_NONFINITE_OBSERVATION)
        action = policy.act(observation)
    except NonFiniteActionError:
        return safety.reject(FAULT_NONFINITE_ACTION)
    except ContractError:
        return safety.reject(FAULT_BAD_INPUT)
    return safety.step(observation, action)


def _floats(values: Any, size: int) -> list[float] | None:
    """``values`` as Python floats when it is a 1-D float ndarray of ``size`` elements, else None.

    Float arrays only: their elements convert to Python floats exactly, as ``np.asarray(..., float64)``
    would; anything else goes the general path, which converts and validates it the vectorised way.
    """
    if type(values) is np.ndarray and values.shape == (size,) and values.dtype.kind == "f":
        return values.tolist()
    return None
