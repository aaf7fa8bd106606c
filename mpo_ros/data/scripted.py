"""Record behaviour data from the simulator with a noisy scripted controller, as a robot would log it.

A proportional controller in joint space drives the simulated robot toward the inverse-kinematics
solution of each goal, with Gaussian noise on its targets; its commands go through the contract
(action_to_command, limit_command) exactly like a policy's. Every control step the bag receives what
`ros2 bag record` would see on a robot: /joint_states (measured), the command topic
(Float64MultiArray or JointTrajectory) and the goal (PointStamped, republished now and then). The
simulator's own rewards are returned beside the bag, so the converter's relabelling can be checked
against them, and the data serve as the "behaviour" baseline of offline training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpo_ros import tasks
from mpo_ros.data import messages
from mpo_ros.data.recorder import BagRecorder
from mpo_ros.observation import action_to_command, command_to_action, default_command, limit_command
from mpo_ros.spec import RobotSpec

__all__ = ["ScriptedRollouts", "inverse_kinematics", "record_scripted_bag"]

EPOCH_NS = 1_700_000_000_000_000_000  # bag times start here (a plausible wall-clock epoch)


@dataclass
class ScriptedRollouts:
    """What the simulator computed while the bag was recorded (one row per control step)."""

    rewards: np.ndarray  # [E, T] tasks.reward with the true end-effector position after the step
    success: np.ndarray  # [E, T]
    goals: np.ndarray  # [E, goal_dim]
    command_times_ns: np.ndarray  # [E, T]

    @property
    def final_success_rate(self) -> float:
        return float(np.mean(self.success[:, -1]))


def inverse_kinematics(spec: RobotSpec, goal: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Joint positions (contract order) putting the end effector at `goal`, by damped least squares."""
    from mpo_ros_sim.kinematics import end_effector_positions

    lower = np.array([j.lower for j in spec.joints])
    upper = np.array([j.upper for j in spec.joints])
    q = default_command(spec) + 0.3  # off the straight-arm singularity
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
    spec: RobotSpec,
    path: str | Path,
    storage: str = "mcap",
    episodes: int = 10,
    seed: int = 0,
    noise: float = 0.3,
    gain: float = 0.25,
    command_type: str = "float64_multi_array",
    command_topic: str = "/forward_position_controller/commands",
    goal_topic: str = "/goal",
    joint_states_topic: str = "/joint_states",
    gap_s: float = 0.5,
) -> ScriptedRollouts:
    """Drive the sim for `episodes` episodes of the task's length and record the bag at `path`.

    `noise` is the standard deviation of the controller's target noise in action units; `gain` the
    fraction of the remaining joint error commanded per step.
    """
    from mpo_ros_sim.robot_sim import RobotSim

    rng = np.random.default_rng(seed)
    sim = RobotSim(spec, seed=seed)
    store = messages.typestore("kilted")
    period_ns = round(spec.control_period * 1e9)
    steps = spec.episode_steps
    rewards = np.zeros((episodes, steps))
    success = np.zeros((episodes, steps), dtype=bool)
    goals = np.zeros((episodes, spec.task.goal_dim))
    times = np.zeros((episodes, steps), dtype=np.int64)
    lower = np.array([j.lower for j in spec.joints])
    upper = np.array([j.upper for j in spec.joints])
    t_ns = EPOCH_NS
    with BagRecorder(path, storage=storage) as bag:
        for episode in range(episodes):
            goal = tasks.sample_goal(spec, rng)
            goals[episode] = goal
            target = inverse_kinematics(spec, goal)
            start = np.clip(default_command(spec) + rng.uniform(-0.3, 0.3, spec.num_joints), lower, upper)
            sim.reset(start)
            previous_command = start.copy()
            previous_action = np.zeros(spec.action_dim)
            for k in range(steps):
                if k % 25 == 0:  # goal publishers often latch or repeat; the converter holds the last
                    bag.write(goal_topic, messages.point_stamped(store, t_ns, goal), t_ns)
                positions, velocities = sim.measure()
                bag.write(
                    joint_states_topic,
                    messages.joint_state(store, t_ns, spec.joint_names, positions, velocities),
                    t_ns + 200_000,
                )
                wanted = positions + gain * (target - positions)
                action = np.clip(
                    command_to_action(spec, wanted) + rng.normal(0.0, noise, spec.action_dim), -1, 1
                )
                command = limit_command(spec, previous_command, action_to_command(spec, action))
                command_ns = t_ns + 1_000_000  # the controller answers 1 ms after the state arrived
                if command_type == "joint_trajectory":
                    message = messages.joint_trajectory(
                        store, command_ns, spec.joint_names, command, spec.control_period
                    )
                else:
                    message = messages.float64_multi_array(store, command)
                bag.write(command_topic, message, command_ns)
                sim.apply_command(command)
                sim.step()
                applied = command_to_action(spec, command)
                rewards[episode, k] = tasks.reward(spec, sim.ee_position, goal, applied, previous_action)
                success[episode, k] = bool(tasks.success(spec, sim.ee_position, goal))
                times[episode, k] = command_ns
                previous_command, previous_action = command, applied
                t_ns += period_ns
            t_ns += round(gap_s * 1e9)
    sim.close()
    return ScriptedRollouts(rewards, success, goals, times)
