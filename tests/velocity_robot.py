"""A velocity-controlled robot for the tests: arm2's geometry with <velocity> servos ("arm2v").

Written by the tests into a temp folder (no shipped robot is velocity-controlled). The contract's joint
limits are narrower than the MJCF's ranges, so MuJoCo's own joint limits cannot hide a missing braking
bound: a test that drives the joints into the contract's limits fails unless the contract's mapping
stops them there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# Velocity servos: torque = kv (command - qdot), saturated at the motor's torque. The ctrlrange covers
# the contract's velocity_limit, so MuJoCo never clips a command the contract allows.
MJCF = """<mujoco model="arm2v">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.002" integrator="implicitfast" gravity="0 0 -9.81"/>
  <default>
    <joint type="hinge" axis="0 0 1" damping="0.05" frictionloss="0.002" armature="0.005"/>
    <geom type="capsule" contype="0" conaffinity="0" density="0"/>
  </default>
  <worldbody>
    <body name="base">
      <geom name="base" type="cylinder" size="0.045 0.025" mass="2.0"/>
      <body name="upper_arm" pos="0 0 0.03">
        <joint name="shoulder" range="-2.2 2.2"/>
        <geom name="upper_arm" fromto="0 0 0 0.3 0 0" size="0.02" mass="0.6"/>
        <body name="forearm" pos="0.3 0 0">
          <joint name="elbow" range="-2.6 2.6"/>
          <geom name="forearm" fromto="0 0 0 0.25 0 0" size="0.017" mass="0.35"/>
          <site name="end_effector" pos="0.25 0 0"/>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    <velocity name="shoulder" joint="shoulder" kv="6" ctrlrange="-3 3" forcerange="-12 12"/>
    <velocity name="elbow" joint="elbow" kv="3" ctrlrange="-3.5 3.5" forcerange="-6 6"/>
  </actuator>
</mujoco>
"""

# 50 Hz, acceleration limit 20 rad/s^2 -> max_delta 0.4 rad/s per step.
CONTRACT: dict[str, Any] = {
    "name": "arm2v",
    "mjcf": "arm2v.xml",
    "end_effector": "end_effector",
    "control_rate_hz": 50.0,
    "physics_substeps": 10,
    "command_interface": "velocity",
    "observation": ["joint_positions", "joint_velocities", "last_action", "goal"],
    "joints": [
        {
            "name": "shoulder",
            "lower": -1.6,
            "upper": 0.4,
            "velocity_limit": 3.0,
            "default": -0.7,
            "action_scale": 2.5,
            "max_delta": 0.4,
        },
        {
            "name": "elbow",
            "lower": 0.3,
            "upper": 2.4,
            "velocity_limit": 3.5,
            "default": 1.5,
            "action_scale": 3.0,
            "max_delta": 0.4,
        },
    ],
    "task": {
        "name": "reach",
        "goal_low": [0.2, -0.25],
        "goal_high": [0.45, 0.25],
        "success_threshold": 0.03,
        "episode_seconds": 1.5,
        "params": {
            "distance_weight": 1.0,
            "precision_weight": 1.0,
            "precision_scale": 0.05,
            "action_rate_weight": 0.2,
            "success_bonus": 0.5,
        },
    },
}


def write_velocity_robot(folder: Path, **changes: Any) -> Path:
    """Write arm2v.xml and arm2v.yaml (top-level keys overridden by ``changes``) into ``folder``; return the
    YAML's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "arm2v.xml").write_text(MJCF)
    path = folder / "arm2v.yaml"
    path.write_text(yaml.safe_dump({**CONTRACT, **changes}, sort_keys=False))
    return path


# The ROS test's robot: wide contract limits for the shoulder, so the arm is still moving when the node is
# deactivated.
ROS_TEST_SHOULDER = {"name": "shoulder", "lower": -2.1, "upper": 2.1, "velocity_limit": 3.0, "default": -0.7,
                     "action_scale": 2.5, "max_delta": 0.4}  # fmt: skip
ROS_TEST_ELBOW = {"name": "elbow", "lower": 0.3, "upper": 2.4, "velocity_limit": 3.5, "default": 1.5,
                  "action_scale": 3.0, "max_delta": 0.4}  # fmt: skip


def export_ros_test_policy(folder: Path) -> tuple[Path, Path]:
    """Write the ROS test's velocity robot into ``folder`` and export a constant-action policy for it
    (shoulder at 0.4 * 2.5 = 1 rad/s, elbow still); return (contract YAML, policy). Needs torch."""
    import numpy as np
    import torch

    from mpo_ros.contract.observation import observation_size
    from mpo_ros.contract.spec import load_spec
    from mpo_ros.training.export import export_module

    spec_path = write_velocity_robot(folder, joints=[ROS_TEST_SHOULDER, ROS_TEST_ELBOW])
    spec = load_spec(spec_path)

    class Constant(torch.nn.Module):
        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            return observations[:, :1] * 0.0 + torch.tensor([0.4, 0.0], dtype=observations.dtype)

    policy = folder / "arm2v.onnx"
    parity = np.random.default_rng(0).normal(size=(1000, observation_size(spec)))
    export_module(Constant(), observation_size(spec), 2, policy, robot_spec=spec, parity_observations=parity)
    return spec_path, policy


if __name__ == "__main__":  # `make test-jazzy`: python tests/velocity_robot.py OUT_DIR
    import sys

    print(*export_ros_test_policy(Path(sys.argv[1])))
