"""`mpo-ros bag2data`: rosbag2 recordings -> a training dataset (see dataset.py for the layout).

    mpo-ros bag2data runs/bags/rec1 runs/bags/rec2 --robot arm2 --out data/arm2_logs

Per bag: read /joint_states, the command topic and the goal topic in one pass (bag_reader);
align them on the command times (align.py); cut episodes; rebuild what the controller saw with the
contract's own functions (observation.build_observation with last_action = the previous step's
executed action, observation.executed_action of the logged command; observation.command_to_action
for the action; position targets or velocities, per the contract's command_interface); relabel rewards and success with mpo_ros.contract.tasks from
end-effector positions computed by forward kinematics (mpo_ros_sim.kinematics). Every dropped
message or step is counted by reason; the summary is printed and stored in meta.json.

A bag that cannot be used (missing topics, foreign robot, unreadable file) is reported with what is
missing and skipped; the dataset is written from the bags that could be used, and the command fails
(exit 2) only when none could.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpo_ros import __version__
from mpo_ros.config import add_arguments as _add_config_arguments
from mpo_ros.config import from_args, option, to_dict
from mpo_ros.contract import tasks
from mpo_ros.contract.observation import (
    build_observation,
    command_to_action,
    executed_action,
    observation_names,
    start_command,
    unfilter_commands,
)
from mpo_ros.contract.resolve import mjcf_location
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.data.align import align_steps, split_segments
from mpo_ros.data.bag_reader import OpenBag, open_bag, read_streams
from mpo_ros.data.dataset import check_writable_dataset_path, write_dataset
from mpo_ros.data.messages import (
    FLOAT64_MULTI_ARRAY,
    JOINT_STATE,
    JOINT_TRAJECTORY,
    POINT_STAMPED,
    TYPESTORES,
)
from mpo_ros.data.streams import CommandStream, JointStateStream, PointStream
from mpo_ros.errors import BagError, ContractError, DatasetError, MpoRosError

__all__ = [
    "Bag2DataConfig",
    "BagTransitions",
    "add_arguments",
    "convert_bag",
    "convert_bags",
    "resolve_robot",
    "run",
]

log = logging.getLogger(__name__)


@dataclass
class Bag2DataConfig:
    """Options of `mpo-ros bag2data` (also the keys of its --config YAML)."""

    bags: list[str] = field(
        default_factory=list, metadata={"help": "rosbag2 directories or .db3/.mcap files", "cli": False}
    )
    robot: str = option(
        "", "robot contract: a spec YAML, a shipped robot name (arm2) or an exported policy.onnx"
    )
    out: str = option("", "output dataset folder, e.g. data/<name> (written atomically)")
    command_topic: str = option(
        "",
        "topic of the joint commands (Float64MultiArray or JointTrajectory; type read from the bag); empty: "
        "/forward_<interface>_controller/commands for the contract's command_interface",
    )
    joint_states_topic: str = option("/joint_states", "sensor_msgs/JointState topic")
    goal_topic: str = option("/goal", "geometry_msgs/PointStamped goal topic")
    max_state_age: float | None = option(
        None, "drop a step whose latest joint state is older than this (s); default 2.5 control periods"
    )
    max_gap_periods: float = option(
        1.5, "cut the episode where commands pause longer than this many control periods"
    )
    typestore: str = option(
        "humble",
        "ROS distro whose message definitions decode bags that store none (old metadata v5 bags)",
        choices=sorted(TYPESTORES),
    )
    overwrite: bool = option(
        False, "replace an existing dataset at --out (only a dataset: never another folder)"
    )
    mjcf: str | None = option(None, "the robot's MJCF, when --robot is a policy.onnx whose MJCF is elsewhere")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        if self.max_state_age is not None and self.max_state_age <= 0:
            raise ValueError(f"max_state_age must be > 0 s, got {self.max_state_age}")
        if self.max_gap_periods < 1.0:
            raise ValueError(f"max_gap_periods must be >= 1 control period, got {self.max_gap_periods}")


@dataclass
class BagTransitions:
    """The transitions of one bag plus everything counted on the way."""

    arrays: dict[str, np.ndarray]
    episode_lengths: list[int]
    report: dict[str, Any]
    dropped_steps: dict[str, int] = field(default_factory=dict)
    episode_cuts: dict[str, int] = field(default_factory=dict)
    actions_out_of_range: int = 0


def resolve_robot(text: str, mjcf: str | None = None) -> RobotSpec:
    """A spec YAML, a shipped robot name, or the contract inside an exported policy.onnx (its MJCF found
    at ``mjcf``, next to the file or in models/: reward relabelling needs the kinematics)."""
    from mpo_ros.contract.resolve import resolve_robot as resolve

    if not text:
        raise BagError("give the robot contract with --robot <spec.yaml | robot name | policy.onnx>")
    return resolve(text, mjcf)


def file_digests(path: Path) -> list[dict[str, Any]]:
    """Size and sha256 of every file of a bag (provenance in meta.json)."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    out = []
    for file in files:
        digest = hashlib.sha256()
        with file.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
        out.append({"name": file.name, "size": file.stat().st_size, "sha256": digest.hexdigest()})
    return out


def _check_topic(bag: OpenBag, topic: str, types: tuple[str, ...], flag: str) -> str | None:
    """None if `topic` is usable, else what is wrong with it (and which topics could be meant)."""
    info = bag.topics.get(topic)
    if info is None:
        candidates = [f"{t} ({i.msgtype})" for t, i in sorted(bag.topics.items()) if i.msgtype in types]
        return f"no topic {topic} (candidates for {flag}: {', '.join(candidates) or 'none'})"
    if info.msgtype not in types:
        return f"{topic} has type {info.msgtype}, expected one of {list(types)} (set {flag})"
    if topic in bag.report.skipped_topics:
        return f"{topic} cannot be decoded: {bag.report.skipped_topics[topic]}"
    return None


def read_bag_streams(
    bag: OpenBag, spec: RobotSpec, config: Bag2DataConfig
) -> tuple[CommandStream, JointStateStream, PointStream]:
    """The three streams of one bag in contract joint order, or BagError/ContractError saying what is missing."""
    config = _with_command_topic(config, spec)
    wanted = (
        (config.command_topic, (FLOAT64_MULTI_ARRAY, JOINT_TRAJECTORY), "--command-topic"),
        (config.joint_states_topic, (JOINT_STATE,), "--joint-states-topic"),
        (config.goal_topic, (POINT_STAMPED,), "--goal-topic"),
    )
    problems = [p for topic, types, flag in wanted if (p := _check_topic(bag, topic, types, flag))]
    if problems:
        raise BagError(f"{bag.path} cannot be converted: " + "; ".join(problems))
    command_type = bag.topics[config.command_topic].msgtype
    sinks = read_streams(bag, [config.command_topic, config.joint_states_topic, config.goal_topic])
    joint_sink = sinks[config.joint_states_topic]
    states = joint_sink.finish(spec.joint_names)
    if len(states) == 0 and joint_sink.names:
        seen = sorted({n for names in joint_sink.names for n in names})
        raise ContractError(
            f"{bag.path}: no {config.joint_states_topic} message carries all joints of robot '{spec.name}' "
            f"{list(spec.joint_names)}; the messages name {seen}. Convert with the spec of the recorded robot"
        )
    if command_type == JOINT_TRAJECTORY:
        commands = sinks[config.command_topic].finish(spec.joint_names)
    else:
        commands = sinks[config.command_topic].finish(spec.action_dim)
    goals = sinks[config.goal_topic].finish()
    if len(commands) == 0:
        raise BagError(
            f"{bag.path}: {config.command_topic} holds no usable command for the {spec.action_dim} joints "
            f"{list(spec.joint_names)} (dropped: {commands.dropped or 'no messages'})"
        )
    return commands, states, goals


def build_transitions(
    spec: RobotSpec, steps: Any, bounds: list[tuple[int, int]]
) -> tuple[dict[str, np.ndarray], list[int], int]:
    """Observations, actions, relabelled rewards, ... of every segment with at least 2 steps."""
    from mpo_ros_sim.kinematics import (
        end_effector_positions,
    )  # MuJoCo kinematics; sim is optional for mpo_ros

    ee_all = (
        end_effector_positions(spec, steps.joint_positions)
        if len(steps)
        else np.zeros((0, spec.task.goal_dim))
    )
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("obs", "act", "rew", "next", "trunc", "succ", "time")
    }
    lengths: list[int] = []
    for start, end in bounds:
        if end - start < 2:
            continue
        # At an episode start the robot rests (position servos hold the current pose, velocity servos are
        # at 0): that is the command before the first one (the filter's state) and its action the last
        # action, as in the reach environment's reset (observation.start_command, one rule for both).
        rest = start_command(spec, steps.joint_positions[start])
        before = np.concatenate([rest[None], steps.command[start : end - 1]])
        actions = command_to_action(spec, unfilter_commands(spec, before, steps.command[start:end]))
        held = executed_action(spec, rest)
        executed = executed_action(spec, steps.command[start:end])
        previous = np.concatenate([held[None], executed[:-1]])
        obs = build_observation(
            spec,
            steps.joint_positions[start:end],
            steps.joint_velocities[start:end],
            previous,
            steps.goal[start:end],
        )
        goal = steps.goal[start : end - 1]
        ee_next = ee_all[start + 1 : end]
        rewards = tasks.reward(spec, ee_next, goal, executed[:-1], previous[:-1])
        truncated = np.zeros(end - start - 1, dtype=bool)
        truncated[-1] = True
        parts["obs"].append(obs[:-1])
        parts["next"].append(obs[1:])
        parts["act"].append(actions[:-1])
        parts["rew"].append(rewards)
        parts["trunc"].append(truncated)
        parts["succ"].append(tasks.success(spec, ee_next, goal))
        parts["time"].append(steps.time_ns[start : end - 1])
        lengths.append(end - start - 1)
    obs_dim = len(observation_names(spec))
    empty = {
        "obs": np.zeros((0, obs_dim)),
        "next": np.zeros((0, obs_dim)),
        "act": np.zeros((0, spec.action_dim)),
        "rew": np.zeros(0),
        "trunc": np.zeros(0, bool),
        "succ": np.zeros(0, bool),
        "time": np.zeros(0, np.int64),
    }
    cat = {k: np.concatenate(v) if v else empty[k] for k, v in parts.items()}
    arrays = {
        "observations": cat["obs"],
        "actions": cat["act"],
        "rewards": cat["rew"],
        "next_observations": cat["next"],
        "terminated": np.zeros(len(cat["rew"]), dtype=bool),
        "truncated": cat["trunc"],
        "success": cat["succ"],
        "timestamps": cat["time"],
    }
    out_of_range = int(np.sum(np.any(np.abs(cat["act"]) > 1.0 + 1e-9, axis=-1)))
    return arrays, lengths, out_of_range


def _with_command_topic(config: Bag2DataConfig, spec: RobotSpec) -> Bag2DataConfig:
    """An empty command_topic means the forward controller of the contract's interface."""
    if config.command_topic:
        return config
    topic = f"/forward_{spec.command_interface}_controller/commands"
    return dataclasses.replace(config, command_topic=topic)


def convert_bag(path: str | Path, spec: RobotSpec, config: Bag2DataConfig) -> BagTransitions:
    """Transitions of one bag (raises BagError/ContractError when the bag cannot be used at all)."""
    config = _with_command_topic(config, spec)
    max_age = config.max_state_age if config.max_state_age is not None else 2.5 * spec.control_period
    with open_bag(path, config.typestore) as bag:
        commands, states, goals = read_bag_streams(bag, spec, config)
        report = bag.report.to_dict()
    steps = align_steps(spec, commands, states, goals, max_age)
    bounds, cuts = split_segments(spec, steps, config.max_gap_periods)
    arrays, lengths, out_of_range = build_transitions(spec, steps, bounds)
    dropped = dict(steps.dropped)
    short = sum(b - a for a, b in bounds if b - a < 2)
    # Each kept segment of M steps yields M-1 transitions: its last step only serves as the next state.
    dropped["segment_end"] = sum(1 for a, b in bounds if b - a >= 2)
    if short:
        dropped["single_step_segment"] = short
    report["dropped_messages"] = {
        "joint_states": states.dropped,
        "commands": commands.dropped,
        "goals": goals.dropped,
    }
    period = np.median(np.diff(commands.receive_ns)) * 1e-9 if len(commands) > 1 else float("nan")
    report["command_period_median_s"] = float(period)
    if np.isfinite(period) and abs(period - spec.control_period) > 0.2 * spec.control_period:
        note = (
            f"commands arrive every {period:.4f} s (median) but robot '{spec.name}' runs at "
            f"{spec.control_period:.4f} s per step; transitions will not match what the policy sees"
        )
        report["notes"].append(note)
        log.warning("%s: %s", path, note)
    return BagTransitions(arrays, lengths, report, dropped, cuts, out_of_range)


def _merge_counts(total: dict[str, int], part: dict[str, int]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + int(value)


def summarise(
    parts: list[BagTransitions], arrays: dict[str, np.ndarray], skipped: dict[str, str]
) -> dict[str, Any]:
    """Counts and return statistics of the whole dataset (printed and stored in meta.json)."""
    dropped: dict[str, int] = {}
    cuts: dict[str, int] = {}
    decode_errors: dict[str, int] = {}
    fallback_decodes: dict[str, int] = {}
    skipped_topics: dict[str, str] = {}
    for part in parts:
        _merge_counts(dropped, part.dropped_steps)
        _merge_counts(cuts, part.episode_cuts)
        _merge_counts(decode_errors, part.report["decode_errors"])
        _merge_counts(fallback_decodes, part.report["fallback_decodes"])
        skipped_topics.update(part.report["skipped_topics"])
    starts = arrays["episode_starts"]
    rewards = arrays["rewards"].astype(np.float64)
    returns = np.add.reduceat(rewards, starts) if len(rewards) else np.zeros(0)
    lengths = np.diff(np.append(starts, len(rewards)))
    ends = np.append(starts[1:], len(rewards)) - 1
    final_success = arrays["success"][ends] if len(rewards) else np.zeros(0, bool)

    def stats(values: np.ndarray) -> dict[str, float]:
        if not len(values):
            return {}
        return {
            k: float(f(values))
            for k, f in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max))
        }

    return {
        "steps": len(rewards),
        "episodes": len(starts),
        "bags_used": len(parts),
        "bags_skipped": skipped,
        "dropped_steps": dropped,
        "episode_cuts": cuts,
        "decode_errors": decode_errors,
        # Messages the fast CDR path could not parse, decoded by rosbags instead (nothing lost).
        "fallback_decodes": fallback_decodes,
        "skipped_topics": skipped_topics,
        "partial_bags": [p.report["path"] for p in parts if p.report["partial"]],
        "actions_out_of_range": int(sum(p.actions_out_of_range for p in parts)),
        "episode_return": stats(returns),
        "episode_length": stats(lengths.astype(np.float64)),
        "final_success_rate": float(np.mean(final_success)) if len(final_success) else 0.0,
        "step_success_rate": float(np.mean(arrays["success"])) if len(rewards) else 0.0,
    }


def convert_bags(config: Bag2DataConfig) -> tuple[Path, dict[str, Any]]:
    """Convert every bag, write the dataset, return (path, summary). Raises when no bag is usable."""
    if not config.bags:
        raise BagError("give at least one bag: mpo-ros bag2data <bag>... --robot <spec> --out data/<name>")
    if not config.out:
        raise DatasetError("give the output folder with --out data/<name>")
    spec = resolve_robot(config.robot, config.mjcf)
    config = _with_command_topic(config, spec)
    out = Path(config.out)
    check_writable_dataset_path(out, config.overwrite)  # before any work: refuse a non-dataset --out
    parts: list[BagTransitions] = []
    sources: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    bar = _progress(config)
    for bag in config.bags:
        bar.set_description(Path(bag).name)
        try:
            part = convert_bag(bag, spec, config)
        except MpoRosError as exc:
            log.error("skipping bag: %s", exc)
            skipped[str(bag)] = str(exc)
            bar.update(1)
            continue
        parts.append(part)
        sources.append({"path": str(bag), "files": file_digests(Path(bag)), "report": part.report})
        bar.update(1)
    bar.close()
    usable = [p for p in parts if p.episode_lengths]
    if not usable:
        reasons = "; ".join(skipped.values()) or "no bag produced a transition"
        raise DatasetError(f"nothing to write: {reasons}")
    arrays = {k: np.concatenate([p.arrays[k] for p in usable]) for k in usable[0].arrays}
    lengths = [n for p in usable for n in p.episode_lengths]
    arrays["episode_starts"] = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    summary = summarise(parts, arrays, skipped)
    meta = {
        "mpo_ros_version": __version__,
        "robot_spec": spec.to_dict(),
        "mjcf_path": mjcf_location(spec),
        "observation_names": observation_names(spec),
        "control_period_s": spec.control_period,
        "sources": sources,
        "summary": summary,
        "config": to_dict(config),
    }
    path = write_dataset(out, arrays, meta, overwrite=config.overwrite)
    return path, summary


class _NoBar:
    def set_description(self, text: str) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(config: Bag2DataConfig) -> Any:
    if not config.progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=len(config.bags), unit="bag", dynamic_ncols=True)


def format_summary(path: Path, summary: dict[str, Any]) -> str:
    """Human-readable summary printed at the end of a conversion."""
    lines = [
        f"dataset {path}: {summary['steps']} steps in {summary['episodes']} episodes from {summary['bags_used']} bag(s)",
    ]
    ret = summary["episode_return"]
    if ret:
        lines.append(
            f"  episode return mean {ret['mean']:.3f} +- {ret['std']:.3f} (min {ret['min']:.3f}, max {ret['max']:.3f}); "
            f"final success {summary['final_success_rate']:.1%}"
        )
    for key, label in (
        ("dropped_steps", "dropped steps"),
        ("episode_cuts", "episode cuts"),
        ("decode_errors", "undecodable messages"),
        ("fallback_decodes", "messages decoded by rosbags (not the fast CDR path)"),
        ("skipped_topics", "skipped topics"),
    ):
        if summary[key]:
            lines.append(f"  {label}: {summary[key]}")
    if summary["actions_out_of_range"]:
        lines.append(
            f"  actions with |a| > 1: {summary['actions_out_of_range']} (logged commands beyond the action range)"
        )
    for bag, reason in summary["bags_skipped"].items():
        lines.append(f"  SKIPPED {bag}: {reason}")
    for bag in summary["partial_bags"]:
        lines.append(f"  PARTIAL {bag}: storage damaged, the readable part was used (see meta.json notes)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", help="rosbag2 directories or .db3/.mcap files")
    parser.add_argument("--config", default=None, help="YAML file with any of the options below")
    _add_config_arguments(parser, Bag2DataConfig)


def run(args: argparse.Namespace) -> int:
    config = from_args(Bag2DataConfig, args, args.config)
    config.bags = list(args.bags)
    path, summary = convert_bags(config)
    print(format_summary(path, summary))
    return 0
