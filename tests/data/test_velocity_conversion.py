"""Bag conversion under a velocity contract: logged velocity commands become the policy's actions and the
observations are rebuilt exactly as the simulator built them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mpo_ros_sim.reach_env import RobotReachEnv
from velocity_robot import write_velocity_robot

from mpo_ros.contract.spec import load_spec
from mpo_ros.data.convert import Bag2DataConfig, _with_command_topic, build_transitions


def test_logged_velocity_commands_become_actions_and_observations(tmp_path: Path) -> None:
    spec = load_spec(write_velocity_robot(tmp_path))
    env = RobotReachEnv(spec)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    observations, actions, positions, velocities, commands = [obs], [], [], [], []
    action = np.zeros(2)
    for _ in range(40):
        # What a recording holds at each command: the latest joint state, the command sent.
        measured_positions, measured_velocities = env.sim.measure()
        # A random walk of velocities, steps of at most 0.15 rad/s: the slew limit (0.4) stays inactive.
        action = np.clip(action + rng.uniform(-0.05, 0.05, 2), -0.5, 0.5)
        obs, *_ = env.step(action)
        actions.append(action)
        positions.append(measured_positions)
        velocities.append(measured_velocities)
        commands.append(env.unwrapped._command)
        observations.append(obs)
    count = len(commands)
    steps = SimpleNamespace(
        joint_positions=np.array(positions),
        joint_velocities=np.array(velocities),
        command=np.array(commands),
        goal=np.repeat(env.goal[None], count, axis=0),
        time_ns=np.arange(count, dtype=np.int64) * 20_000_000,
    )
    steps.__len__ = lambda: count  # type: ignore[method-assign]
    arrays, lengths, out_of_range = build_transitions(spec, _Steps(steps, count), [(0, count)])
    assert lengths == [count - 1] and out_of_range == 0
    # Velocities (rad/s) back to actions: command / action_scale, the env's actions exactly.
    np.testing.assert_allclose(arrays["actions"], np.array(actions[:-1]), atol=1e-12)
    # Observations: started at rest (last action 0), then the executed actions, as the env built them.
    np.testing.assert_allclose(arrays["observations"], np.array(observations[:-2]), atol=1e-6)
    np.testing.assert_array_equal(arrays["observations"][0, 4:6], [0.0, 0.0])


class _Steps:
    """The aligned steps `build_transitions` reads (align.py's result has these fields)."""

    def __init__(self, data: SimpleNamespace, count: int) -> None:
        self.__dict__.update(vars(data))
        self._count = count

    def __len__(self) -> int:
        return self._count


def test_the_command_topic_follows_the_interface(tmp_path: Path) -> None:
    spec = load_spec(write_velocity_robot(tmp_path))
    resolved = _with_command_topic(Bag2DataConfig(), spec)
    assert resolved.command_topic == "/forward_velocity_controller/commands"
    given = _with_command_topic(Bag2DataConfig(command_topic="/my/commands"), spec)
    assert given.command_topic == "/my/commands"
    assert _with_command_topic(Bag2DataConfig(), load_spec("arm2")).command_topic == (
        "/forward_position_controller/commands"
    )
