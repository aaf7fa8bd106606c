"""Reach task maths on closed-form cases (mpo_ros/contract/tasks.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from mpo_ros.contract import tasks
from mpo_ros.contract.spec import RobotSpec, load_spec
from mpo_ros.errors import SpecError


@pytest.fixture(scope="module")
def arm2() -> RobotSpec:
    return load_spec("arm2")


def _with_params(spec: RobotSpec, **params: float) -> RobotSpec:
    return dataclasses.replace(spec, task=dataclasses.replace(spec.task, params=params))


def test_distance_is_euclidean_over_the_last_axis() -> None:
    assert tasks.distance(np.array([3.0, 4.0]), np.zeros(2)) == pytest.approx(5.0)
    batch = tasks.distance(np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), np.zeros(3))
    np.testing.assert_allclose(batch, [1.0, 2.0])


def test_reward_closed_form(arm2: RobotSpec) -> None:
    spec = _with_params(
        arm2,
        distance_weight=2.0,
        precision_weight=0.5,
        precision_scale=0.1,
        action_rate_weight=0.25,
        success_bonus=3.0,
    )
    goal = np.array([0.3, 0.0])
    zero = np.zeros(2)
    # At the goal, no action change: the whole bowl plus the bonus.
    assert tasks.reward(spec, goal, goal, zero, zero) == pytest.approx(0.5 + 3.0)
    # 0.2 m away (no bonus), action change (1, -1): |da|^2 = 2.
    ee = goal + np.array([0.0, 0.2])
    expected = -2.0 * 0.2 + 0.5 * math.exp(-4.0) - 0.25 * 2.0
    assert tasks.reward(spec, ee, goal, np.array([1.0, -1.0]), zero) == pytest.approx(expected)


def test_reward_is_vectorised_and_decreases_with_distance(arm2: RobotSpec) -> None:
    goal = np.array([0.3, 0.1])
    offsets = np.linspace(0.0, 0.3, 31)
    ee = goal + np.stack([offsets, np.zeros_like(offsets)], axis=-1)
    actions = np.zeros((31, 2))
    rewards = tasks.reward(arm2, ee, goal, actions, actions)
    assert rewards.shape == (31,)
    assert np.all(np.diff(rewards) < 0)


def test_success_uses_the_threshold_strictly(arm2: RobotSpec) -> None:
    threshold = arm2.task.success_threshold
    goal = np.zeros(2)
    ee = np.array([[threshold * 0.99, 0.0], [threshold * 1.01, 0.0]])
    np.testing.assert_array_equal(tasks.success(arm2, ee, goal), [True, False])


def test_sample_goal_is_seeded_and_inside_the_scaled_box(arm2: RobotSpec) -> None:
    first = tasks.sample_goal(arm2, np.random.default_rng(5), size=1000)
    again = tasks.sample_goal(arm2, np.random.default_rng(5), size=1000)
    np.testing.assert_array_equal(first, again)
    low, high = np.array(arm2.task.goal_low), np.array(arm2.task.goal_high)
    assert first.shape == (1000, 2)
    assert np.all(first >= low) and np.all(first <= high)
    wide = tasks.sample_goal(arm2, np.random.default_rng(5), size=1000, scale=1.5)
    wide_low, wide_high = tasks.goal_box(arm2, 1.5)
    np.testing.assert_allclose((wide_low + wide_high) / 2, (low + high) / 2)
    np.testing.assert_allclose(wide_high - wide_low, 1.5 * (high - low))
    assert np.any(wide < low) and np.all(wide >= wide_low) and np.all(wide <= wide_high)
    assert tasks.sample_goal(arm2, np.random.default_rng(0)).shape == (2,)


def test_unknown_reward_parameter_and_task_are_rejected(arm2: RobotSpec) -> None:
    with pytest.raises(SpecError, match=r"unknown reach parameter.*distance_wieght"):
        tasks.reward(
            _with_params(arm2, distance_wieght=1.0), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2)
        )
    other = dataclasses.replace(arm2, task=dataclasses.replace(arm2.task, name="push"))
    with pytest.raises(SpecError, match="task 'push' is not implemented"):
        tasks.reward(other, np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2))
