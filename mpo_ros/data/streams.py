"""Message streams as numpy columns: JointState, Float64MultiArray, JointTrajectory, PointStamped.

Each `*Sink` receives decoded messages one at a time in the hot read loop, where it only appends
references to Python lists (the per-message cost must stay far below deserialisation, see
benchmarks/bag_convert.py); `finish()` turns the lists into arrays in a few vectorised calls.

Streams come out sorted by receive time (the bag timestamp, one clock for every topic of a
recording). Header stamps are kept alongside: on simulators they are sim time and may repeat.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SINKS",
    "CommandStream",
    "JointStateStream",
    "PointStream",
    "Sink",
]


@dataclass
class JointStateStream:
    """sensor_msgs/JointState columns. Missing velocity/effort entries are NaN."""

    receive_ns: np.ndarray  # [N] int64
    header_ns: np.ndarray  # [N] int64
    names: tuple[str, ...]  # column order of the [N, J] arrays
    positions: np.ndarray  # [N, J] float64
    velocities: np.ndarray  # [N, J] float64
    efforts: np.ndarray  # [N, J] float64
    # Messages dropped while building the columns, by reason (e.g. 'missing_joints').
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.receive_ns)

    def select(self, joint_names: tuple[str, ...]) -> JointStateStream:
        """Columns reordered to `joint_names` (all must be present; the caller checks)."""
        index = [self.names.index(n) for n in joint_names]
        return JointStateStream(
            self.receive_ns,
            self.header_ns,
            tuple(joint_names),
            self.positions[:, index],
            self.velocities[:, index],
            self.efforts[:, index],
            dict(self.dropped),
        )


@dataclass
class CommandStream:
    """Joint position commands: Float64MultiArray data or the first JointTrajectory point."""

    receive_ns: np.ndarray  # [N] int64
    # Joint names carried by the messages (JointTrajectory) or None (Float64MultiArray: contract order).
    names: tuple[str, ...] | None
    positions: np.ndarray  # [N, D] float64
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.receive_ns)


@dataclass
class PointStream:
    """geometry_msgs/PointStamped columns."""

    receive_ns: np.ndarray  # [N] int64
    header_ns: np.ndarray  # [N] int64
    points: np.ndarray  # [N, 3] float64
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.receive_ns)


def _stamp_ns(header: Any) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class Sink:
    """Receive time and message of every message of one topic, in arrival order.

    The read loop appends to `receive_ns` and `messages` directly (two list appends per message, no
    method call): everything else happens once per topic in `finish()`.
    """

    def __init__(self) -> None:
        self.receive_ns: list[int] = []
        self.messages: list[Any] = []

    def add(self, receive_ns: int, msg: Any) -> None:
        self.receive_ns.append(receive_ns)
        self.messages.append(msg)

    def __len__(self) -> int:
        return len(self.messages)


def _count(dropped: dict[str, int], reason: str, n: int = 1) -> None:
    if n:
        dropped[reason] = dropped.get(reason, 0) + n


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Bulk array building allocates many objects and no cycles: the cyclic GC only slows it down."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _sorted(receive_ns: list[int]) -> np.ndarray:
    """Stable order by receive time (multi-file bags are read file by file)."""
    times = np.asarray(receive_ns, dtype=np.int64)
    if len(times) > 1 and np.any(times[1:] < times[:-1]):
        return np.argsort(times, kind="stable")
    return np.arange(len(times))


def _column(arrays: list[np.ndarray], width: int) -> np.ndarray:
    """Stack per-message vectors; empty ones (not published) become NaN rows."""
    out = np.full((len(arrays), width), np.nan)
    full = [i for i, a in enumerate(arrays) if len(a) == width]
    if full:
        out[full] = np.stack([arrays[i] for i in full])
    return out


class JointStateSink(Sink):
    """Collects JointState messages; joints are matched by name, never by position in the message."""

    @property
    def names(self) -> list[list[str]]:
        return [m.name for m in self.messages]

    def finish(self, joint_names: tuple[str, ...] | None = None) -> JointStateStream:
        """Columns in `joint_names` order (default: the first message's names).

        Messages lacking one of those joints, or whose position count does not match their names,
        are dropped and counted; velocity/effort vectors that are empty or the wrong length are NaN.
        Work is per distinct name list (one in a normal recording), vectorised within it.
        """
        with _gc_paused():
            return self._finish(joint_names)

    def _finish(self, joint_names: tuple[str, ...] | None) -> JointStateStream:
        dropped: dict[str, int] = {}
        msgs = self.messages
        count = len(msgs)
        order = _sorted(self.receive_ns)
        if joint_names is None:
            joint_names = tuple(msgs[order[0]].name) if count else ()
        width = len(joint_names)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, message in enumerate(msgs):
            groups.setdefault(tuple(message.name), []).append(i)
        columns = {f: np.full((count, width), np.nan) for f in ("position", "velocity", "effort")}
        valid = np.zeros(count, dtype=bool)
        for key, rows in groups.items():
            have = {name: k for k, name in enumerate(key)}
            if any(name not in have for name in joint_names):
                _count(dropped, "missing_joints", len(rows))
                continue
            cols = [have[name] for name in joint_names]
            index = np.asarray(rows)
            for name, out in columns.items():
                values = [getattr(msgs[i], name) for i in rows]
                full = np.fromiter(map(len, values), dtype=np.int64, count=len(values)) == len(key)
                if full.any():
                    stacked = np.stack([v for v, ok in zip(values, full, strict=True) if ok])
                    out[index[full]] = stacked[:, cols]
                if name == "position":
                    _count(dropped, "malformed", int((~full).sum()))
                    valid[index[full]] = True
        keep = order[valid[order]]
        header = np.fromiter((_stamp_ns(msgs[i].header) for i in keep), dtype=np.int64, count=len(keep))
        return JointStateStream(
            np.asarray(self.receive_ns, dtype=np.int64)[keep],
            header,
            tuple(joint_names),
            columns["position"][keep],
            columns["velocity"][keep],
            columns["effort"][keep],
            dropped,
        )


class Float64MultiArraySink(Sink):
    """Collects Float64MultiArray commands (data in the contract's joint order)."""

    def finish(self, width: int | None = None) -> CommandStream:
        """Commands of `width` entries (default: the most common length); others dropped and counted."""
        dropped: dict[str, int] = {}
        order = _sorted(self.receive_ns)
        data_list = [m.data for m in self.messages]
        lengths = np.fromiter((len(d) for d in data_list), dtype=np.int64, count=len(data_list))
        if width is None:
            width = int(np.bincount(lengths).argmax()) if len(lengths) else 0
        keep = [i for i in order if lengths[i] == width]
        _count(dropped, "wrong_length", len(order) - len(keep))
        data = np.stack([data_list[i] for i in keep]) if keep else np.zeros((0, width))
        receive = np.asarray(self.receive_ns, dtype=np.int64)[keep]
        return CommandStream(receive, None, data.astype(np.float64, copy=False), dropped)


class JointTrajectorySink(Sink):
    """Collects JointTrajectory commands: the first point's positions, matched by joint name.

    A position controller streaming one-point trajectories is the common case; multi-point
    trajectories are reduced to their first point (what the controller is asked to reach next).
    """

    def finish(self, joint_names: tuple[str, ...] | None = None) -> CommandStream:
        dropped: dict[str, int] = {}
        order = _sorted(self.receive_ns)
        msgs = self.messages
        if joint_names is None:
            joint_names = tuple(msgs[order[0]].joint_names) if len(order) else ()
        keep: list[int] = []
        rows: list[np.ndarray] = []
        for i in order:
            names = msgs[i].joint_names
            positions = msgs[i].points[0].positions if msgs[i].points else None
            if positions is None:
                _count(dropped, "no_points")
                continue
            if len(positions) != len(names):
                _count(dropped, "malformed")
                continue
            if any(n not in names for n in joint_names):
                _count(dropped, "missing_joints")
                continue
            rows.append(positions[[names.index(n) for n in joint_names]])
            keep.append(i)
        data = np.stack(rows) if rows else np.zeros((0, len(joint_names)))
        receive = np.asarray(self.receive_ns, dtype=np.int64)[keep]
        return CommandStream(receive, tuple(joint_names), data, dropped)


class PointStampedSink(Sink):
    """Collects PointStamped messages (goals)."""

    def finish(self) -> PointStream:
        order = _sorted(self.receive_ns)
        msgs = self.messages
        points = np.asarray([(m.point.x, m.point.y, m.point.z) for m in msgs], dtype=np.float64).reshape(
            -1, 3
        )
        header = np.fromiter((_stamp_ns(m.header) for m in msgs), dtype=np.int64, count=len(msgs))
        return PointStream(np.asarray(self.receive_ns, dtype=np.int64)[order], header[order], points[order])


# ROS type -> sink class, for the message types the converter understands.
SINKS: dict[str, type] = {
    "sensor_msgs/msg/JointState": JointStateSink,
    "std_msgs/msg/Float64MultiArray": Float64MultiArraySink,
    "trajectory_msgs/msg/JointTrajectory": JointTrajectorySink,
    "geometry_msgs/msg/PointStamped": PointStampedSink,
}
