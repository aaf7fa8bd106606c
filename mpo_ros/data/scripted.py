"""Record behaviour data from the simulator with a noisy scripted controller, as a robot would log it.

A proportional controller in joint space drives the simulated robot toward the inverse-kinematics
solution of each goal, with Gaussian noise on its targets; its commands go through the contract
(observation.policy_command: target, filter, limits) exactly like a policy's. Every control step the bag receives what
`ros2 bag record` would see on a robot: /joint_states (measured), the command topic
(Float64MultiArray or JointTrajectory) and the goal (PointStamped, republished now and then). The
simulator's own rewards are returned beside the bag, so the converter's relabelling can be checked
against them, and the data serve as the "behaviour" baseline of offline training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpo_ros.contract.observation import (
    command_to_action,
    default_command,
    executed_action,
    observation_names,
    policy_command,
    unfilter_commands,
)
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.data import messages
from mpo_ros.data.recorder import BagRecorder

__all__ = ["ScriptedRollouts", "inverse_kinematics", "record_scripted_bag"]

EPOCH_NS = 1_700_000_000_000_000_000  # bag times start here (a plausible wall-clock epoch)


@dataclass
class ScriptedRollouts:
    """What the gym environment returned while the bag was recorded (one row per control step)."""

    rewards: np.ndarray  # [E, T] the environment's rewards
    success: np.ndarray  # [E, T] info["is_success"] after each step
    observations: np.ndarray  # [E, T, O] the observation each action was chosen from
    actions: np.ndarray  # [E, T, D] the actions given to env.step
    goals: np.ndarray  # [E, goal_dim]
    command_times_ns: np.ndarray  # [E, T]

    @property
    def final_success_rate(self) -> float:
        return float(np.mean(self.success[:, -1]))

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.rewards.sum(axis=1)))


def inverse_kinematics(spec: RobotSpec, goal: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Joint positions (contract order) putting the end effector at `goal`, by damped least squares."""
    from mpo_ros_sim.kinematics import end_effector_positions

    lower = np.array([j.lower for j in spec.joints])
    upper = np.array([j.upper for j in spec.joints])
    q = spec.joint_arrays.default + 0.3  # off the straight-arm singularity
    step = 1e-5
    for _ in range(iterations):
        probe = np.vstack([q, q + step * np.eye(len(q))])
        ee = end_effector_positions(spec, probe)
        error = goal - ee[0]
        if np.linalg.norm(error) < 1e-5:
            break
        jacobian = ((ee[1:] - ee[0]) / step).T  # [goal_dim, n]
        damping = 1e-3 * np.eye(len(goal))
        q = np.clip(q + jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping, error), lower, upper)
    return q


def record_scripted_bag(
    spec: RobotSpec | str,
    path: str | Path,
    storage: str = "mcap",
    episodes: int = 10,
    seed: int = 0,
    noise: float = 0.1,
    gain: float = 0.25,
    command_type: str = "float64_multi_array",
    randomize: str = "none",
    command_topic: str = "/forward_position_controller/commands",
    goal_topic: str = "/goal",
    joint_states_topic: str = "/joint_states",
    gap_s: float = 0.5,
) -> ScriptedRollouts:
    """Run `episodes` episodes of the robot's reach environment and record them at `path`.

    `noise` is the standard deviation of the controller's target noise in action units; `gain` the
    fraction of the remaining joint error commanded per step. The controller applies the contract's
    slew limit itself, so the action it gives the environment is exactly the one the logged command
    maps back to: the converter's relabelled rewards must then equal the environment's.
    """
    from mpo_ros_sim.reach_env import RobotReachEnv

    robot = spec if isinstance(spec, RobotSpec) else None
    env = RobotReachEnv(robot if robot is not None else str(spec), randomize=randomize)
    spec = env.robot_spec
    spec.require_position_interface(
        "the scripted recorder",
        "It chases inverse-kinematics poses with position commands; record a velocity robot by serving a "
        "policy on `mpo-ros sim-robot --record`.",
    )
    rng = np.random.default_rng(seed)
    store = messages.typestore("kilted")
    period_ns = round(spec.control_period * 1e9)
    steps, obs_dim = spec.episode_steps, env.observation_space.shape[0]
    names = observation_names(spec)
    position_cols = [names.index(f"joint_positions/{j}") for j in spec.joint_names]
    velocity_cols = [names.index(f"joint_velocities/{j}") for j in spec.joint_names]
    default = default_command(spec)
    rollouts = ScriptedRollouts(
        rewards=np.zeros((episodes, steps)),
        success=np.zeros((episodes, steps), dtype=bool),
        observations=np.zeros((episodes, steps, obs_dim), dtype=np.float32),
        actions=np.zeros((episodes, steps, spec.action_dim)),
        goals=np.zeros((episodes, spec.task.goal_dim)),
        command_times_ns=np.zeros((episodes, steps), dtype=np.int64),
    )
    t_ns = EPOCH_NS
    try:
        with BagRecorder(path, storage=storage) as bag:
            for episode in range(episodes):
                obs, info = env.reset(seed=seed * 100_003 + episode)
                goal = env.goal
                rollouts.goals[episode] = goal
                target = inverse_kinematics(spec, goal)
                command = info["command"]
                for k in range(steps):
                    if k % 25 == 0:  # goal publishers latch or repeat; the converter holds the last one
                        bag.write(goal_topic, messages.point_stamped(store, t_ns, goal), t_ns)
                    positions = obs[position_cols].astype(np.float64) + default
                    velocities = obs[velocity_cols].astype(np.float64)
                    state = messages.joint_state(store, t_ns, spec.joint_names, positions, velocities)
                    bag.write(joint_states_topic, state, t_ns + 200_000)
                    wanted = positions + gain * (target - positions)
                    noisy = command_to_action(spec, wanted) + rng.normal(0.0, noise, spec.action_dim)
                    raw = np.clip(noisy, -1, 1)
                    limited = policy_command(spec, command, raw)
                    if spec.filter_alpha == 1.0:
                        # What the robot executes is the limited command; giving its action to the env
                        # makes the env's command (and last_action) exactly the logged one.
                        action = step_action = executed_action(spec, limited)
                    else:
                        # With the contract's filter the env filters too: the raw action reproduces the
                        # logged command; the recorded action is what bag2data recovers from it.
                        step_action = raw
                        action = command_to_action(spec, unfilter_commands(spec, command, limited))
                    command_ns = t_ns + 1_000_000  # the controller answers 1 ms after the state
                    rollouts.observations[episode, k] = obs
                    rollouts.actions[episode, k] = action
                    obs, reward, _terminated, _truncated, info = env.step(step_action)
                    command = info["command"]
                    if command_type == "joint_trajectory":
                        message = messages.joint_trajectory(
                            store, command_ns, spec.joint_names, command, spec.control_period
                        )
                    else:
                        message = messages.float64_multi_array(store, command)
                    bag.write(command_topic, message, command_ns)
                    rollouts.rewards[episode, k] = reward
                    rollouts.success[episode, k] = info["is_success"]
                    rollouts.command_times_ns[episode, k] = command_ns
                    t_ns += period_ns
                t_ns += round(gap_s * 1e9)
    finally:
        env.close()
    return rollouts
