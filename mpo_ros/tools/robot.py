"""`mpo-ros robot init | check`: bring your own robot.

``init`` writes a starter contract from an MJCF: the joints driven by ``<position>`` actuators, or by
``<velocity>`` actuators for a velocity contract (in actuator order; the interface is detected from the
servos or given with ``--interface``), limits from their ranges, the default pose from a keyframe, an
action scale of half the range (position) or the velocity limit (velocity), a slew limit from a velocity
limit and the rate (position) or an acceleration limit and the rate (velocity), a control rate the MJCF timestep can produce, and a reach
goal box sampled from the end effector's workspace. ``check`` lists *every* problem of a contract and its
MJCF at once, each with its fix. Nothing in the MJCF beyond joints, position actuators and an
end-effector site is required: the simulator adds what it needs (goal marker, floor, camera) itself.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mpo_ros.errors import SpecError

__all__ = ["add_arguments", "check_robot", "init_robot", "run"]

DEFAULT_OBSERVATION = ["joint_positions", "joint_velocities", "last_action", "goal"]
# rad/s^2; a velocity contract's max_delta is this divided by the control rate.
DEFAULT_ACCELERATION_LIMIT = 10.0
# The reach reward of the shipped arms (contract/tasks.py): distance, a sharp bowl near the goal, an
# action-rate penalty on executed actions and a bonus inside the success radius.
DEFAULT_TASK_PARAMS = {
    "distance_weight": 1.0,
    "precision_weight": 1.0,
    "precision_scale": 0.05,
    "action_rate_weight": 0.2,
    "success_bonus": 0.5,
}


def init_robot(
    mjcf: str | Path,
    end_effector: str,
    out: str | Path,
    rate_hz: float = 50.0,
    keyframe: str | None = None,
    velocity_limit: float = math.pi,
    name: str | None = None,
    seed: int = 0,
    interface: str | None = None,
    acceleration_limit: float = DEFAULT_ACCELERATION_LIMIT,
) -> dict[str, Any]:
    """Write a starter contract YAML for ``mjcf`` to ``out`` and return it as a dict.

    ``interface``: "position" or "velocity"; None detects it from the MJCF's servos (all <velocity>:
    velocity, otherwise position). A velocity contract gets action_scale = velocity_limit (rad/s at
    |action| = 1, capped by the actuator's ctrlrange) and max_delta = acceleration_limit / rate.
    """
    import mujoco

    mjcf, out = Path(mjcf).resolve(), Path(out)
    try:
        model = mujoco.MjModel.from_xml_path(str(mjcf))
    except ValueError as exc:
        raise SpecError(f"MJCF {mjcf} does not compile: {exc}") from exc
    from mpo_ros_sim.model import actuator_kind

    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, end_effector)
    if site < 0:
        sites = [model.site(i).name for i in range(model.nsite)]
        raise SpecError(f"end-effector site '{end_effector}' is not in {mjcf}; its sites are {sites}")
    substeps = max(1, round(1.0 / (model.opt.timestep * rate_hz)))
    achieved = 1.0 / (model.opt.timestep * substeps)
    qpos = _keyframe_qpos(model, keyframe)
    servos = [a for a in range(model.nu) if int(model.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT)]
    kinds = {actuator_kind(model, a) for a in servos}
    if interface is None:
        interface = "velocity" if kinds == {"velocity"} else "position"
    if interface not in ("position", "velocity"):
        raise SpecError(f"--interface must be position or velocity, got {interface!r}")
    if not (math.isfinite(acceleration_limit) and acceleration_limit > 0):
        raise SpecError(f"--acceleration-limit must be a positive number (rad/s^2), got {acceleration_limit}")
    joints, skipped = [], []
    for actuator in servos:
        jid = int(model.actuator_trnid[actuator, 0])
        joint_name = model.joint(jid).name
        if actuator_kind(model, actuator) != interface:
            skipped.append(f"{joint_name} ({actuator_kind(model, actuator)} actuator)")
            continue
        if model.jnt_limited[jid]:
            lower, upper = (float(v) for v in model.jnt_range[jid])
        elif model.actuator_ctrllimited[actuator]:
            lower, upper = (float(v) for v in model.actuator_ctrlrange[actuator])
        else:
            skipped.append(f"{joint_name} (no range: add range=... to the joint)")
            continue
        default = float(np.clip(qpos[model.jnt_qposadr[jid]], lower, upper))
        speed = float(velocity_limit)
        if interface == "velocity":
            if not model.jnt_limited[jid]:  # a velocity servo's ctrlrange is in rad/s, not a position range
                skipped.append(f"{joint_name} (a velocity contract needs the joint's range: add range=...)")
                continue
            if model.actuator_ctrllimited[actuator]:  # MuJoCo would clip faster commands
                speed = min(speed, *(abs(float(v)) for v in model.actuator_ctrlrange[actuator]))
        joints.append(
            {
                "name": joint_name,
                "lower": lower,
                "upper": upper,
                "velocity_limit": speed,
                "default": default,
                "action_scale": speed if interface == "velocity" else round(0.5 * (upper - lower), 6),
                "max_delta": round((acceleration_limit if interface == "velocity" else speed) / achieved, 6),
            }
        )
    if not joints:
        raise SpecError(
            f"{mjcf} has no joint driven by a <{interface}> actuator with a range; skipped: {skipped}"
        )
    low, high = _workspace_box(model, joints, site, seed, interface)
    contract = {
        "name": name or mjcf.stem,
        "mjcf": str(mjcf) if out.parent.resolve() != mjcf.parent else mjcf.name,
        "end_effector": end_effector,
        "control_rate_hz": round(achieved, 9),
        "physics_substeps": substeps,
        "command_interface": interface,
        "observation": DEFAULT_OBSERVATION,
        "joints": joints,
        "task": {
            "name": "reach",
            "goal_low": low,
            "goal_high": high,
            "success_threshold": 0.03,
            "episode_seconds": 2.0,
            "params": dict(DEFAULT_TASK_PARAMS),
        },
    }
    header = [
        f"# Starter robot contract written by `mpo-ros robot init` from {mjcf.name}.",
        f"# control_rate_hz: {achieved:.6g} Hz = 1 / (timestep {model.opt.timestep} s x {substeps} substeps)"
        + (f" (asked for {rate_hz} Hz)" if abs(achieved - rate_hz) > 1e-6 * rate_hz else ""),
        f"# velocity_limit is {velocity_limit:.3g} rad/s for every joint (MJCF has no such field): set your",
    ]
    if interface == "velocity":
        header += [
            "# robot's datasheet values (capped by each <velocity> actuator's ctrlrange). command_interface:",
            "# velocity (the MJCF's servos are <velocity>): commands are joint velocities, action_scale is the",
            f"# speed at |action| = 1 and max_delta = acceleration limit {acceleration_limit:g} rad/s^2 / rate is the",
            "# per-step change of the velocity command (also the braking deceleration near joint limits).",
        ]
    else:
        header += [
            "# robot's datasheet values; max_delta = velocity_limit / rate bounds the command slew per step.",
            "# action_scale is half the joint range.",
        ]
    header += [
        "# The goal box covers the middle 80 % of the end effector's sampled workspace. Check it with",
        "# `mpo-ros robot check` after editing.",
    ]
    if skipped:
        header.append(f"# Not in the contract: {', '.join(skipped)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header) + "\n" + yaml.safe_dump(contract, sort_keys=False))
    return contract


def _keyframe_qpos(model: Any, keyframe: str | None) -> np.ndarray:
    import mujoco

    if keyframe is None:
        return model.qpos0.copy()
    key = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, keyframe)
    if key < 0:
        keys = [model.key(i).name for i in range(model.nkey)]
        raise SpecError(f"keyframe '{keyframe}' is not in the MJCF; its keyframes are {keys}")
    return model.key_qpos[key].copy()


def _action_range(
    interface: str, lower: np.ndarray, upper: np.ndarray, default: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions the policy's actions can reach: default +- action_scale within the limits for a
    position contract; the whole range between the limits for a velocity contract (it integrates)."""
    if interface == "velocity":
        return lower, upper
    return np.maximum(lower, default - scale), np.minimum(upper, default + scale)


def _workspace_box(
    model: Any, joints: list[dict[str, Any]], site: int, seed: int, interface: str = "position"
) -> tuple[list[float], list[float]]:
    """A goal box the contract's action range can reach: the middle 80 % (per axis) of end-effector
    positions over joint positions sampled in that range, shrunk towards the end effector's position at the
    default pose until its corners and centre are reachable. Axes the end effector barely moves along
    (< 2 cm) are dropped (a planar arm gets x-y goals)."""
    import mujoco

    data = mujoco.MjData(model)
    rng = np.random.default_rng(seed)
    address = [
        model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j["name"])] for j in joints
    ]
    low_q, high_q = _action_range(
        interface,
        np.array([j["lower"] for j in joints]),
        np.array([j["upper"] for j in joints]),
        np.array([j["default"] for j in joints]),
        np.array([j["action_scale"] for j in joints]),
    )

    def tip(q: np.ndarray) -> np.ndarray:
        data.qpos[:] = model.qpos0
        data.qpos[address] = q
        mujoco.mj_kinematics(model, data)
        return data.site_xpos[site].copy()

    cloud = np.array([tip(rng.uniform(low_q, high_q)) for _ in range(3000)])
    centre = tip(np.array([j["default"] for j in joints]))
    moving = [i for i in range(3) if np.ptp(cloud[:, i]) > 0.02]
    axes = list(range(max(moving) + 1)) if moving else [0]
    cloud, centre = cloud[:, axes], centre[axes]
    low = np.minimum(np.percentile(cloud, 10, axis=0), centre)
    high = np.maximum(np.percentile(cloud, 90, axis=0), centre)
    for _ in range(40):
        corners = np.array(np.meshgrid(*zip(low, high, strict=True))).reshape(len(axes), -1).T
        points = np.vstack([corners, (low + high) / 2])
        if all(np.min(np.linalg.norm(cloud - p, axis=1)) < 0.02 for p in points):
            break
        low, high = centre + 0.85 * (low - centre), centre + 0.85 * (high - centre)
    return [round(float(v), 4) for v in low], [round(float(v), 4) for v in high]


def check_robot(spec_path: str | Path) -> list[str]:
    """Every problem of the contract and of its MJCF, each with its fix (empty: the robot is usable)."""
    import mujoco

    from mpo_ros.contract.spec import RobotSpec

    path = Path(spec_path)
    if not path.is_file():
        return [f"{path} does not exist"]
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        return [f"{path} is not valid YAML: {exc}"]
    try:
        spec = RobotSpec.from_dict(data, source_dir=str(path.parent.resolve()), source=str(path))
    except SpecError as exc:
        text = str(exc)
        return (
            [line.removeprefix("  - ") for line in text.splitlines()[1:]] if "problems:\n" in text else [text]
        )
    mjcf = spec.mjcf_path
    if not spec.mjcf or not mjcf.is_file():
        return [f"MJCF '{spec.mjcf}' not found at {mjcf}; set 'mjcf' to a path relative to {path.parent}"]
    try:
        model = mujoco.MjModel.from_xml_path(str(mjcf))
    except ValueError as exc:
        return [f"MJCF {mjcf} does not compile: {exc}"]
    from mpo_ros_sim.model import contract_problems

    problems = contract_problems(spec, model)
    if not problems:
        problems += _reachability_problems(spec)
    return problems


def _reachability_problems(spec: Any) -> list[str]:
    """Goals the arm cannot reach inside its action range would make the task unsolvable: sample the goal
    box's corners and centre against the workspace the contract's action range covers."""
    from mpo_ros_sim.kinematics import end_effector_positions

    arrays = spec.joint_arrays
    low, high = _action_range(
        spec.command_interface, arrays.lower, arrays.upper, arrays.default, arrays.action_scale
    )
    rng = np.random.default_rng(0)
    samples = rng.uniform(low, high, size=(4000, len(low)))
    reach = end_effector_positions(spec, samples)
    goals = (
        np.array(np.meshgrid(*zip(spec.task.goal_low, spec.task.goal_high, strict=True)))
        .reshape(spec.task.goal_dim, -1)
        .T
    )
    goals = np.vstack([goals, (np.array(spec.task.goal_low) + np.array(spec.task.goal_high)) / 2])
    problems = []
    for goal in goals:
        nearest = float(np.min(np.linalg.norm(reach - goal, axis=1)))
        if nearest > 3 * spec.task.success_threshold:
            problems.append(
                f"goal {np.round(goal, 3).tolist()} is {nearest:.3f} m from anything the action range reaches; "
                "shrink task.goal_low/goal_high or widen action_scale"
            )
    return problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="write a starter contract YAML from an MJCF")
    init.add_argument("--mjcf", required=True, help="the robot's MJCF file")
    init.add_argument("--end-effector", required=True, help="MuJoCo site the reach task tracks")
    init.add_argument("--out", required=True, help="contract YAML to write")
    init.add_argument(
        "--keyframe", default=None, help="MJCF keyframe holding the default pose (default: qpos0)"
    )
    init.add_argument(
        "--rate", type=float, default=50.0, help="control rate, Hz (rounded to what the timestep gives)"
    )
    init.add_argument(
        "--velocity-limit", type=float, default=math.pi, help="joint speed limit, rad/s (all joints)"
    )
    init.add_argument(
        "--interface",
        choices=("position", "velocity"),
        default=None,
        help="command interface (default: velocity if every servo is <velocity>, else position)",
    )
    init.add_argument(
        "--acceleration-limit",
        type=float,
        default=DEFAULT_ACCELERATION_LIMIT,
        help="velocity contracts: joint acceleration limit, rad/s^2 (max_delta = this / rate)",
    )
    init.add_argument("--name", default=None, help="robot name (default: the MJCF's file name)")
    check = sub.add_parser("check", help="list every problem of a contract and its MJCF")
    check.add_argument("spec", help="contract YAML")


def run(args: argparse.Namespace) -> int:
    if args.action == "init":
        if Path(args.out).exists():
            raise SpecError(f"{args.out} exists; choose another --out (init never overwrites a contract)")
        contract = init_robot(
            args.mjcf,
            args.end_effector,
            args.out,
            args.rate,
            args.keyframe,
            args.velocity_limit,
            args.name,
            interface=args.interface,
            acceleration_limit=args.acceleration_limit,
        )
        print(f"wrote {args.out}: {len(contract['joints'])} joints at {contract['control_rate_hz']:.6g} Hz")
        print(f"next: edit velocity limits and the goal box, then `mpo-ros robot check {args.out}`")
        return 0
    problems = check_robot(args.spec)
    if problems:
        print(f"{args.spec}: {len(problems)} problem(s):")
        for problem in problems:
            print(f"  - {problem}")
        return 2
    print(f"{args.spec}: ok (contract valid, MJCF matches, every goal box corner reachable)")
    return 0
