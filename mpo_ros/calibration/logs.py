"""Robot logs as continuous stretches of (commands, measured joints), checked before any fitting.

Calibration replays the logged position commands through MuJoCo and compares the simulated joints
with the logged ones, so it needs stretches where both streams are continuous. A `LogSegment` is one
such stretch. Loading splits recordings at gaps (a stalled /joint_states or command stream is not
something the simulator can replay) and refuses data that cannot identify anything: NaN positions,
missing joints, or segments shorter than a few servo time constants. Whether each joint moved enough
to identify its parameters is checked later, per parameter, in `check_excitation`.

Times inside a segment are seconds from the segment start (float64); the bag clock (receive time)
is used for both streams, since header stamps of a simulator can be sim time and repeat.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpo_ros.contract.observation import observation_names, policy_command, start_command
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.data.bag_reader import open_bag, read_streams
from mpo_ros.data.dataset import load_dataset
from mpo_ros.errors import CalibrationError

__all__ = [
    "LogSegment",
    "LogTopics",
    "check_excitation",
    "load_bag_segments",
    "load_dataset_segments",
    "split_train_validation",
]

log = logging.getLogger(__name__)

# A pause longer than this many control periods in either stream ends a segment.
GAP_PERIODS = 5.0
# Below this commanded/measured motion (rad, standard deviation) a joint counts as not excited.
MIN_EXCITATION_RAD = 0.01


@dataclass(frozen=True)
class LogTopics:
    """Where the logs keep the measured joints and the commands."""

    joint_states: str = "/joint_states"
    command: str = "/forward_position_controller/commands"


@dataclass
class LogSegment:
    """One continuous stretch of a log: commands and measurements on a common clock."""

    source: str  # bag or dataset path plus the time range, for messages
    state_times: np.ndarray  # [T] s since the segment's first measurement (the first is 0)
    positions: np.ndarray  # [T, n] rad, contract joint order
    velocities: np.ndarray  # [T, n] rad/s
    command_times: np.ndarray  # [K] s on the same clock; the first (in force at 0) is <= 0
    commands: np.ndarray  # [K, n] rad

    @property
    def duration(self) -> float:
        return float(self.state_times[-1]) if len(self.state_times) else 0.0

    def window(self, start: float, end: float, label: str) -> LogSegment:
        """The part with measurements in [start, end), re-based to its first measurement.

        The command in force at that measurement (zero-order hold) is kept, at a time <= 0.
        """
        s = (self.state_times >= start) & (self.state_times < end)
        t0 = float(self.state_times[s][0])
        first = max(int(np.searchsorted(self.command_times, t0, side="right")) - 1, 0)
        c = (self.command_times >= t0) & (self.command_times < end)
        c[first] = True
        return LogSegment(
            f"{self.source} {label}",
            self.state_times[s] - t0,
            self.positions[s],
            self.velocities[s],
            self.command_times[c] - t0,
            self.commands[c],
        )


def load_bag_segments(
    path: str | Path, spec: RobotSpec, topics: LogTopics, min_seconds: float
) -> list[LogSegment]:
    """The continuous segments of one rosbag2 recording (MCAP or sqlite3)."""
    with open_bag(path, typestore="kilted") as bag:
        missing = [t for t in (topics.joint_states, topics.command) if t not in bag.topics]
        if missing:
            raise CalibrationError(
                f"{path}: topic(s) {missing} not in the bag (it has {sorted(bag.topics)}); record "
                "/joint_states and the command topic (mpo-ros excite does), or pass --joint-states-topic "
                "/ --command-topic"
            )
        sinks = read_streams(bag, [topics.joint_states, topics.command])
    states = sinks[topics.joint_states].finish(spec.joint_names)
    command_sink = sinks[topics.command]
    if command_sink.msgtype.endswith("JointTrajectory"):
        commands = command_sink.finish(spec.joint_names)
    else:
        commands = command_sink.finish(spec.num_joints)
    if states.dropped.get("missing_joints"):
        log.warning(
            "%s: %d /joint_states messages lack a contract joint %s and were skipped",
            path,
            states.dropped["missing_joints"],
            list(spec.joint_names),
        )
    if not len(states) or not len(commands):
        raise CalibrationError(
            f"{path}: no usable messages ({len(states)} joint states with all of {list(spec.joint_names)}, "
            f"{len(commands)} commands of {spec.num_joints} values)"
        )
    return _segments(
        str(path),
        spec,
        states.receive_ns,
        states.positions,
        states.velocities,
        commands.receive_ns,
        commands.positions,
        min_seconds,
    )


def load_dataset_segments(path: str | Path, spec: RobotSpec, min_seconds: float) -> list[LogSegment]:
    """Segments from a converted dataset: each episode's observed joints and commanded targets.

    A dataset keeps the joint state the controller saw at each command, so state and command share
    the command's timestamp; joint positions are stored relative to the default pose. Its actions are
    the policy's targets (bag2data inverts the contract's action filter), so the commands the robot
    executed are rebuilt the way the robot built them: ``observation.policy_command`` from the episode's
    start command, filter and limits included (with ``action_filter: none`` that is the targets).
    """
    dataset = load_dataset(path)
    names = observation_names(spec)
    try:
        pos_cols = [names.index(f"joint_positions/{j}") for j in spec.joint_names]
        vel_cols = [names.index(f"joint_velocities/{j}") for j in spec.joint_names]
    except ValueError as exc:
        raise CalibrationError(
            f"{path}: the dataset's observations lack joint positions or velocities ({exc}); "
            "calibrate from the bags instead (--bag)"
        ) from exc
    observations = np.asarray(dataset.observations, dtype=np.float64)
    positions = observations[:, pos_cols] + spec.joint_arrays.default
    velocities = observations[:, vel_cols]
    actions = np.asarray(dataset.actions, dtype=np.float64)
    commands = np.empty_like(actions)
    times = np.asarray(dataset.timestamps, dtype=np.int64)
    segments: list[LogSegment] = []
    for start, end in dataset.episode_bounds():
        sl = slice(start, end)
        command = start_command(spec, positions[start])
        for t in range(start, end):
            command = policy_command(spec, command, actions[t], positions[t])
            commands[t] = command
        segments += _segments(
            f"{path}[{start}:{end}]",
            spec,
            times[sl],
            positions[sl],
            velocities[sl],
            times[sl],
            commands[sl],
            min_seconds,
        )
    return segments


def _segments(
    source: str,
    spec: RobotSpec,
    state_ns: np.ndarray,
    positions: np.ndarray,
    velocities: np.ndarray,
    command_ns: np.ndarray,
    commands: np.ndarray,
    min_seconds: float,
) -> list[LogSegment]:
    """Split at NaN rows and gaps; keep stretches of at least `min_seconds`."""
    _refuse_nan(source, spec, state_ns, positions, "position")
    if not np.all(np.isfinite(commands)):
        row = int(np.argwhere(~np.isfinite(commands))[0, 0])
        raise CalibrationError(
            f"{source}: a logged command is NaN/inf at t={(command_ns[row] - command_ns[0]) * 1e-9:.3f} s; "
            "the simulator cannot replay it: cut the bag or fix the publisher"
        )
    if np.any(~np.isfinite(velocities)):
        # Velocities are optional in JointState; without them the fit compares positions only.
        log.warning("%s: some /joint_states velocities are missing or NaN; fitting to positions only", source)
    # Two samples stamped alike (a node clock driven by /clock ticks in whole periods) cannot both be
    # compared with a simulation at one instant: keep the later, the freshest.
    unique = np.append(np.diff(state_ns) > 0, True)
    if not unique.all():
        log.info(
            "%s: %d /joint_states samples share a timestamp with the next; kept the later",
            source,
            (~unique).sum(),
        )
        state_ns, positions, velocities = state_ns[unique], positions[unique], velocities[unique]
    gap_ns = GAP_PERIODS * spec.control_period * 1e9
    cuts = set(np.flatnonzero(np.diff(state_ns) > gap_ns) + 1)
    bounds_ns = [state_ns[0]] + [state_ns[c] for c in sorted(cuts)] + [state_ns[-1] + 1]
    command_gaps = np.flatnonzero(np.diff(command_ns) > gap_ns)
    for g in command_gaps:
        bounds_ns.append(command_ns[g + 1])
    # A pause in both streams gives two boundaries a fraction of a period apart: keep one.
    merged: list[int] = []
    for b in sorted(int(b) for b in bounds_ns):
        if not merged or b - merged[-1] > gap_ns:
            merged.append(b)
    merged[-1] = max(merged[-1], int(state_ns[-1]) + 1)
    bounds_ns = merged
    if len(bounds_ns) > 2:
        log.warning(
            "%s: %d gap(s) longer than %.0f control periods in /joint_states or the commands; the log is "
            "split there into separate replays",
            source,
            len(bounds_ns) - 2,
            GAP_PERIODS,
        )
    segments = []
    for lo, hi in itertools.pairwise(bounds_ns):
        s = (state_ns >= lo) & (state_ns < hi)
        c = (command_ns >= lo) & (command_ns < hi)
        if not c.any() or s.sum() < 2:
            continue
        s &= state_ns >= command_ns[c][0]
        if s.sum() < 2:
            continue
        t0 = int(state_ns[s][0])
        label = (
            f"{source} t=[{(t0 - state_ns[0]) * 1e-9:.2f}, {(state_ns[s][-1] - state_ns[0]) * 1e-9:.2f}] s"
        )
        segment = LogSegment(
            label,
            (state_ns[s] - t0) * 1e-9,
            positions[s],
            velocities[s],
            (command_ns[c] - t0) * 1e-9,
            commands[c],
        )
        if segment.duration < min_seconds:
            log.warning("%s: skipped, %.2f s is shorter than %.2f s", label, segment.duration, min_seconds)
            continue
        segments.append(segment)
    return segments


def _refuse_nan(source: str, spec: RobotSpec, times_ns: np.ndarray, values: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        rows, cols = np.nonzero(bad)
        joints = sorted({spec.joint_names[c] for c in cols})
        t = (times_ns[rows[0]] - times_ns[0]) * 1e-9
        raise CalibrationError(
            f"{source}: /joint_states {what} of joint(s) {joints} is NaN/inf in {len(set(rows))} message(s), "
            f"first at t={t:.3f} s; the parameters of {joints} cannot be fitted from it: fix the driver "
            "or cut the bag"
        )


def split_train_validation(
    segments: list[LogSegment], validation_fraction: float
) -> tuple[list[LogSegment], list[LogSegment]]:
    """Hold out the last `validation_fraction` of every segment's time for validation.

    A time split of each segment (not whole segments) keeps both sets covering every joint and
    every part of the excitation when only one bag is given, which is the usual case.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise CalibrationError(f"validation fraction must be in (0, 1), got {validation_fraction}")
    train, validation = [], []
    for segment in segments:
        cut = segment.duration * (1.0 - validation_fraction)
        train.append(segment.window(0.0, cut, "train"))
        validation.append(segment.window(cut, np.inf, "validation"))
    return train, validation


def check_excitation(spec: RobotSpec, segments: list[LogSegment], parameters: list[str]) -> None:
    """Refuse parameters of joints that the logs never moved, naming each parameter.

    A joint whose measured position hardly varies carries no information about its own dynamics; a
    least-squares fit would leave those parameters at their start values and report them as fitted.
    """
    positions = np.concatenate([s.positions for s in segments])
    commands = np.concatenate([s.commands for s in segments])
    problems = []
    for j, joint in enumerate(spec.joint_names):
        motion = min(float(np.std(positions[:, j])), float(np.std(commands[:, j])))
        if motion < MIN_EXCITATION_RAD:
            mine = [p for p in parameters if p.startswith(f"{joint}/")]
            if mine:
                problems.append(
                    f"joint '{joint}' moved only {motion:.4f} rad (std) in the logs, below {MIN_EXCITATION_RAD}; "
                    f"cannot identify {mine}"
                )
    if problems:
        raise CalibrationError(
            "; ".join(problems)
            + ". Excite those joints (mpo-ros excite --joints ...) or leave their parameters out (--params)"
        )
