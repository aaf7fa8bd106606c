"""Record an excitation run of a simulated robot straight into a rosbag2 file, without ROS.

The bag holds what `mpo-ros excite` records on a robot: /joint_states (measured, at each control
step) and the position commands (Float64MultiArray, contract order, half a millisecond after the
state they answer). The commands are the excitation plan through the contract's limit and slew
filter (`limit_command`, the function the robot's SafetyFilter applies). Tests and the benchmark
use this to make logs of a robot whose true parameters they know, at simulation speed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mpo_ros_sim.randomization import RandomizationProfile, Range
from mpo_ros_sim.robot_sim import RobotSim

from mpo_ros.calibration.logs import LogTopics
from mpo_ros.calibration.signals import ExcitationConfig, ExcitationPlan
from mpo_ros.contract.observation import limit_command
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.data import messages
from mpo_ros.data.recorder import BagRecorder

__all__ = ["record_sim_excitation"]

EPOCH_NS = 1_700_000_000_000_000_000
COMMAND_OFFSET_NS = 500_000


def record_sim_excitation(
    spec: RobotSpec,
    path: str | Path,
    config: ExcitationConfig,
    latency_steps: int = 0,
    position_noise: float = 0.0,
    seed: int = 0,
    topics: LogTopics | None = None,
) -> dict[str, int]:
    """Run the excitation plan on `spec`'s simulator with `latency_steps` of command delay; record it.

    Returns the message count per topic.
    """
    topics = topics or LogTopics()
    profile = RandomizationProfile(
        latency_steps=Range(latency_steps, latency_steps),
        observation_noise_position=Range(position_noise, position_noise),
        name="recording",
    )
    sim = RobotSim(spec, profile, seed=seed)
    sim.randomize(np.random.default_rng(seed))
    sim.reset()
    store = messages.typestore("kilted")
    plan = ExcitationPlan(spec, config, sim.joint_positions)
    period_ns = round(spec.control_period * 1e9)
    steps = int(np.ceil(plan.total_seconds / spec.control_period))
    targets = plan.targets(np.arange(steps) * spec.control_period)
    command = sim.joint_positions
    bag = BagRecorder(path)
    with bag:
        for k in range(steps):
            t_ns = EPOCH_NS + k * period_ns
            positions, velocities = sim.measure()
            bag.write(
                topics.joint_states,
                messages.joint_state(store, t_ns, spec.joint_names, positions, velocities),
                t_ns,
            )
            command = limit_command(spec, command, targets[k])
            bag.write(topics.command, messages.float64_multi_array(store, command), t_ns + COMMAND_OFFSET_NS)
            sim.apply_command(command)
            sim.step()
    sim.close()
    return dict(bag.message_counts)
