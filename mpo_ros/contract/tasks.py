"""Task maths: goal sampling, reward, success. Pure numpy over arrays, nothing else.

The simulator calls these per step and the bag converter calls them over a whole recording to
relabel logged transitions, so they depend only on arrays and the contract (`RobotSpec.task`), never
on MuJoCo, torch or ROS. Everything is vectorised over leading batch dimensions (`...`): positions
and goals have last dimension `goal_dim`, actions `action_dim`.

The one task so far is ``reach``: bring the end-effector site to a goal position. Its reward is

    r = - distance_weight * d
        + precision_weight * exp(-(d / precision_scale)^2)
        - action_rate_weight * |a_t - a_{t-1}|^2
        + success_bonus * [d < success_threshold]

with d the end-effector-to-goal distance (m). The linear term pulls from anywhere in the workspace,
the Gaussian bowl gives a gradient that does not fade near the goal (where -d alone is flat
relative to the critic's noise), the action-rate term asks for smooth commands (what a real gearbox
wants), and the bonus marks the success region. Weights live in the spec's ``task.params``.
"""

from __future__ import annotations

import numpy as np

from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import SpecError

__all__ = [
    "REACH_PARAMS",
    "distance",
    "goal_box",
    "reward",
    "sample_goal",
    "success",
]

# Reward weights of the reach task and their defaults (a spec may override any of them).
REACH_PARAMS: dict[str, float] = {
    "distance_weight": 1.0,
    "precision_weight": 1.0,
    "precision_scale": 0.05,
    "action_rate_weight": 0.05,
    "success_bonus": 0.5,
}

_TASKS = ("reach",)


def _reach_params(spec: RobotSpec) -> dict[str, float]:
    if spec.task.name not in _TASKS:
        raise SpecError(f"task '{spec.task.name}' is not implemented; known tasks: {list(_TASKS)}")
    unknown = sorted(set(spec.task.params) - set(REACH_PARAMS))
    if unknown:
        raise SpecError(
            f"robot '{spec.name}': unknown reach parameter(s) {unknown} under task.params; "
            f"valid: {sorted(REACH_PARAMS)}"
        )
    params = {**REACH_PARAMS, **spec.task.params}
    if params["precision_scale"] <= 0:
        raise SpecError(f"robot '{spec.name}': task.params.precision_scale must be > 0")
    return params


def goal_box(spec: RobotSpec, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The goal box (low, high), optionally scaled about its centre (domain randomisation)."""
    low = np.asarray(spec.task.goal_low, dtype=np.float64)
    high = np.asarray(spec.task.goal_high, dtype=np.float64)
    centre, half = (low + high) / 2.0, (high - low) / 2.0 * float(scale)
    return centre - half, centre + half


def sample_goal(
    spec: RobotSpec,
    rng: np.random.Generator,
    size: int | tuple[int, ...] | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """Uniform goal(s) in the (scaled) goal box: shape [goal_dim] or [*size, goal_dim]."""
    low, high = goal_box(spec, scale)
    shape = (spec.task.goal_dim,) if size is None else (*np.atleast_1d(size), spec.task.goal_dim)
    return rng.uniform(low, high, size=shape)


def distance(ee_position: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Euclidean end-effector-to-goal distance over the last axis (m)."""
    diff = np.asarray(ee_position, dtype=np.float64) - np.asarray(goal, dtype=np.float64)
    return np.sqrt(np.sum(diff * diff, axis=-1))


def success(spec: RobotSpec, ee_position: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """True where the end effector is within the task's success threshold of the goal."""
    return distance(ee_position, goal) < spec.task.success_threshold


def reward(
    spec: RobotSpec,
    ee_position: np.ndarray,
    goal: np.ndarray,
    action: np.ndarray,
    previous_action: np.ndarray,
) -> np.ndarray:
    """Dense reach reward (see the module docstring); float64, shape of the batch dimensions."""
    params = _reach_params(spec)
    d = distance(ee_position, goal)
    rate = np.asarray(action, dtype=np.float64) - np.asarray(previous_action, dtype=np.float64)
    return (
        -params["distance_weight"] * d
        + params["precision_weight"] * np.exp(-np.square(d / params["precision_scale"]))
        - params["action_rate_weight"] * np.sum(rate * rate, axis=-1)
        + params["success_bonus"] * (d < spec.task.success_threshold)
    )
