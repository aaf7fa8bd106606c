"""The gymnasium reach environments: API conformance, contract wiring, truncation, rendering."""

from __future__ import annotations

import gymnasium as gym
import mpo_ros_sim
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from mpo_ros.contract import observation, tasks
from mpo_ros.contract.spec import RobotSpec

ENV_IDS = ["mpo_ros_sim:Arm2Reach-v0", "mpo_ros_sim:Arm6Reach-v0"]


@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value is.*infinity")
@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("randomize", ["none", "heldout"])
def test_env_passes_the_gymnasium_checker(env_id: str, randomize: str) -> None:
    env = gym.make(env_id, randomize=randomize, render_mode="rgb_array")
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_wires_the_contract(env_id: str) -> None:
    env = gym.make(env_id)
    spec: RobotSpec = env.unwrapped.robot_spec
    try:
        obs, info = env.reset(seed=3)
        assert obs.shape == (observation.observation_size(spec),)
        assert env.action_space.shape == (spec.action_dim,)
        goal = env.unwrapped.goal
        low, high = tasks.goal_box(spec)
        assert np.all(goal >= low) and np.all(goal <= high)
        # The goal block of the observation is the goal; the start is the default pose at rest.
        names = observation.observation_names(spec)
        goal_index = [i for i, n in enumerate(names) if n.startswith("goal/")]
        np.testing.assert_allclose(obs[goal_index], goal, rtol=1e-6)
        assert np.allclose(info["command"], observation.default_command(spec))
        action = np.full(spec.action_dim, 0.9, dtype=np.float32)
        expected = observation.limit_command(
            spec, observation.default_command(spec), observation.action_to_command(spec, action)
        )
        obs, reward, terminated, truncated, info = env.step(action)
        np.testing.assert_allclose(info["command"], expected)
        # last_action is the action the robot executed (the limited command mapped back to [-1, 1]),
        # so simulation, the robot node and observations rebuilt from bags agree.
        executed = observation.executed_action(spec, expected)
        assert np.all(np.abs(executed) < np.abs(action))  # the slew limit bit on this first step
        last_action = [i for i, n in enumerate(names) if n.startswith("last_action/")]
        np.testing.assert_allclose(obs[last_action], executed, rtol=1e-6)
        assert set(info) >= {"is_success", "distance", "ee_position", "command"}
        assert isinstance(info["is_success"], bool)
        assert info["distance"] == pytest.approx(float(tasks.distance(info["ee_position"], goal)))
        assert reward == pytest.approx(
            float(tasks.reward(spec, info["ee_position"], goal, executed, np.zeros(spec.action_dim)))
        )
        assert not terminated and not truncated
    finally:
        env.close()


def test_episode_truncates_at_episode_steps_and_never_terminates() -> None:
    env = gym.make("mpo_ros_sim:Arm2Reach-v0")
    spec = env.unwrapped.robot_spec
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[2:4] for _ in range(spec.episode_steps)]
    env.close()
    assert not any(terminated for terminated, _ in flags)
    assert [truncated for _, truncated in flags] == [False] * (spec.episode_steps - 1) + [True]


def test_reset_options_pin_goal_and_start_pose() -> None:
    env = gym.make("mpo_ros_sim:Arm2Reach-v0").unwrapped
    _, info = env.reset(seed=0, options={"goal": [0.3, 0.1], "joint_positions": [0.5, -0.5]})
    np.testing.assert_allclose(env.goal, [0.3, 0.1])
    np.testing.assert_allclose(env.sim.joint_positions, [0.5, -0.5])
    np.testing.assert_allclose(info["command"], [0.5, -0.5])
    env.close()


def test_bad_actions_are_refused() -> None:
    env = gym.make("mpo_ros_sim:Arm2Reach-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="2 finite numbers"):
        env.step(np.zeros(3))
    env.close()


def test_seeded_episodes_are_identical_under_randomisation() -> None:
    def rollout(seed: int) -> np.ndarray:
        env = gym.make("mpo_ros_sim:Arm6Reach-v0", randomize="train")
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        trace = [obs]
        for _ in range(20):
            trace.append(env.step(env.action_space.sample())[0])
        env.close()
        return np.array(trace)

    np.testing.assert_array_equal(rollout(7), rollout(7))
    assert not np.array_equal(rollout(7), rollout(8))


def test_render_produces_frames_headless() -> None:
    env = gym.make("mpo_ros_sim:Arm2Reach-v0", render_mode="rgb_array", render_size=(96, 128))
    env.reset(seed=0)
    first = env.render()
    for _ in range(10):
        env.step(np.ones(2, dtype=np.float32))
    later = env.render()
    env.close()
    assert first.shape == (96, 128, 3) and first.dtype == np.uint8
    assert first.std() > 0 and not np.array_equal(first, later)


def test_env_id_for_robot() -> None:
    assert mpo_ros_sim.env_id_for_robot("arm2") == "mpo_ros_sim:Arm2Reach-v0"
    with pytest.raises(KeyError, match="known robots"):
        mpo_ros_sim.env_id_for_robot("arm9")


def test_randomized_ids_use_the_training_profile() -> None:
    env = gym.make("mpo_ros_sim:Arm2ReachRandomized-v0")
    assert env.unwrapped.sim.profile is not None and env.unwrapped.sim.profile.name == "train"
    env.close()
    assert gym.make("mpo_ros_sim:Arm2Reach-v0").unwrapped.sim.profile is None


def _arm2_inverse_kinematics(goal: np.ndarray, upper: float = 0.3, fore: float = 0.25) -> np.ndarray:
    """Closed-form IK of the planar 2-link arm, elbow-left branch (the one the action range covers)."""
    x, y = goal
    cos_elbow = (x * x + y * y - upper**2 - fore**2) / (2 * upper * fore)
    elbow = np.arccos(np.clip(cos_elbow, -1.0, 1.0))
    shoulder = np.arctan2(y, x) - np.arctan2(fore * np.sin(elbow), upper + fore * np.cos(elbow))
    return np.array([shoulder, elbow])


@pytest.mark.parametrize("randomize", ["none", "heldout"])
def test_every_arm2_goal_is_reachable_within_the_action_range_and_episode(randomize: str) -> None:
    """An oracle that commands the IK pose succeeds: the task is solvable as specified, also held-out."""
    env = gym.make("mpo_ros_sim:Arm2Reach-v0", randomize=randomize).unwrapped
    spec = env.robot_spec
    successes = []
    for episode in range(20):
        env.reset(seed=episode)
        action = observation.command_to_action(spec, _arm2_inverse_kinematics(env.goal))
        assert np.all(np.abs(action) <= 1.0), (env.goal, action)
        for _ in range(spec.episode_steps):
            info = env.step(action)[4]
        successes.append(info["is_success"])
    env.close()
    assert all(successes)
