"""Recover the messages of a truncated MCAP file, the usual remains of a recorder that was killed.

`ros2 bag record` (and BagRecorder) write the MCAP summary and footer only on a clean shutdown; a
power cut or SIGKILL leaves a file whose data records are intact but which the `rosbags` reader
rejects ("File end magic is invalid"). MCAP is a flat sequence of records (opcode u8, length u64,
content; https://mcap.dev/spec), so a forward scan recovers every Schema, Channel and Message up to
the cut, including the complete records inside a cut-off uncompressed chunk.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    MessageDefinition,
    MessageDefinitionFormat,
)

from mpo_ros.errors import BagError

__all__ = ["McapScan"]

MAGIC = b"\x89MCAP0\r\n"
OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END = 0x03, 0x04, 0x05, 0x06, 0x0F
_RECORD = struct.Struct("<BQ")
_MESSAGE = struct.Struct("<HIQQ")
_CHUNK = struct.Struct("<QQQI")
_FORMATS = {"ros2msg": MessageDefinitionFormat.MSG, "ros2idl": MessageDefinitionFormat.IDL}


def _string(buf: memoryview, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<I", buf, pos)
    return bytes(buf[pos + 4 : pos + 4 + size]).decode(), pos + 4 + size


def _decompress(compression: str, data: memoryview, size: int) -> bytes:
    if compression == "":
        return bytes(data)
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        return zstd.decompress(bytes(data))
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(bytes(data))
    raise BagError(f"MCAP chunk compression '{compression}' is not supported")


class McapScan:
    """Schemas, channels and messages of an MCAP file, read front to back until the data ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = memoryview(path.read_bytes())
        if bytes(self.data[:8]) != MAGIC:
            raise BagError(f"{path} does not start with the MCAP magic bytes; it is not an MCAP file")
        self.schemas: dict[int, tuple[str, str, str]] = {}
        self.channels: dict[int, tuple[str, int]] = {}
        self.counts: dict[int, int] = {}
        self.truncated_at: int | None = None
        self.lost_chunks = 0
        for _ in self._records(count_only=True):
            pass
        self.connections = [self._connection(cid) for cid in sorted(self.channels)]

    def summary(self) -> str:
        cut = f", file cut at byte {self.truncated_at}" if self.truncated_at is not None else ""
        lost = f", {self.lost_chunks} unreadable chunk(s)" if self.lost_chunks else ""
        return f"{sum(self.counts.values())} message(s) on {len(self.channels)} channel(s){cut}{lost}"

    def _connection(self, channel_id: int) -> Connection:
        topic, schema_id = self.channels[channel_id]
        name, encoding, definition = self.schemas.get(schema_id, ("", "", ""))
        fmt = _FORMATS.get(encoding, MessageDefinitionFormat.NONE)
        return Connection(
            id=channel_id,
            topic=topic,
            msgtype=name,
            msgdef=MessageDefinition(fmt, definition if fmt != MessageDefinitionFormat.NONE else ""),
            digest="",
            msgcount=self.counts.get(channel_id, 0),
            ext=ConnectionExtRosbag2(serialization_format="cdr", offered_qos_profiles=[]),
            owner=self,
        )

    def messages(self, connections: list[Connection]) -> Iterator[tuple[Connection, int, bytes]]:
        wanted = {c.id: c for c in connections}
        for channel_id, log_time, payload in self._records(count_only=False):
            connection = wanted.get(channel_id)
            if connection is not None:
                yield connection, log_time, payload

    # --- record scanning ---------------------------------------------------------------------------
    def _records(self, count_only: bool) -> Iterator[tuple[int, int, bytes]]:
        yield from self._scan(self.data, 8, top_level=True, count_only=count_only)

    def _scan(
        self, buf: memoryview, pos: int, top_level: bool, count_only: bool
    ) -> Iterator[tuple[int, int, bytes]]:
        end = len(buf)
        while pos + _RECORD.size <= end:
            opcode, length = _RECORD.unpack_from(buf, pos)
            body = pos + _RECORD.size
            if body + length > end:
                if top_level:
                    self.truncated_at = pos
                    if opcode == OP_CHUNK:
                        yield from self._chunk(buf[body:end], count_only, cut=True)
                return
            record = buf[body : body + length]
            pos = body + length
            if opcode == OP_MESSAGE:
                channel_id, _seq, log_time, _publish = _MESSAGE.unpack_from(record, 0)
                if count_only:
                    self.counts[channel_id] = self.counts.get(channel_id, 0) + 1
                else:
                    yield channel_id, log_time, bytes(record[_MESSAGE.size :])
            elif opcode == OP_CHUNK:
                yield from self._chunk(record, count_only, cut=False)
            elif opcode == OP_SCHEMA and count_only:
                (schema_id,) = struct.unpack_from("<H", record, 0)
                name, p = _string(record, 2)
                encoding, p = _string(record, p)
                (size,) = struct.unpack_from("<I", record, p)
                self.schemas[schema_id] = (name, encoding, bytes(record[p + 4 : p + 4 + size]).decode())
            elif opcode == OP_CHANNEL and count_only:
                channel_id, schema_id = struct.unpack_from("<HH", record, 0)
                topic, _ = _string(record, 4)
                self.channels[channel_id] = (topic, schema_id)
            elif opcode == OP_DATA_END and top_level:
                return

    def _chunk(self, record: memoryview, count_only: bool, cut: bool) -> Iterator[tuple[int, int, bytes]]:
        """Records inside a chunk; a cut-off chunk yields its complete records if uncompressed."""
        try:
            _start, _end, size, _crc = _CHUNK.unpack_from(record, 0)
            compression, p = _string(record, _CHUNK.size)
            (length,) = struct.unpack_from("<Q", record, p)
            data = record[p + 8 : p + 8 + length]
            if cut and compression != "":
                raise BagError("compressed chunk cut off")
            inner = memoryview(_decompress(compression, data, size))
        except Exception:  # any damage inside the chunk loses that chunk only
            if count_only:
                self.lost_chunks += 1
            return
        yield from self._scan(inner, 0, top_level=False, count_only=count_only)
