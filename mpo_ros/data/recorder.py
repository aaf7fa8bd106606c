"""Record rosbag2 files (MCAP or sqlite3) from Python, with or without a running ROS graph.

`BagRecorder` wraps the `rosbags` Writer for the one job the sim node and the tests need: append
messages to a bag from any thread and leave a valid bag behind when the process shuts down.

* With ROS, a subscription callback hands over the bytes from `rclpy.serialization.serialize_message`
  (CDR with its encapsulation header, exactly what `ros2 bag record` stores) plus the ROS type name
  and the receive time: `write_serialized(topic, "sensor_msgs/msg/JointState", data, t_ns)`.
* Without ROS, `write(topic, message, t_ns)` serialises a `rosbags` message object (see
  `mpo_ros.data.messages`), so tests write the same bytes a robot would.

The message definitions go into the bag (metadata v9 / MCAP schemas), so the bag reads back without
guessing a typestore. sqlite3 bags are committed every `flush_seconds`, so a process killed without
`close()` still leaves every message up to the last flush readable (the converter then opens the
storage file directly, since metadata.yaml is only written by `close()`).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

from mpo_ros.data.messages import typestore as get_typestore
from mpo_ros.errors import BagError

__all__ = ["STORAGES", "BagRecorder"]

log = logging.getLogger(__name__)

STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagRecorder:
    """Thread-safe rosbag2 writer: `open()`, `write*()` from any thread, `close()` once.

    Messages written after `close()` (late callbacks during shutdown) are counted in
    `dropped_after_close` and otherwise ignored, so shutdown can never crash a node.
    """

    def __init__(
        self,
        path: str | Path,
        storage: str = "mcap",
        typestore: str = "kilted",
        flush_seconds: float = 1.0,
    ) -> None:
        if storage not in STORAGES:
            raise BagError(f"unknown bag storage '{storage}'; choose one of {sorted(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(
                f"{self.path} exists already; choose a new bag directory (bags are never overwritten)"
            )
        self.storage = storage
        self.typestore = get_typestore(typestore)
        self.flush_seconds = float(flush_seconds)
        self.message_counts: dict[str, int] = {}
        self.dropped_after_close = 0
        self._writer: Writer | None = None
        self._connections: dict[str, Connection] = {}
        self._types: dict[str, str] = {}
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> BagRecorder:
        with self._lock:
            if self._writer is not None or self._closed:
                raise BagError(f"bag recorder for {self.path} was already opened")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[self.storage])
            try:
                writer.open()
            except WriterError as exc:
                raise BagError(f"cannot create bag {self.path}: {exc}") from exc
            self._writer = writer
        return self

    def close(self) -> None:
        """Finish the bag (index, summary, metadata.yaml). Safe to call twice or from a signal path."""
        with self._lock:
            writer, self._writer = self._writer, None
            self._closed = True
            if writer is None:
                return
            try:
                writer.close()
            except Exception as exc:
                log.error("closing bag %s failed (%s); aborting the storage", self.path, exc)
                try:
                    writer.abort()
                finally:
                    raise BagError(f"bag {self.path} could not be finished: {exc}") from exc
        log.info("bag %s closed: %s", self.path, self.message_counts)

    def __enter__(self) -> BagRecorder:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    # --- writing -----------------------------------------------------------------------------------
    def write_serialized(
        self, topic: str, msgtype: str, data: bytes | memoryview, receive_time_ns: int
    ) -> None:
        """Append one CDR-serialised message (as from rclpy.serialization.serialize_message)."""
        with self._lock:
            writer = self._writer
            if writer is None:
                self.dropped_after_close += 1
                return
            connection = self._connections.get(topic)
            if connection is None:
                connection = self._add_connection(writer, topic, msgtype)
            elif self._types[topic] != msgtype:
                raise BagError(
                    f"topic {topic} was recorded as {self._types[topic]} but now carries {msgtype}; "
                    "record each topic with one type"
                )
            writer.write(connection, int(receive_time_ns), data)
            self.message_counts[topic] = self.message_counts.get(topic, 0) + 1
            self._maybe_flush(writer)

    def write(self, topic: str, message: Any, receive_time_ns: int) -> None:
        """Serialise a `rosbags` message object (see mpo_ros.data.messages) and append it."""
        msgtype = getattr(message, "__msgtype__", None)
        if msgtype is None:
            raise BagError(
                f"cannot record {type(message).__name__} on {topic}: pass a rosbags message "
                "(mpo_ros.data.messages) or use write_serialized() with CDR bytes"
            )
        data = self.typestore.serialize_cdr(message, msgtype)
        self.write_serialized(topic, msgtype, data, receive_time_ns)

    def _add_connection(self, writer: Writer, topic: str, msgtype: str) -> Connection:
        if msgtype not in self.typestore.fielddefs:
            raise BagError(
                f"cannot record {topic}: type {msgtype} is unknown to the typestore; "
                "record only standard ROS 2 message types"
            )
        connection = writer.add_connection(topic, msgtype, typestore=self.typestore)
        self._connections[topic] = connection
        self._types[topic] = msgtype
        return connection

    def _maybe_flush(self, writer: Writer) -> None:
        """Commit sqlite3 transactions now and then so a killed process keeps its data."""
        now = time.monotonic()
        if now - self._last_flush < self.flush_seconds:
            return
        self._last_flush = now
        connection = getattr(writer.storage, "conn", None)  # only the sqlite3 storage has one
        if connection is not None:
            connection.commit()
