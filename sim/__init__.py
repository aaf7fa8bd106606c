"""mpo_ros_sim: MuJoCo simulation of robots described by an mpo_ros robot contract.

Two layers: `robot_sim.RobotSim` (physics, actuator and latency model; no gym, reused by the ROS 2
sim node) and `reach_env.RobotReachEnv` (gymnasium). Importing this package registers the
environments, so `gymnasium.make("mpo_ros_sim:Arm2Reach-v0", randomize="train")` works.
"""

from __future__ import annotations

import os

# Headless machines (CI, robots, containers) have no display for GLFW; offscreen rendering then needs
# OSMesa (or EGL). MuJoCo reads this when it is first imported, so set it before anything imports it.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "osmesa"
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

__all__ = ["ENV_IDS", "GENERIC_ENV_ID", "RANDOMIZED_ENV_IDS", "env_id_for_robot"]

# gymnasium id (without the module prefix) -> robot name in models/ (nominal dynamics).
ENV_IDS = {"Arm2Reach-v0": "arm2", "Arm6Reach-v0": "arm6"}
# The same tasks under the training randomisation profile, for `mpo-ros train --env <id>`, which
# passes no constructor arguments (sim/profiles/train.yaml).
RANDOMIZED_ENV_IDS = {"Arm2ReachRandomized-v0": "arm2", "Arm6ReachRandomized-v0": "arm6"}


def env_id_for_robot(robot: str) -> str:
    """'arm2' -> 'mpo_ros_sim:Arm2Reach-v0' (the id to pass to gymnasium.make)."""
    for env_id, name in ENV_IDS.items():
        if name == robot:
            return f"mpo_ros_sim:{env_id}"
    raise KeyError(f"no registered environment for robot '{robot}'; known robots: {sorted(ENV_IDS.values())}")


# The robot-agnostic id: `gymnasium.make("mpo_ros_sim:Reach-v0", robot="my_robot.yaml")` (a RobotSpec, a
# spec YAML or a shipped name); it has no default robot, so a missing `robot=` is an error, not arm2.
GENERIC_ENV_ID = "Reach-v0"


def _register() -> None:
    try:
        from gymnasium.envs.registration import register, registry
    except ImportError:  # a robot-side install without gymnasium still gets RobotSim
        return
    for ids, randomize in ((ENV_IDS, "none"), (RANDOMIZED_ENV_IDS, "train")):
        for env_id, robot in ids.items():
            if env_id not in registry:
                register(
                    id=env_id,
                    entry_point="mpo_ros_sim.reach_env:RobotReachEnv",
                    kwargs={"robot": robot, "randomize": randomize},
                )
    if GENERIC_ENV_ID not in registry:
        register(
            id=GENERIC_ENV_ID,
            entry_point="mpo_ros_sim.reach_env:RobotReachEnv",
            kwargs={"randomize": "none"},
        )


_register()
