"""The only code that turns robot signals into observations and actions into joint commands.

Pure numpy and vectorised over leading batch dimensions (`...`), so the same functions serve one
control step on the robot, a batch of simulated steps, and a whole bag at once. Nothing here imports
MuJoCo, torch or ROS: what the simulator trains on is, bit for bit, what the robot computes.

Conventions: per-joint vectors follow `spec.joints` order; actions are in [-1, 1]; commands are what
the contract's ``command_interface`` takes: absolute joint position targets in rad (position) or joint
velocities in rad/s (velocity). A velocity contract's commands are also bounded by the measured joint
positions (:func:`braking_bounds`), so its action -> command step takes them as an argument.

:class:`StepMapper` is the same mappings for exactly one control step on plain Python floats (the
robot's hot path, where numpy's per-call cost on 2-6 element vectors outweighs the arithmetic). It is
not a second definition: it performs the same IEEE-754 double operations in the same order, its
results equal the vectorised functions bit for bit (tests/test_observation.py checks this on many
thousands of random states, actions and commands), and a change to one must be made to the other.
"""

from __future__ import annotations

import math

import numpy as np

from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ContractError

__all__ = [
    "StepMapper",
    "action_to_command",
    "braking_bounds",
    "build_observation",
    "command_to_action",
    "default_command",
    "executed_action",
    "filter_command",
    "joint_array",
    "limit_command",
    "observation_names",
    "observation_size",
    "policy_command",
    "ramp_to_rest",
    "start_command",
    "unfilter_commands",
]


def _block_names(spec: RobotSpec, block: str) -> list[str]:
    if block == "goal":
        return [f"goal/{i}" for i in range(spec.task.goal_dim)]
    return [f"{block}/{name}" for name in spec.joint_names]


def observation_names(spec: RobotSpec) -> list[str]:
    """One name per observation element, e.g. 'joint_positions/elbow', in layout order."""
    return [name for block in spec.observation for name in _block_names(spec, block)]


def observation_size(spec: RobotSpec) -> int:
    return len(observation_names(spec))


def _vector(value: np.ndarray, size: int, what: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape[-1:] != (size,):
        raise ContractError(f"{what} must have last dimension {size}, got shape {array.shape}")
    return array


def build_observation(
    spec: RobotSpec,
    joint_positions: np.ndarray,
    joint_velocities: np.ndarray,
    last_action: np.ndarray,
    goal: np.ndarray,
) -> np.ndarray:
    """Observation [..., obs_dim] (float32) in the contract's layout.

    joint_positions enter relative to the default pose, so a policy sees 0 at its nominal posture
    whatever the robot's zero is. Velocities are raw rad/s: the policy's normaliser (baked into the
    exported graph) scales them.
    """
    n = spec.num_joints
    parts = {
        "joint_positions": _vector(joint_positions, n, "joint_positions") - spec.joint_arrays.default,
        "joint_velocities": _vector(joint_velocities, n, "joint_velocities"),
        "last_action": _vector(last_action, n, "last_action"),
        "goal": _vector(goal, spec.task.goal_dim, "goal"),
    }
    blocks = [parts[b] for b in spec.observation]
    if all(b.ndim == 1 for b in blocks):  # one control step: skip the broadcasting machinery
        return np.concatenate(blocks).astype(np.float32)
    shape = np.broadcast_shapes(*(b.shape[:-1] for b in blocks))
    blocks = [np.broadcast_to(b, (*shape, b.shape[-1])) for b in blocks]
    return np.concatenate(blocks, axis=-1).astype(np.float32)


def action_to_command(spec: RobotSpec, action: np.ndarray) -> np.ndarray:
    """The command for an action in [-1, 1] (clipped), within the contract's static bounds.

    Position contract: default + action_scale * action (rad), within the joint limits. Velocity contract:
    action_scale * action (rad/s), within +-velocity_limit (the position-aware braking bound needs the
    measured positions and is applied by limit_command).
    """
    arrays = spec.command_arrays
    # minimum/maximum rather than np.clip: same result, a third of the cost on the control loop's path.
    action = np.minimum(np.maximum(_vector(action, spec.action_dim, "action"), -1.0), 1.0)
    scale = spec.joint_arrays.action_scale
    return np.minimum(np.maximum(arrays.offset + scale * action, arrays.lower), arrays.upper)


def command_to_action(spec: RobotSpec, command: np.ndarray) -> np.ndarray:
    """Inverse of action_to_command, used to turn logged commands back into actions.

    Not clipped: a logged command outside the action range shows up as |action| > 1, which the
    data converter counts and reports instead of hiding.
    """
    offset, scale = spec.command_arrays.offset, spec.joint_arrays.action_scale
    return (_vector(command, spec.action_dim, "command") - offset) / scale


def executed_action(spec: RobotSpec, command: np.ndarray) -> np.ndarray:
    """The action the robot actually executed: the sent command mapped back to [-1, 1].

    This, not the policy's raw output, is the observation's ``last_action`` block and the action in the
    reward's action-rate term. After the per-step limit the two differ, and only the command reaches
    the robot and its logs: defining "last action" by the command keeps simulation, the robot node and
    observations rebuilt from rosbag2 recordings identical.
    """
    return np.minimum(np.maximum(command_to_action(spec, command), -1.0), 1.0)


def braking_bounds(spec: RobotSpec, joint_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Velocity contract: the velocity commands (rad/s) from which each joint can still stop inside its limits.

    With max_delta = d (rad/s per step), rate r and distance s to the limit ahead (0 beyond it), the bound
    is b(s) = sqrt(d^2 + 2 d r s) - d: a joint that moves one control period at b and then brakes at
    a = d r stops exactly at the limit (b/r + b^2 / 2a = s). This is the sampled-time form of the
    continuous sqrt(2 a s) and always below it; unlike the continuous one it never asks for a larger
    decrease than d in one step while the joint follows its command, so braking and the slew limit
    agree. Returns (lower, upper) with lower <= 0 <= upper, also within +-velocity_limit.
    """
    arrays = spec.joint_arrays
    positions = _vector(joint_positions, spec.num_joints, "joint_positions")
    delta = arrays.max_delta
    reach = 2.0 * delta * spec.control_rate_hz
    to_lower = np.maximum(positions - arrays.lower, 0.0)
    to_upper = np.maximum(arrays.upper - positions, 0.0)
    lower = delta - np.sqrt(delta * delta + reach * to_lower)
    upper = np.sqrt(delta * delta + reach * to_upper) - delta
    limit = arrays.velocity_limit
    return np.maximum(lower, -limit), np.minimum(upper, limit)


def limit_command(
    spec: RobotSpec,
    previous_command: np.ndarray,
    command: np.ndarray,
    joint_positions: np.ndarray | None = None,
) -> np.ndarray:
    """Bound the per-step change of the command and keep it inside the contract's bounds.

    Position contract: the joint limits; ``joint_positions`` is not used. Velocity contract: the braking
    bounds at the measured ``joint_positions`` (required: ContractError without them). When the slew
    limit and the bounds conflict (a previous command outside them), the bounds win: for a velocity
    contract that is braking harder than max_delta rather than running into a joint limit.

    Applied identically in simulation (so training sees the limit) and on the robot (SafetyFilter).
    """
    arrays = spec.joint_arrays
    previous = _vector(previous_command, spec.action_dim, "previous_command")
    target = _vector(command, spec.action_dim, "command")
    if spec.velocity_commands:
        if joint_positions is None:
            raise ContractError(
                "a velocity contract limits commands by the measured joint positions (the braking bound); "
                "pass joint_positions"
            )
        bound_low, bound_high = braking_bounds(spec, joint_positions)
    else:
        bound_low, bound_high = arrays.lower, arrays.upper
    lower = np.maximum(previous - arrays.max_delta, bound_low)
    upper = np.minimum(previous + arrays.max_delta, bound_high)
    # A previous command outside the bounds (e.g. a measured hold pose past a limit) first moves back
    # toward them; the slew bounds can then cross, and the contract's bound wins.
    return np.minimum(np.maximum(target, lower), np.maximum(upper, bound_low))


def filter_command(spec: RobotSpec, previous_command: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The contract's action filter on a command target (position or velocity): a first-order low-pass from
    the previous command (its state is the last command, which every user of the contract already
    tracks); identity for ``action_filter: none``."""
    alpha = spec.filter_alpha
    if alpha == 1.0:
        return np.asarray(target, dtype=np.float64)
    previous = _vector(previous_command, spec.action_dim, "previous_command")
    return previous + alpha * (_vector(target, spec.action_dim, "command") - previous)


def policy_command(
    spec: RobotSpec,
    previous_command: np.ndarray,
    action: np.ndarray,
    joint_positions: np.ndarray | None = None,
) -> np.ndarray:
    """THE action -> command step: target, the contract's filter, then the slew and contract bounds.

    ``joint_positions`` (measured, rad) is required by a velocity contract (braking bound) and ignored by a
    position contract. The simulator, the scripted recorder and the node's general path call this;
    ``StepMapper.command`` is the same arithmetic on floats (tested bit-identical).
    """
    target = filter_command(spec, previous_command, action_to_command(spec, action))
    return limit_command(spec, previous_command, target, joint_positions)


def ramp_to_rest(
    spec: RobotSpec, previous_command: np.ndarray, joint_positions: np.ndarray | None = None
) -> np.ndarray:
    """The next command on the way to rest, never a jump.

    Position contract: the previous command within the joint limits (holding it is rest). Velocity
    contract: one slew step (max_delta) toward 0 rad/s, within +-velocity_limit, and within the braking
    bounds when ``joint_positions`` are known (they win over the slew, as in limit_command). Without
    positions (stale or non-finite /joint_states) the slew alone: a previous command inside the braking
    bound stays inside it while it ramps down at max_delta (see braking_bounds).
    """
    previous = _vector(previous_command, spec.action_dim, "previous_command")
    if not spec.velocity_commands:
        return np.minimum(np.maximum(previous, spec.joint_arrays.lower), spec.joint_arrays.upper)
    if joint_positions is not None:
        return limit_command(spec, previous, np.zeros_like(previous), joint_positions)
    delta, limit = spec.joint_arrays.max_delta, spec.joint_arrays.velocity_limit
    toward_zero = np.minimum(np.maximum(0.0, previous - delta), previous + delta)
    return np.minimum(np.maximum(toward_zero, -limit), limit)


def unfilter_commands(spec: RobotSpec, previous_commands: np.ndarray, commands: np.ndarray) -> np.ndarray:
    """The targets that produced logged ``commands`` [T, n] from the commands before them [T, n]: the
    filter's inverse, so bag conversion recovers the policy's actions (exact unless the slew or a
    contract bound was active, as without a filter). Same for both interfaces."""
    alpha = spec.filter_alpha
    commands = np.asarray(commands, dtype=np.float64)
    if alpha == 1.0:
        return commands
    previous = np.asarray(previous_commands, dtype=np.float64)
    return previous + (commands - previous) / alpha


def default_command(spec: RobotSpec) -> np.ndarray:
    """The command of the robot at rest in its default pose: the default pose (position contract) or
    zero velocity (velocity contract)."""
    if spec.velocity_commands:
        return np.zeros(spec.num_joints)
    return spec.joint_arrays.default.copy()


def start_command(spec: RobotSpec, joint_positions: np.ndarray) -> np.ndarray:
    """The command in force at an episode start with the robot at rest at ``joint_positions`` [..., n].

    Position contract: the servos hold the measured pose, so it is the command before the first one.
    Velocity contract: zero velocity. Simulation resets, the safety filter's enable and bag conversion
    all start episodes this way (the filter's state and the first observation's last action).
    """
    positions = _vector(joint_positions, spec.num_joints, "joint_positions")
    if spec.velocity_commands:
        return np.zeros_like(positions)
    return positions.copy()


def joint_array(
    spec: RobotSpec, names: list[str] | tuple[str, ...], values: np.ndarray | list[float]
) -> np.ndarray:
    """Reorder a named joint vector (e.g. a JointState message) into contract order.

    Joints are matched by name, never by index; extra joints are ignored. A missing joint raises a
    ContractError naming it and listing what was received.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(names):
        raise ContractError(f"got {len(names)} joint names but {len(values)} values")
    index = {name: i for i, name in enumerate(names)}
    missing = [n for n in spec.joint_names if n not in index]
    if missing:
        raise ContractError(
            f"joint(s) {missing} missing from the message; it has {list(names)}. "
            f"The policy expects {list(spec.joint_names)}"
        )
    return values[[index[n] for n in spec.joint_names]]


# ------------------------------------------------------------------------------- one control step


class StepMapper:
    """build_observation, action_to_command, limit_command and executed_action for one control step.

    The robot runtime calls these every control period on vectors of 2-6 joints; as numpy calls they
    cost about 15 us per step, mostly per-call overhead, against the control loop's budget of 20 us for
    observation + inference + safety. Here they are plain float arithmetic with nothing allocated but
    the result lists. The operations mirror the vectorised functions one for one (numpy's
    ``maximum(a, b)`` is ``a if a > b else b`` for non-NaN values, ``minimum`` likewise with ``<``,
    so even signed zeros agree), which makes the results equal bit for bit. Inputs must be finite: the
    callers reject NaN/inf first (numpy would propagate NaN where this code does not).

    Args:
        spec: the robot contract; its per-joint numbers are read once.
    """

    def __init__(self, spec: RobotSpec) -> None:
        arrays = spec.joint_arrays
        self.num_joints = spec.num_joints
        self.goal_dim = spec.task.goal_dim
        self.observation_size = observation_size(spec)
        self._default: list[float] = arrays.default.tolist()
        # (default, action_scale, lower, upper, max_delta) per joint, in contract order.
        self._joints = tuple(
            zip(
                self._default,
                arrays.action_scale.tolist(),
                arrays.lower.tolist(),
                arrays.upper.tolist(),
                arrays.max_delta.tolist(),
                strict=True,
            )
        )
        blocks = ("joint_positions", "joint_velocities", "last_action", "goal")
        self._layout = tuple(blocks.index(block) for block in spec.observation)
        self._alpha = spec.filter_alpha
        self.velocity_commands = spec.velocity_commands
        # Velocity contracts: (action_scale, velocity_limit, lower, upper, max_delta, 2 max_delta rate).
        rate = spec.control_rate_hz
        self._velocity_joints = tuple(
            (scale, limit, lower, upper, max_delta, 2.0 * max_delta * rate)
            for scale, limit, lower, upper, max_delta in zip(
                arrays.action_scale.tolist(),
                arrays.velocity_limit.tolist(),
                arrays.lower.tolist(),
                arrays.upper.tolist(),
                arrays.max_delta.tolist(),
                strict=True,
            )
        )

    def write_observation(
        self,
        out: np.ndarray,
        joint_positions: list[float],
        joint_velocities: list[float],
        last_action: list[float],
        goal: list[float],
    ) -> None:
        """Write ``build_observation(spec, ...)`` for one state into ``out`` (float32 [obs_dim]).

        ``out`` is typically the policy's input buffer, so the observation lands where inference reads
        it without an intermediate array. The float64 -> float32 rounding happens in the assignment,
        as in build_observation's ``astype``.
        """
        n = self.num_joints
        if not (len(joint_positions) == len(joint_velocities) == len(last_action) == n):
            raise ContractError(
                f"joint_positions, joint_velocities and last_action must have {n} values, got "
                f"{len(joint_positions)}, {len(joint_velocities)} and {len(last_action)}"
            )
        if len(goal) != self.goal_dim:
            raise ContractError(f"goal must have {self.goal_dim} values, got {len(goal)}")
        parts = (
            [p - d for p, d in zip(joint_positions, self._default, strict=True)],
            joint_velocities,
            last_action,
            goal,
        )
        values: list[float] = []
        for block in self._layout:
            values += parts[block]
        out[:] = values

    def command(
        self,
        previous_command: list[float],
        action: list[float],
        joint_positions: list[float] | None = None,
    ) -> tuple[list[float], list[float], bool]:
        """``(command, executed, limited)`` for a policy action, from the last sent command.

        command = policy_command(spec, previous_command, action, joint_positions) (target, filter, limits);
        executed = executed_action(spec, command), the next observation's last action;
        limited = limit_command changed the command (a joint, braking or per-step limit was active).
        ``joint_positions`` (measured, rad) is required by a velocity contract and ignored otherwise.
        """
        if self.velocity_commands:
            return self._velocity_command(previous_command, action, joint_positions)
        if len(previous_command) != self.num_joints or len(action) != self.num_joints:
            raise ContractError(
                f"previous_command and action must have {self.num_joints} values, got "
                f"{len(previous_command)} and {len(action)}"
            )
        commands: list[float] = []
        executed: list[float] = []
        limited = False
        for (default, scale, lower, upper, max_delta), previous, value in zip(
            self._joints, previous_command, action, strict=True
        ):
            # action_to_command: minimum(maximum(action, -1), 1), then the joint limits.
            value = value if value > -1.0 else -1.0
            value = value if value < 1.0 else 1.0
            wanted = default + scale * value
            wanted = wanted if wanted > lower else lower
            wanted = wanted if wanted < upper else upper
            if self._alpha != 1.0:  # filter_command, operation for operation
                wanted = previous + self._alpha * (wanted - previous)
            # limit_command, operation for operation.
            low = previous - max_delta
            low = low if low > lower else lower
            high = previous + max_delta
            high = high if high < upper else upper
            high = high if high > lower else lower
            command = wanted if wanted > low else low
            command = command if command < high else high
            limited = limited or command != wanted
            commands.append(command)
            # executed_action: (command - default) / scale, clipped to [-1, 1].
            back = (command - default) / scale
            back = back if back > -1.0 else -1.0
            executed.append(back if back < 1.0 else 1.0)
        return commands, executed, limited

    def _velocity_command(
        self, previous_command: list[float], action: list[float], joint_positions: list[float] | None
    ) -> tuple[list[float], list[float], bool]:
        """``command`` for a velocity contract: action_to_command, filter_command, braking_bounds and
        limit_command, operation for operation (offset 0.0, bounds +-velocity_limit)."""
        if joint_positions is None:
            raise ContractError(
                "a velocity contract limits commands by the measured joint positions (the braking bound); "
                "pass joint_positions"
            )
        n = self.num_joints
        if len(previous_command) != n or len(action) != n or len(joint_positions) != n:
            raise ContractError(
                f"previous_command, action and joint_positions must have {n} values, got "
                f"{len(previous_command)}, {len(action)} and {len(joint_positions)}"
            )
        sqrt = math.sqrt
        commands: list[float] = []
        executed: list[float] = []
        limited = False
        for (scale, limit, lower, upper, max_delta, reach), previous, value, position in zip(
            self._velocity_joints, previous_command, action, joint_positions, strict=True
        ):
            value = value if value > -1.0 else -1.0
            value = value if value < 1.0 else 1.0
            wanted = 0.0 + scale * value
            wanted = wanted if wanted > -limit else -limit
            wanted = wanted if wanted < limit else limit
            if self._alpha != 1.0:
                wanted = previous + self._alpha * (wanted - previous)
            # braking_bounds.
            to_lower = position - lower
            to_lower = to_lower if to_lower > 0.0 else 0.0
            to_upper = upper - position
            to_upper = to_upper if to_upper > 0.0 else 0.0
            bound_low = max_delta - sqrt(max_delta * max_delta + reach * to_lower)
            bound_high = sqrt(max_delta * max_delta + reach * to_upper) - max_delta
            bound_low = bound_low if bound_low > -limit else -limit
            bound_high = bound_high if bound_high < limit else limit
            # limit_command.
            low = previous - max_delta
            low = low if low > bound_low else bound_low
            high = previous + max_delta
            high = high if high < bound_high else bound_high
            high = high if high > bound_low else bound_low
            command = wanted if wanted > low else low
            command = command if command < high else high
            limited = limited or command != wanted
            commands.append(command)
            back = (command - 0.0) / scale
            back = back if back > -1.0 else -1.0
            executed.append(back if back < 1.0 else 1.0)
        return commands, executed, limited
