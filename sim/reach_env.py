"""Gymnasium reach environment built from a robot contract.

The environment is a thin shell: the contract's own functions turn actions into commands
(`observation.policy_command`: target, the contract's action filter, limits; exactly as on the robot),
`RobotSim` moves the robot, `observation.build_observation` builds what the policy sees and
`mpo_ros.contract.tasks` scores it. Episodes end by truncation after `spec.episode_steps` control steps;
reaching the goal does not terminate (the policy should stay there).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from mpo_ros_sim.randomization import RandomizationProfile, load_profile
from mpo_ros_sim.robot_sim import RobotSim

from mpo_ros.contract import observation, tasks
from mpo_ros.contract.spec import RobotSpec, load_spec

__all__ = ["RobotReachEnv"]


class RobotReachEnv(gym.Env):
    """Reach a goal position with the end effector of a position- or velocity-controlled robot.

    Under a velocity contract the action -> command step is bounded by the measured joint positions
    (the braking bound), exactly as on the robot, and episodes start at rest (command 0).

    Args:
        robot: a shipped robot name ('arm2', 'arm6'), a spec YAML path, or a RobotSpec.
        randomize: 'none', 'train', 'heldout', a profile YAML path, or a RandomizationProfile.
        render_mode: None or 'rgb_array' (offscreen; set MUJOCO_GL=osmesa or egl when headless).
        render_size: (height, width) of rendered frames.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 50}  # noqa: RUF012

    def __init__(
        self,
        robot: str | RobotSpec = "arm2",
        randomize: str | RandomizationProfile | None = "none",
        render_mode: str | None = None,
        render_size: tuple[int, int] = (480, 640),
    ):
        self.robot_spec = robot if isinstance(robot, RobotSpec) else load_spec(robot)
        spec = self.robot_spec
        profile = randomize if isinstance(randomize, RandomizationProfile) else load_profile(randomize)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.render_size = render_size
        self.metadata = {**self.metadata, "render_fps": round(spec.control_rate_hz)}
        self.sim = RobotSim(spec, profile)
        obs_dim = observation.observation_size(spec)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(spec.action_dim,), dtype=np.float32)
        self._goal_marker = mujoco.mj_name2id(self.sim.model, mujoco.mjtObj.mjOBJ_BODY, "goal_marker")
        self._renderer: mujoco.Renderer | None = None
        self._goal = np.zeros(spec.task.goal_dim)
        self._command = observation.default_command(spec)
        self._positions = spec.joint_arrays.default.copy()  # the latest measured joint positions
        self._last_action = np.zeros(spec.action_dim)
        self._steps = 0

    @property
    def goal(self) -> np.ndarray:
        return self._goal.copy()

    # --- gymnasium API -------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """New episode: fresh dynamics draw, start pose and goal.

        options: {'goal': [goal_dim], 'joint_positions': [n]} pin the goal / start pose (evaluation).
        """
        super().reset(seed=seed)
        options = options or {}
        spec, rng = self.robot_spec, self.np_random
        dynamics = self.sim.randomize(rng)
        self.sim.noise_rng = np.random.default_rng(rng.integers(2**63))
        if "joint_positions" in options:
            start = np.asarray(options["joint_positions"], dtype=np.float64)
        else:
            start = (
                spec.joint_arrays.default.copy()
            )  # the default pose (a velocity contract's rest command is 0)
            if dynamics.initial_joint_noise > 0:
                start = start + rng.normal(0.0, dynamics.initial_joint_noise, spec.num_joints)
            start = np.clip(start, [j.lower for j in spec.joints], [j.upper for j in spec.joints])
        self.sim.reset(start)
        if "goal" in options:
            self._goal = np.asarray(options["goal"], dtype=np.float64).reshape(spec.task.goal_dim)
        else:
            self._goal = tasks.sample_goal(spec, rng, scale=dynamics.goal_scale)
        # The robot rests at the start pose: position servos hold it (that is the previous command),
        # velocity servos are at 0; its action is the last action.
        self._command = observation.start_command(spec, self.sim.joint_positions)
        self._last_action = observation.executed_action(spec, self._command)
        self._steps = 0
        self._place_goal_marker()
        positions, velocities = self.sim.measure()
        self._positions = positions
        obs = observation.build_observation(spec, positions, velocities, self._last_action, self._goal)
        return obs, self._info(self.sim.ee_position)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        spec = self.robot_spec
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (spec.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be {spec.action_dim} finite numbers in [-1, 1], got {action}")
        action = np.clip(action, -1.0, 1.0)
        # Measured positions, as the robot's node has them from /joint_states (velocity contracts only).
        command = observation.policy_command(spec, self._command, action, self._positions)
        self.sim.apply_command(command)
        self.sim.step()
        self._command = command
        positions, velocities = self.sim.measure()
        self._positions = positions
        ee_position = self.sim.ee_position
        executed = observation.executed_action(spec, command)
        obs = observation.build_observation(spec, positions, velocities, executed, self._goal)
        reward = float(tasks.reward(spec, ee_position, self._goal, executed, self._last_action))
        self._last_action = executed
        self._steps += 1
        truncated = self._steps >= spec.episode_steps
        return obs, reward, False, truncated, self._info(ee_position)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            height, width = self.render_size
            self._renderer = mujoco.Renderer(self.sim.model, height=height, width=width)
        self.sim.sync_kinematics()
        camera = 0 if self.sim.model.ncam > 0 else -1
        self._renderer.update_scene(self.sim.data, camera=camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.sim.close()

    # --- internals -----------------------------------------------------------------------------
    def _info(self, ee_position: np.ndarray) -> dict[str, Any]:
        dist = float(tasks.distance(ee_position, self._goal))
        return {
            "is_success": bool(dist < self.robot_spec.task.success_threshold),
            "distance": dist,
            "ee_position": ee_position,
            "command": self._command.copy(),
        }

    def _place_goal_marker(self) -> None:
        if self._goal_marker < 0:
            return
        mocap = self.sim.model.body_mocapid[self._goal_marker]
        if mocap >= 0:
            position = self.sim.data.mocap_pos[mocap]
            position[: self.robot_spec.task.goal_dim] = self._goal
