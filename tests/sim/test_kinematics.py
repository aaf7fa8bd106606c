"""Forward kinematics for relabelling: agrees with the simulator and with the arm2 closed form."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from mpo_ros_sim.kinematics import end_effector_positions

from mpo_ros.contract.spec import RobotSpec, load_spec
from mpo_ros.errors import ContractError


@pytest.mark.parametrize("env_id", ["mpo_ros_sim:Arm2Reach-v0", "mpo_ros_sim:Arm6Reach-v0"])
def test_kinematics_matches_the_env_end_effector(env_id: str) -> None:
    env = gym.make(env_id, randomize="train")
    spec = env.unwrapped.robot_spec
    env.reset(seed=0)
    joint_positions, ee_positions = [], []
    for _ in range(30):
        info = env.step(env.action_space.sample())[4]
        joint_positions.append(env.unwrapped.sim.joint_positions)
        ee_positions.append(info["ee_position"])
    env.close()
    computed = end_effector_positions(spec, np.array(joint_positions))
    assert computed.shape == (30, spec.task.goal_dim)
    np.testing.assert_allclose(computed, np.array(ee_positions), atol=1e-10)


def test_arm2_closed_form() -> None:
    spec = load_spec("arm2")
    q = np.random.default_rng(0).uniform(-2, 2, size=(50, 2))
    expected = np.stack(
        [
            0.3 * np.cos(q[:, 0]) + 0.25 * np.cos(q[:, 0] + q[:, 1]),
            0.3 * np.sin(q[:, 0]) + 0.25 * np.sin(q[:, 0] + q[:, 1]),
        ],
        axis=-1,
    )
    np.testing.assert_allclose(end_effector_positions(spec, q), expected, atol=1e-12)
    np.testing.assert_allclose(end_effector_positions(spec, q[0]), expected[0], atol=1e-12)


def test_spec_from_onnx_metadata_finds_the_shipped_mjcf() -> None:
    spec = RobotSpec.from_json(load_spec("arm6").to_json())  # no source folder, as read from ONNX
    assert end_effector_positions(spec, np.zeros((1, 6))).shape == (1, 3)


def test_bad_joint_arrays_are_refused() -> None:
    spec = load_spec("arm2")
    with pytest.raises(ContractError, match=r"shape \[T, 2\]"):
        end_effector_positions(spec, np.zeros((4, 3)))
    with pytest.raises(ContractError, match="NaN"):
        end_effector_positions(spec, np.array([[0.0, np.nan]]))
