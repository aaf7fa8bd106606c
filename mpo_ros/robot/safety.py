"""The safety filter and the one control step: policy action -> joint command that respects the contract.

ROS-free (numpy, onnxruntime through :class:`~mpo_ros.robot.onnx_policy.OnnxPolicy`), so every rule is
unit-tested and the ROS node stays a shell.

- :class:`SafetyFilter` turns actions into joint commands that respect the contract's bounds and
  per-step deltas (``observation.limit_command``), and holds or stops on non-finite data. Under a
  velocity contract "hold" and "stop" are a ramp to zero velocity (see the class docstring).
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

from mpo_ros.contract.observation import (
    StepMapper,
    build_observation,
    default_command,
    executed_action,
    limit_command,
    ramp_to_rest,
)
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

    command: joint commands [num_joints] in contract order: position targets (rad) or velocities (rad/s),
        per the contract's interface. On a fault it is the last safe command (position: the hold
        position; velocity: the next step of the ramp to zero). Always within the contract's bounds.
    publish: send ``command`` this step. False when stopped or not enabled: send nothing and let the
        controller's own hold/timeout behaviour take over (a velocity contract publishes its ramp to zero
        first: a forward_velocity_controller keeps executing the last command it got).
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

    Velocity contracts. ros2_control's forward_velocity_controller keeps executing the last command it
    received, so "publish nothing" or "repeat the last command" would leave the arm moving. Wherever a
    position contract holds or stops publishing, a velocity contract ramps its command to zero at the
    slew limit (max_delta per step, never a jump; harder only where the braking bound at known joint
    positions demands it) via :meth:`hold` (keeps publishing: zeros once at rest) and :meth:`stop`
    (publishes the ramp up to and including the first zero, then nothing). :meth:`reset` continues from
    the last command sent (zero after a completed ramp), so enabling is bumpless too.
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
        self._velocity = spec.velocity_commands
        self._command: list[float] = default_command(spec).tolist()
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

        Velocity contract: the command continues from the last one sent (zero velocity once a ramp to
        rest completed; zero if nothing was sent), never from a jump.

        Raises ContractError if the positions are not finite or of the wrong size: enabling from an
        unknown pose is refused rather than guessed.
        """
        hold = np.asarray(hold_positions, dtype=np.float64)
        if hold.shape != (self.spec.num_joints,) or not np.isfinite(hold).all():
            raise ContractError(
                f"cannot enable: hold positions must be {self.spec.num_joints} finite values for "
                f"{list(self.spec.joint_names)}, got {hold.tolist()}; wait for a valid /joint_states"
            )
        if self._velocity:
            command = np.array(self._command) if self.has_command else default_command(self.spec)
        else:
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

        Velocity contract: holding still is zero velocity, so this is the next step of the ramp to zero
        (zeros once at rest, also when nothing was sent yet); ``target``, the measured positions when
        known, only feeds the braking bound.
        """
        if self._velocity:
            return self._ramp(target)
        if target is None:
            return self.last_command if self.has_command else None
        target = np.asarray(target, dtype=np.float64)
        previous = np.array(self._command) if self.has_command else target
        command = limit_command(self.spec, previous, target)
        self._command = command.tolist()
        self.has_command = True
        return command

    def disable(self) -> None:
        """E-stop: the policy's commands stop until the next :meth:`reset` (a velocity contract's caller
        publishes :meth:`stop` meanwhile: the ramp to zero)."""
        self.enabled = False

    def stop(self, joint_positions: np.ndarray | None = None) -> np.ndarray | None:
        """What to publish where a position contract publishes nothing: None, except under a velocity
        contract whose last command was not zero: then the next step of the ramp to zero, up to and
        including the first zero command (the forward controller then keeps executing zero).

        ``joint_positions`` (measured, when known and valid) feeds the braking bound.
        """
        if not self._velocity or not self.has_command or not any(self._command):
            return None
        return self._ramp(joint_positions)

    def _ramp(self, joint_positions: np.ndarray | None) -> np.ndarray:
        positions = None
        if joint_positions is not None:
            positions = np.asarray(joint_positions, dtype=np.float64)
            if positions.shape != (self.spec.num_joints,) or not np.isfinite(positions).all():
                positions = None  # the slew alone still ramps down inside the braking bound
        command = ramp_to_rest(self.spec, np.array(self._command), positions)
        self._command = command.tolist()
        self._action = executed_action(self.spec, command).tolist()
        self.has_command = True
        return command

    def step(
        self, observation: np.ndarray, action: np.ndarray, joint_positions: np.ndarray | None = None
    ) -> SafetyDecision:
        """Command for a policy action in [-1, 1] (``action_to_command``, then limits).

        ``joint_positions`` (measured, rad): required by a velocity contract (the braking bound; a
        missing or malformed one is FAULT_BAD_INPUT, a non-finite one FAULT_NONFINITE_OBSERVATION).
        """
        observation, action = np.asarray(observation), np.asarray(action)
        gate = self._gate(observation, action)
        if gate is not None:
            return gate
        if action.shape != (self.spec.action_dim,):
            return self.reject(FAULT_BAD_INPUT)
        positions = self._positions(joint_positions)
        if isinstance(positions, SafetyDecision):
            return positions
        return self._accept_action(np.asarray(action, dtype=np.float64).tolist(), positions)

    def step_command(
        self, observation: np.ndarray, command: np.ndarray, joint_positions: np.ndarray | None = None
    ) -> SafetyDecision:
        """Like :meth:`step` for a controller that already produced joint commands (rad or rad/s)."""
        observation, command = np.asarray(observation), np.asarray(command)
        gate = self._gate(observation, command)
        if gate is not None:
            return gate
        if command.shape != (self.spec.num_joints,):
            return self.reject(FAULT_BAD_INPUT)
        positions = self._positions(joint_positions)
        if isinstance(positions, SafetyDecision):
            return positions
        wanted = np.asarray(command, dtype=np.float64)
        limited = limit_command(self.spec, np.array(self._command), wanted, positions)
        self.steps += 1
        if not np.array_equal(limited, wanted):
            self.limited_steps += 1
        self._command = limited.tolist()
        self.has_command = True
        return SafetyDecision(limited, True, None)

    def _positions(self, joint_positions: np.ndarray | None) -> list[float] | SafetyDecision | None:
        """The measured positions a velocity contract's step needs, as floats; a fault decision if unusable."""
        if not self._velocity:
            return None
        if joint_positions is None:
            return self.reject(FAULT_BAD_INPUT)
        positions = np.asarray(joint_positions, dtype=np.float64)
        if positions.shape != (self.spec.num_joints,):
            return self.reject(FAULT_BAD_INPUT)
        if not np.isfinite(positions).all():
            return self.reject(FAULT_NONFINITE_OBSERVATION)
        return positions.tolist()

    def reject(self, fault: str) -> SafetyDecision:
        """Count ``fault`` and return the hold (or stop) decision for it.

        Velocity contract: the hold is the next step of the ramp to zero; a stop publishes the ramp up to
        the first zero, then nothing (see :meth:`stop`).
        """
        self.steps += 1
        self.fault_counts[fault] = self.fault_counts.get(fault, 0) + 1
        if self._velocity:
            if self.enabled and self.on_fault == "stop":
                self.stopped = True
            if self.enabled and not self.stopped:
                return SafetyDecision(self._ramp(None), True, fault)
            ramp = self.stop()
            return SafetyDecision(np.array(self._command) if ramp is None else ramp, ramp is not None, fault)
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

    def _accept_action(self, action: list[float], joint_positions: list[float] | None) -> SafetyDecision:
        """A finite action of the right size: map, limit, and remember command and executed action.

        ``joint_positions``: finite measured positions (velocity contracts), None for position contracts."""
        command, self._action, limited = self._mapper.command(self._command, action, joint_positions)
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
            if mapper.velocity_commands and not math.isfinite(sum(positions)):
                # The braking bound needs finite positions even when the observation does not carry them.
                return safety.reject(FAULT_NONFINITE_OBSERVATION)
            try:
                action = policy.act_bound()
            except NonFiniteActionError:
                return safety.reject(FAULT_NONFINITE_ACTION)
            return safety._accept_action(action, positions)
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
    return safety.step(observation, action, joint_positions)


def _floats(values: Any, size: int) -> list[float] | None:
    """``values`` as Python floats when it is a 1-D float ndarray of ``size`` elements, else None.

    Float arrays only: their elements convert to Python floats exactly, as ``np.asarray(..., float64)``
    would; anything else goes the general path, which converts and validates it the vectorised way.
    """
    if type(values) is np.ndarray and values.shape == (size,) and values.dtype.kind == "f":
        return values.tolist()
    return None
