"""Turn asynchronous message streams into control steps and episodes, in pure numpy.

The command stream defines the steps: a logged command at time t_k is what the controller decided
from what it knew at t_k. Joint state and goal are therefore taken by zero-order hold (the latest
message at or before t_k), and a step whose joint state is older than `max_state_age` (or absent,
or NaN) is dropped and counted: its observation would not be what the controller saw.

Episodes end where the data stops being one continuous rollout:

* a gap between commands longer than `max_gap_periods` control periods (or a dropped step),
* a goal change (a new task instance: in simulation, a reset),
* a joint-state jump no joint could make within its velocity limit (a teleport: a sim reset).

All of these are truncations, never terminations: the robot could have gone on, so the value of
the last state must be bootstrapped (the reach task has no terminal states either).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from mpo_ros.contract.spec import RobotSpec
from mpo_ros.data.streams import CommandStream, JointStateStream, PointStream

__all__ = ["AlignedSteps", "align_steps", "hold_index", "split_segments"]

# A jump counts as a reset when it exceeds what the velocity limit allows by this factor plus slack.
_JUMP_FACTOR = 2.0
_JUMP_SLACK_RAD = 0.05
_GOAL_CHANGE = 1e-9


@dataclass
class AlignedSteps:
    """One row per kept command: the state and goal the controller saw, and what it commanded."""

    time_ns: np.ndarray  # [K] int64, receive time of the command
    joint_positions: np.ndarray  # [K, n]
    joint_velocities: np.ndarray  # [K, n]
    goal: np.ndarray  # [K, goal_dim]
    command: np.ndarray  # [K, n]
    state_age_s: np.ndarray  # [K] age of the held joint state at the command time
    # Commands dropped and why ('stale_state', 'no_state_yet', 'no_goal_yet', 'nan_state', ...).
    dropped: dict[str, int] = field(default_factory=dict)
    # Index of each kept row in the original command stream (to find holes left by drops).
    command_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.time_ns)


def hold_index(event_ns: np.ndarray, query_ns: np.ndarray) -> np.ndarray:
    """Zero-order hold: index of the last event at or before each query time, -1 if none.

    Events with equal times (repeated stamps) resolve to the last of them, the freshest value.
    """
    return np.searchsorted(event_ns, query_ns, side="right") - 1


def align_steps(
    spec: RobotSpec,
    commands: CommandStream,
    joint_states: JointStateStream,
    goals: PointStream,
    max_state_age_s: float,
) -> AlignedSteps:
    """Sample joint state and goal at every command time; drop steps the controller could not see."""
    dropped: dict[str, int] = {}
    times = commands.receive_ns
    state_idx = hold_index(joint_states.receive_ns, times)
    goal_idx = hold_index(goals.receive_ns, times)
    has_state = state_idx >= 0
    safe_state = np.maximum(state_idx, 0)
    age = (
        np.where(has_state, (times - joint_states.receive_ns[safe_state]) * 1e-9, np.inf)
        if len(joint_states)
        else np.full(len(times), np.inf)
    )
    positions = (
        joint_states.positions[safe_state]
        if len(joint_states)
        else np.full((len(times), spec.num_joints), np.nan)
    )
    velocities = (
        joint_states.velocities[safe_state]
        if len(joint_states)
        else np.full((len(times), spec.num_joints), np.nan)
    )
    goal_dim = spec.task.goal_dim
    goal = (
        goals.points[np.maximum(goal_idx, 0), :goal_dim]
        if len(goals)
        else np.full((len(times), goal_dim), np.nan)
    )

    keep = np.ones(len(times), dtype=bool)
    needs_velocity = "joint_velocities" in spec.observation
    reasons = [
        ("no_state_yet", ~has_state),
        ("stale_state", has_state & (age > max_state_age_s)),
        ("nan_state", ~np.all(np.isfinite(positions), axis=-1)),
        ("no_velocity", ~np.all(np.isfinite(velocities), axis=-1) if needs_velocity else np.zeros_like(keep)),
        ("no_goal_yet", goal_idx < 0),
        ("nan_command", ~np.all(np.isfinite(commands.positions), axis=-1)),
    ]
    for reason, mask in reasons:
        newly = mask & keep  # each dropped command counted once, under its first reason
        if newly.any():
            dropped[reason] = int(newly.sum())
        keep &= ~mask
    idx = np.flatnonzero(keep)
    return AlignedSteps(
        time_ns=times[idx],
        joint_positions=positions[idx],
        joint_velocities=velocities[idx],
        goal=goal[idx],
        command=commands.positions[idx],
        state_age_s=age[idx],
        dropped=dropped,
        command_index=idx.astype(np.int64),
    )


def split_segments(
    spec: RobotSpec, steps: AlignedSteps, max_gap_periods: float
) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """Half-open [start, end) row ranges of continuous rollouts, and why each boundary was cut."""
    n = len(steps)
    if n == 0:
        return [], {}
    period = spec.control_period
    dt = np.diff(steps.time_ns) * 1e-9
    hole = np.diff(steps.command_index) > 1
    gap = dt > max_gap_periods * period
    goal_change = np.any(np.abs(np.diff(steps.goal, axis=0)) > _GOAL_CHANGE, axis=-1)
    speed = np.array([j.velocity_limit for j in spec.joints])
    allowed = _JUMP_FACTOR * speed * np.maximum(dt, period)[:, None] + _JUMP_SLACK_RAD
    jump = np.any(np.abs(np.diff(steps.joint_positions, axis=0)) > allowed, axis=-1)
    reasons: dict[str, int] = {}
    cut = np.zeros(n - 1, dtype=bool)
    for reason, mask in (
        ("dropped_step", hole),
        ("gap", gap),
        ("goal_change", goal_change),
        ("state_jump", jump),
    ):
        newly = mask & ~cut
        if newly.any():
            reasons[reason] = int(newly.sum())
        cut |= mask
    bounds = np.concatenate([[0], np.flatnonzero(cut) + 1, [n]])
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)], reasons
