"""Message streams as numpy columns: JointState, Float64MultiArray, JointTrajectory, PointStamped.

Each `*Sink` receives the raw CDR bytes of its topic in the hot read loop, where it only appends
them to Python lists (the per-message cost must stay far below deserialisation, see
benchmarks/bag_convert.py). `Sink.decode()` then decodes them in bulk into blocks of numpy columns
(fastcdr.py, with rosbags as the fallback) and `finish()` assembles the stream from the blocks in a
few vectorised calls. Both decoding paths feed the same `finish()`, so they give the same arrays.

Streams come out sorted by receive time (the bag timestamp, one clock for every topic of a
recording). Header stamps are kept alongside: on simulators they are sim time and may repeat.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mpo_ros.data.fastcdr import PARSERS, group_by_layout
from mpo_ros.data.messages import FLOAT64_MULTI_ARRAY, JOINT_STATE, JOINT_TRAJECTORY, POINT_STAMPED

__all__ = [
    "SINKS",
    "Block",
    "CommandStream",
    "DecodeCounts",
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


@dataclass
class Block:
    """Decoded messages of one shape: a layout group (fast path) or messages decoded by rosbags."""

    rows: np.ndarray  # [K] int64: positions in the sink's arrival order
    names: tuple[str, ...] | None  # joint names carried by the messages (None: the type has none)
    header_ns: np.ndarray | None  # [K] int64 header stamps (None: the type has no header)
    # One [K, n] float64 array per float field of the type; None where a message lacks the field
    # (a JointTrajectory without points).
    values: tuple[np.ndarray | None, ...]


@dataclass
class DecodeCounts:
    """What one `Sink.decode` call did."""

    decoded: int = 0
    errors: int = 0  # messages neither path could decode (skipped)
    fallbacks: int = 0  # messages the fast path could not parse, decoded by rosbags instead


class Sink:
    """Every message of one topic, in arrival order: raw bytes while reading, decoded blocks after.

    The read loop only appends receive time and raw bytes to `pending_ns` / `pending_raw` (two list
    appends per message, no call). `decode()` then turns the pending messages into blocks of numpy
    columns in bulk: the fast path (fastcdr.py) for messages whose layout it parses, rosbags for the
    rest. `finish()` (per subclass) assembles the stream from the blocks.
    """

    msgtype: ClassVar[str] = ""
    # Number of float fields in `Block.values`.
    fields: ClassVar[int] = 1

    def __init__(self) -> None:
        self.receive_ns: list[int] = []
        self.blocks: list[Block] = []
        self.pending_ns: list[int] = []
        self.pending_raw: list[bytes] = []

    def __len__(self) -> int:
        return len(self.receive_ns)

    def decode(self, deserialize: Callable[[bytes, str], Any], fast: bool = True) -> DecodeCounts:
        """Decode the pending messages into blocks (rosbags for all of them when `fast` is False)."""
        raws, times = self.pending_raw, self.pending_ns
        self.pending_raw, self.pending_ns = [], []
        if not raws:
            return DecodeCounts()
        with _gc_paused():
            groups, slow = group_by_layout(raws, PARSERS[self.msgtype]) if fast else ([], range(len(raws)))
            messages: list[Any] = []
            slow_rows: list[int] = []
            errors: list[int] = []
            for i in slow:
                try:
                    messages.append(deserialize(raws[i], self.msgtype))
                except Exception:
                    errors.append(i)
                    continue
                slow_rows.append(i)
            base = len(self.receive_ns)
            if errors:
                ok = np.ones(len(raws), dtype=bool)
                ok[errors] = False
                index = np.cumsum(ok) - 1 + base
                self.receive_ns.extend(t for t, good in zip(times, ok.tolist(), strict=True) if good)
            else:
                index = np.arange(base, base + len(raws))
                self.receive_ns.extend(times)
            for group in groups:
                self.blocks.append(
                    Block(
                        index[group.rows],
                        group.layout.names,
                        group.stamp_ns() if group.layout.has_stamp else None,
                        tuple(group.floats(j) for j in range(self.fields)),
                    )
                )
            if messages:
                self.blocks.extend(self._blocks_from_messages(messages, index[slow_rows]))
        return DecodeCounts(len(raws) - len(errors), len(errors), len(slow_rows) if fast else 0)

    def message_values(self, message: Any) -> tuple[tuple[str, ...] | None, int | None, tuple[Any, ...]]:
        """(names, header stamp ns, float fields) of one rosbags message object."""
        raise NotImplementedError

    def _blocks_from_messages(self, messages: list[Any], rows: np.ndarray) -> list[Block]:
        shapes: dict[tuple[Any, ...], list[tuple[int, int | None, tuple[Any, ...]]]] = {}
        for message, row in zip(messages, rows.tolist(), strict=True):
            names, stamp, values = self.message_values(message)
            key = (names, tuple(None if v is None else len(v) for v in values))
            shapes.setdefault(key, []).append((row, stamp, values))
        blocks = []
        for (names, widths), items in shapes.items():
            stamps = [stamp for _, stamp, _ in items]
            blocks.append(
                Block(
                    np.asarray([row for row, _, _ in items], dtype=np.int64),
                    names,
                    None if stamps[0] is None else np.asarray(stamps, dtype=np.int64),
                    tuple(
                        None
                        if width is None
                        else np.asarray([v[j] for _, _, v in items], dtype=np.float64).reshape(
                            len(items), width
                        )
                        for j, width in enumerate(widths)
                    ),
                )
            )
        return blocks

    @property
    def names(self) -> list[list[str]]:
        """The distinct joint-name lists the messages carry, in order of first arrival."""
        first: dict[tuple[str, ...], int] = {}
        for block in self.blocks:
            if block.names is not None and len(block.rows):
                first[block.names] = min(first.get(block.names, len(self)), int(block.rows.min()))
        return [list(names) for names in sorted(first, key=first.__getitem__)]

    def _block_index(self) -> np.ndarray:
        """[N] index into `blocks` of every decoded message."""
        index = np.zeros(len(self), dtype=np.int64)
        for b, block in enumerate(self.blocks):
            index[block.rows] = b
        return index

    def _first_names(self, order: np.ndarray) -> tuple[str, ...]:
        """Names carried by the earliest message (the default column order)."""
        if not len(order):
            return ()
        return tuple(self.blocks[self._block_index()[order[0]]].names or ())


def _count(dropped: dict[str, int], reason: str, n: int = 1) -> None:
    if n:
        dropped[reason] = dropped.get(reason, 0) + n


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Bulk decoding and array building allocate many objects and no cycles: the cyclic GC only slows
    them down (keeping every decoded message alive made it rescan them, half the read time)."""
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


class JointStateSink(Sink):
    """Collects JointState messages; joints are matched by name, never by position in the message."""

    msgtype = JOINT_STATE
    fields = 3  # position, velocity, effort

    def message_values(self, message: Any) -> tuple[tuple[str, ...] | None, int | None, tuple[Any, ...]]:
        return (
            tuple(message.name),
            _stamp_ns(message.header),
            (message.position, message.velocity, message.effort),
        )

    def finish(self, joint_names: tuple[str, ...] | None = None) -> JointStateStream:
        """Columns in `joint_names` order (default: the first message's names).

        Messages lacking one of those joints, or whose position count does not match their names,
        are dropped and counted; velocity/effort vectors that are empty or the wrong length are NaN.
        Work is per block (one in a normal recording), vectorised within it.
        """
        with _gc_paused():
            return self._finish(joint_names)

    def _finish(self, joint_names: tuple[str, ...] | None) -> JointStateStream:
        dropped: dict[str, int] = {}
        count = len(self)
        order = _sorted(self.receive_ns)
        if joint_names is None:
            joint_names = self._first_names(order)
        width = len(joint_names)
        columns = [np.full((count, width), np.nan) for _ in range(3)]
        header = np.zeros(count, dtype=np.int64)
        valid = np.zeros(count, dtype=bool)
        for block in self.blocks:
            names = block.names or ()
            header[block.rows] = block.header_ns
            have = {name: k for k, name in enumerate(names)}
            if any(name not in have for name in joint_names):
                _count(dropped, "missing_joints", len(block.rows))
                continue
            cols = [have[name] for name in joint_names]
            for values, out in zip(block.values, columns, strict=True):
                if values is not None and values.shape[1] == len(names):
                    out[block.rows] = values[:, cols]
            if block.values[0] is not None and block.values[0].shape[1] == len(names):
                valid[block.rows] = True
            else:
                _count(dropped, "malformed", len(block.rows))
        keep = order[valid[order]]
        return JointStateStream(
            np.asarray(self.receive_ns, dtype=np.int64)[keep],
            header[keep],
            tuple(joint_names),
            columns[0][keep],
            columns[1][keep],
            columns[2][keep],
            dropped,
        )


class Float64MultiArraySink(Sink):
    """Collects Float64MultiArray commands (data in the contract's joint order)."""

    msgtype = FLOAT64_MULTI_ARRAY

    def message_values(self, message: Any) -> tuple[tuple[str, ...] | None, int | None, tuple[Any, ...]]:
        return None, None, (message.data,)

    def finish(self, width: int | None = None) -> CommandStream:
        """Commands of `width` entries (default: the most common length); others dropped and counted."""
        dropped: dict[str, int] = {}
        count = len(self)
        order = _sorted(self.receive_ns)
        lengths = np.zeros(count, dtype=np.int64)
        for block in self.blocks:
            lengths[block.rows] = block.values[0].shape[1]
        if width is None:
            width = int(np.bincount(lengths).argmax()) if count else 0
        keep = order[lengths[order] == width]
        _count(dropped, "wrong_length", len(order) - len(keep))
        data = np.zeros((count, width))
        for block in self.blocks:
            if block.values[0].shape[1] == width:
                data[block.rows] = block.values[0]
        receive = np.asarray(self.receive_ns, dtype=np.int64)[keep]
        return CommandStream(receive, None, data[keep], dropped)


class JointTrajectorySink(Sink):
    """Collects JointTrajectory commands: the first point's positions, matched by joint name.

    A position controller streaming one-point trajectories is the common case; multi-point
    trajectories are reduced to their first point (what the controller is asked to reach next).
    """

    msgtype = JOINT_TRAJECTORY

    def message_values(self, message: Any) -> tuple[tuple[str, ...] | None, int | None, tuple[Any, ...]]:
        first = message.points[0].positions if message.points else None
        return tuple(message.joint_names), _stamp_ns(message.header), (first,)

    def finish(self, joint_names: tuple[str, ...] | None = None) -> CommandStream:
        dropped: dict[str, int] = {}
        count = len(self)
        order = _sorted(self.receive_ns)
        if joint_names is None:
            joint_names = self._first_names(order)
        data = np.zeros((count, len(joint_names)))
        valid = np.zeros(count, dtype=bool)
        for block in self.blocks:
            names, positions = block.names or (), block.values[0]
            if positions is None:
                _count(dropped, "no_points", len(block.rows))
            elif positions.shape[1] != len(names):
                _count(dropped, "malformed", len(block.rows))
            elif any(n not in names for n in joint_names):
                _count(dropped, "missing_joints", len(block.rows))
            else:
                data[block.rows] = positions[:, [names.index(n) for n in joint_names]]
                valid[block.rows] = True
        keep = order[valid[order]]
        receive = np.asarray(self.receive_ns, dtype=np.int64)[keep]
        return CommandStream(receive, tuple(joint_names), data[keep], dropped)


class PointStampedSink(Sink):
    """Collects PointStamped messages (goals)."""

    msgtype = POINT_STAMPED

    def message_values(self, message: Any) -> tuple[tuple[str, ...] | None, int | None, tuple[Any, ...]]:
        point = message.point
        return None, _stamp_ns(message.header), ((point.x, point.y, point.z),)

    def finish(self) -> PointStream:
        count = len(self)
        order = _sorted(self.receive_ns)
        points = np.zeros((count, 3))
        header = np.zeros(count, dtype=np.int64)
        for block in self.blocks:
            points[block.rows] = block.values[0]
            header[block.rows] = block.header_ns
        return PointStream(np.asarray(self.receive_ns, dtype=np.int64)[order], header[order], points[order])


# ROS type -> sink class, for the message types the converter understands.
SINKS: dict[str, type[Sink]] = {
    sink.msgtype: sink
    for sink in (JointStateSink, Float64MultiArraySink, JointTrajectorySink, PointStampedSink)
}
