"""Bulk CDR decoding of the converter's message types straight into numpy columns.

Why: decoding each message into a `rosbags` object costs more than reading it from storage, and the
converter throws the objects away again to build arrays. Messages of one topic of one recording,
though, nearly always share one byte layout: the same frame_id, the same joint names, the same
sequence lengths; only the numbers change. So each message is matched against the layout of the
previous one (length, the bytes from the frame_id to the end of the names, the sequence counts:
three C-level comparisons), and a whole group of messages with one layout becomes arrays through
strided views of the concatenated bytes (``np.ndarray(buffer=..., strides=(length, 8))``). A message
that matches no known layout is parsed field by field here, which yields its layout for the ones
after it.

The parse follows the CDR rules of `rosbags`' generated deserialisers exactly (alignment relative
to the 4-byte encapsulation header, float64 data aligned to 8 only when the sequence is non-empty,
strings NUL-terminated, sequence counts bounded by the bytes left, at most ``cdr.MAX_PADDING``
trailing bytes), so it accepts only messages `rosbags` decodes to the same values. Everything else
(big-endian data, a message that does not parse, a bag whose stored definition of the type differs)
is left to the `rosbags` path by the caller and counted; tests/data/test_fast_cdr.py checks that
both paths give bit-identical arrays on recorded and real bags.

Supported: sensor_msgs/msg/JointState, std_msgs/msg/Float64MultiArray,
geometry_msgs/msg/PointStamped, trajectory_msgs/msg/JointTrajectory (first point's positions).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rosbags.typesys.store import Typestore

from mpo_ros.data.cdr import MAX_PADDING
from mpo_ros.data.messages import FLOAT64_MULTI_ARRAY, JOINT_STATE, JOINT_TRAJECTORY, POINT_STAMPED
from mpo_ros.data.messages import typestore as distro_typestore

__all__ = ["PARSERS", "Layout", "LayoutGroup", "group_by_layout", "layout_supported"]

_U32 = struct.Struct("<I")
# Encapsulation header of little-endian plain CDR, as a "<H" of its first two bytes.
_CDR_LE = 0x0100
# Header stamp: int32 sec at byte 4, uint32 nanosec at byte 8 (right after the encapsulation header).
_SEC_AT, _NANOSEC_AT, _AFTER_STAMP = 4, 8, 12


class LayoutError(ValueError):
    """The fast path cannot parse this message (the caller hands it to rosbags)."""


@dataclass(frozen=True)
class Layout:
    """Where the numbers of every message with this exact byte layout are.

    A message has this layout when it has ``length`` bytes, holds ``prefix`` at ``prefix_start``
    (frame_id and names: the variable-length text before the numbers) and unpacks with ``check`` to
    ``expected`` (the encapsulation header and every sequence count).
    """

    length: int
    prefix_start: int
    prefix: bytes
    check: struct.Struct
    expected: tuple[int, ...]
    # (byte offset, count) of each float64 block, in the order of the type's fields.
    floats: tuple[tuple[int, int] | None, ...]
    names: tuple[str, ...] | None
    has_stamp: bool

    @property
    def key(self) -> tuple[int, bytes, tuple[int, ...]]:
        return self.length, self.prefix, self.expected


@dataclass
class LayoutGroup:
    """Messages sharing one layout: their rows (indices into the decoded batch) and bytes."""

    layout: Layout
    rows: np.ndarray  # [K] int64
    buffer: bytes  # the K messages concatenated, K * layout.length bytes

    def floats(self, field: int) -> np.ndarray | None:
        """[K, n] float64 of float block ``field`` (None where the layout has no such block)."""
        block = self.layout.floats[field]
        if block is None:
            return None
        offset, count = block
        if count == 0:
            return np.zeros((len(self.rows), 0))
        view = np.ndarray((len(self.rows), count), "<f8", self.buffer, offset, (self.layout.length, 8))
        return view.astype(np.float64)

    def stamp_ns(self) -> np.ndarray:
        """[K] int64 header stamps in nanoseconds."""
        stride = (self.layout.length,)
        sec = np.ndarray((len(self.rows),), "<i4", self.buffer, _SEC_AT, stride).astype(np.int64)
        nanosec = np.ndarray((len(self.rows),), "<u4", self.buffer, _NANOSEC_AT, stride)
        return sec * 1_000_000_000 + nanosec.astype(np.int64)


class _Cursor:
    """Field-by-field CDR reader over a whole serialised message (encapsulation header included)."""

    __slots__ = ("counts", "end", "pos", "raw")

    def __init__(self, raw: bytes, start: int) -> None:
        if len(raw) < max(start, 4) or raw[0] != 0 or raw[1] != 1:
            raise LayoutError("not little-endian plain CDR")
        self.raw = raw
        self.end = len(raw)
        self.pos = start
        self.counts: list[int] = []  # byte offsets of the sequence counts read

    def align(self, size: int) -> None:
        # CDR aligns relative to the body, which starts after the 4-byte encapsulation header.
        self.pos = ((self.pos - 4 + size - 1) & -size) + 4

    def uint32(self) -> int:
        self.align(4)
        if self.pos + 4 > self.end:
            raise LayoutError("message ends inside a uint32")
        (value,) = _U32.unpack_from(self.raw, self.pos)
        self.pos += 4
        return value

    def count(self, min_item_bytes: int) -> int:
        """A sequence count, checked against the bytes left as rosbags' check_sequence does."""
        self.align(4)
        self.counts.append(self.pos)
        size = self.uint32()
        if self.pos + size * min_item_bytes > self.end:
            raise LayoutError(f"sequence of {size} does not fit in the message")
        return size

    def string(self) -> str:
        size = self.uint32()
        stop = self.pos + size
        if size < 1 or stop > self.end or self.raw[stop - 1] != 0:
            raise LayoutError("invalid string")
        text = self.raw[self.pos : stop - 1].decode()
        self.pos = stop
        return text

    def strings(self) -> tuple[str, ...]:
        return tuple(self.string() for _ in range(self.count(5)))

    def float64s(self) -> tuple[int, int]:
        size = self.count(8)
        if size:
            self.align(8)
        offset = self.pos
        self.pos += 8 * size
        if self.pos > self.end:
            raise LayoutError("float64 sequence runs past the message")
        return offset, size

    def skip(self, align: int, size: int) -> int:
        self.align(align)
        offset = self.pos
        self.pos += size
        if self.pos > self.end:
            raise LayoutError("message ends inside a field")
        return offset

    def layout(
        self,
        prefix_start: int,
        prefix_end: int,
        floats: tuple[tuple[int, int] | None, ...],
        names: tuple[str, ...] | None,
        has_stamp: bool,
    ) -> Layout:
        if self.end - self.pos > MAX_PADDING:
            raise LayoutError(f"{self.end - self.pos} bytes left after the last field")
        counts = self.counts
        fmt, at = "<H", 2
        for offset in counts:
            fmt += f"{offset - at}xI"
            at = offset + 4
        check = struct.Struct(fmt)
        return Layout(
            length=self.end,
            prefix_start=prefix_start,
            prefix=self.raw[prefix_start:prefix_end],
            check=check,
            expected=check.unpack_from(self.raw),
            floats=floats,
            names=names,
            has_stamp=has_stamp,
        )


def _header(cursor: _Cursor) -> None:
    """Skip std_msgs/Header: the stamp is read per group, the frame_id is part of the prefix."""
    cursor.string()


def parse_joint_state(raw: bytes) -> Layout:
    """Layout of a sensor_msgs/msg/JointState: floats = (position, velocity, effort)."""
    cursor = _Cursor(raw, _AFTER_STAMP)
    _header(cursor)
    names = cursor.strings()
    prefix_end = cursor.pos
    cursor.counts.clear()  # the name count is inside the prefix
    floats = (cursor.float64s(), cursor.float64s(), cursor.float64s())
    return cursor.layout(_AFTER_STAMP, prefix_end, floats, names, True)


def parse_float64_multi_array(raw: bytes) -> Layout:
    """Layout of a std_msgs/msg/Float64MultiArray: floats = (data,)."""
    cursor = _Cursor(raw, 4)
    for _ in range(cursor.count(1)):  # layout.dim: MultiArrayDimension(label, size, stride)
        cursor.string()
        cursor.skip(4, 8)
    cursor.skip(4, 4)  # layout.data_offset
    prefix_end = cursor.pos
    cursor.counts.clear()
    floats = (cursor.float64s(),)
    return cursor.layout(0, prefix_end, floats, None, False)


def parse_point_stamped(raw: bytes) -> Layout:
    """Layout of a geometry_msgs/msg/PointStamped: floats = ((x, y, z),)."""
    cursor = _Cursor(raw, _AFTER_STAMP)
    _header(cursor)
    prefix_end = cursor.pos
    floats = ((cursor.skip(8, 24), 3),)
    return cursor.layout(_AFTER_STAMP, prefix_end, floats, None, True)


def parse_joint_trajectory(raw: bytes) -> Layout:
    """Layout of a trajectory_msgs/msg/JointTrajectory: floats = (first point's positions or None,)."""
    cursor = _Cursor(raw, _AFTER_STAMP)
    _header(cursor)
    names = cursor.strings()
    prefix_end = cursor.pos
    cursor.counts.clear()
    first: tuple[int, int] | None = None
    for k in range(cursor.count(1)):
        positions = cursor.float64s()
        for _ in range(3):  # velocities, accelerations, effort
            cursor.float64s()
        cursor.skip(4, 8)  # time_from_start: builtin_interfaces/Duration
        if k == 0:
            first = positions
    return cursor.layout(_AFTER_STAMP, prefix_end, (first,), names, True)


PARSERS: dict[str, Callable[[bytes], Layout]] = {
    JOINT_STATE: parse_joint_state,
    FLOAT64_MULTI_ARRAY: parse_float64_multi_array,
    POINT_STAMPED: parse_point_stamped,
    JOINT_TRAJECTORY: parse_joint_trajectory,
}


def group_by_layout(
    raws: Sequence[bytes], parse: Callable[[bytes], Layout]
) -> tuple[list[LayoutGroup], list[int]]:
    """Messages grouped by layout, and the indices of those the fast path cannot parse.

    The hot loop: a message with the previous message's layout costs a length check, one prefix
    comparison and one struct unpack; only a layout change parses the message field by field.
    """
    if raws and not isinstance(raws[0], bytes):  # storage plugins give bytes; be safe with views
        raws = [bytes(raw) for raw in raws]
    groups: dict[tuple[int, bytes, tuple[int, ...]], tuple[Layout, list[int]]] = {}
    failed: list[int] = []
    length, prefix, start, expected = -1, b"", 0, ()
    unpack: Callable[[bytes], tuple[int, ...]] = _U32.unpack_from
    add: Callable[[int], None] = failed.append
    for index, raw in enumerate(raws):
        if len(raw) == length and raw.startswith(prefix, start) and unpack(raw) == expected:
            add(index)
            continue
        try:
            layout = parse(raw)
        except (LayoutError, struct.error, UnicodeDecodeError):
            failed.append(index)
            continue
        entry = groups.get(layout.key)
        if entry is None:
            entry = groups[layout.key] = (layout, [])
        layout, rows = entry
        add = rows.append
        add(index)
        length, prefix, start = layout.length, layout.prefix, layout.prefix_start
        unpack, expected = layout.check.unpack_from, layout.expected
    out = [
        LayoutGroup(layout, np.asarray(rows, dtype=np.int64), b"".join([raws[i] for i in rows]))
        for layout, rows in groups.values()
    ]
    return out, failed


# Types whose definitions the parsers above implement, with the types they contain.
_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    JOINT_STATE: ("std_msgs/msg/Header", "builtin_interfaces/msg/Time"),
    FLOAT64_MULTI_ARRAY: ("std_msgs/msg/MultiArrayLayout", "std_msgs/msg/MultiArrayDimension"),
    POINT_STAMPED: ("std_msgs/msg/Header", "builtin_interfaces/msg/Time", "geometry_msgs/msg/Point"),
    JOINT_TRAJECTORY: (
        "std_msgs/msg/Header",
        "builtin_interfaces/msg/Time",
        "trajectory_msgs/msg/JointTrajectoryPoint",
        "builtin_interfaces/msg/Duration",
    ),
}


def layout_supported(store: Typestore, msgtype: str) -> bool:
    """Whether `store` defines `msgtype` (and what it contains) as the parsers here assume.

    A bag may store its own definition of a type; only the standard one (identical in every ROS 2
    distro the converter accepts) may take the fast path.
    """
    if msgtype not in PARSERS:
        return False
    reference = distro_typestore("humble").fielddefs
    try:
        return all(store.fielddefs[name] == reference[name] for name in (msgtype, *_DEPENDENCIES[msgtype]))
    except KeyError:
        return False
