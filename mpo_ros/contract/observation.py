"""The only code that turns robot signals into observations and actions into joint commands.

Pure numpy and vectorised over leading batch dimensions (`...`), so the same functions serve one
control step on the robot, a batch of simulated steps, and a whole bag at once. Nothing here imports
MuJoCo, torch or ROS: what the simulator trains on is, bit for bit, what the robot computes.

Conventions: per-joint vectors follow `spec.joints` order; actions are in [-1, 1];
commands are absolute joint position targets in rad.

:class:`StepMapper` is the same mappings for exactly one control step on plain Python floats (the
robot's hot path, where numpy's per-call cost on 2-6 element vectors outweighs the arithmetic). It is
not a second definition: it performs the same IEEE-754 double operations in the same order, its
results equal the vectorised functions bit for bit (tests/test_observation.py checks this on many
thousands of random states, actions and commands), and a change to one must be made to the other.
"""

from __future__ import annotations

import numpy as np

from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ContractError

__all__ = [
    "StepMapper",
    "action_to_command",
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
    """Joint position targets (rad) for an action in [-1, 1] (clipped), within joint limits."""
    arrays = spec.joint_arrays
    # minimum/maximum rather than np.clip: same result, a third of the cost on the control loop's path.
    action = np.minimum(np.maximum(_vector(action, spec.action_dim, "action"), -1.0), 1.0)
    return np.minimum(np.maximum(arrays.default + arrays.action_scale * action, arrays.lower), arrays.upper)


def command_to_action(spec: RobotSpec, command: np.ndarray) -> np.ndarray:
    """Inverse of action_to_command, used to turn logged commands back into actions.

    Not clipped: a logged command outside the action range shows up as |action| > 1, which the
    data converter counts and reports instead of hiding.
    """
    arrays = spec.joint_arrays
    return (_vector(command, spec.action_dim, "command") - arrays.default) / arrays.action_scale


def executed_action(spec: RobotSpec, command: np.ndarray) -> np.ndarray:
    """The action the robot actually executed: the sent command mapped back to [-1, 1].

    This, not the policy's raw output, is the observation's ``last_action`` block and the action in the
    reward's action-rate term. After the per-step limit the two differ, and only the command reaches
    the robot and its logs: defining "last action" by the command keeps simulation, the robot node and
    observations rebuilt from rosbag2 recordings identical.
    """
    return np.minimum(np.maximum(command_to_action(spec, command), -1.0), 1.0)


def limit_command(spec: RobotSpec, previous_command: np.ndarray, command: np.ndarray) -> np.ndarray:
    """Bound the per-step change of the command and keep it inside joint limits.

    Applied identically in simulation (so training sees the limit) and on the robot (SafetyFilter).
    """
    arrays = spec.joint_arrays
    previous = _vector(previous_command, spec.action_dim, "previous_command")
    target = _vector(command, spec.action_dim, "command")
    lower = np.maximum(previous - arrays.max_delta, arrays.lower)
    upper = np.minimum(previous + arrays.max_delta, arrays.upper)
    # A previous command outside the joint limits (e.g. a measured hold pose past a limit) first
    # moves back toward the limits; the bounds can then cross, and the joint limit wins.
    return np.minimum(np.maximum(target, lower), np.maximum(upper, arrays.lower))


def filter_command(spec: RobotSpec, previous_command: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The contract's action filter on a position target: a first-order low-pass from the previous command
    (its state is the last command, which every user of the contract already tracks); identity for
    ``action_filter: none``."""
    alpha = spec.filter_alpha
    if alpha == 1.0:
        return np.asarray(target, dtype=np.float64)
    previous = _vector(previous_command, spec.action_dim, "previous_command")
    return previous + alpha * (_vector(target, spec.action_dim, "command") - previous)


def policy_command(spec: RobotSpec, previous_command: np.ndarray, action: np.ndarray) -> np.ndarray:
    """THE action -> command step: target, the contract's filter, then the slew and joint limits.

    The simulator, the scripted recorder and the node's general path call this; ``StepMapper.command``
    is the same arithmetic on floats (tested bit-identical).
    """
    target = filter_command(spec, previous_command, action_to_command(spec, action))
    return limit_command(spec, previous_command, target)


def unfilter_commands(spec: RobotSpec, previous_commands: np.ndarray, commands: np.ndarray) -> np.ndarray:
    """The targets that produced logged ``commands`` [T, n] from the commands before them [T, n]: the
    filter's inverse, so bag conversion recovers the policy's actions (exact unless the slew or a joint
    limit was active, as without a filter)."""
    alpha = spec.filter_alpha
    commands = np.asarray(commands, dtype=np.float64)
    if alpha == 1.0:
        return commands
    previous = np.asarray(previous_commands, dtype=np.float64)
    return previous + (commands - previous) / alpha


def default_command(spec: RobotSpec) -> np.ndarray:
    """The default pose as a command vector."""
    return spec.joint_arrays.default.copy()


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
        self, previous_command: list[float], action: list[float]
    ) -> tuple[list[float], list[float], bool]:
        """``(command, executed, limited)`` for a policy action, from the last sent command.

        command = policy_command(spec, previous_command, action) (target, filter, limits);
        executed = executed_action(spec, command), the next observation's last action;
        limited = limit_command changed the command (a joint or per-step limit was active).
        """
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
