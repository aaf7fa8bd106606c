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

import contextlib
import logging
import queue
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

from mpo_ros.data.messages import typestore as get_typestore
from mpo_ros.errors import BagError

__all__ = ["STORAGES", "BagRecorder", "ros_type_name"]

log = logging.getLogger(__name__)

STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagRecorder:
    """Thread-safe rosbag2 writer: `open()`, `write*()` from any thread, `close()` once.

    One writer thread owns the storage: sqlite3 connections may only be used by the thread that made
    them, and a real-time loop (the sim node's physics) must not wait for the disk. `write*()` only
    checks the topic's type and queues the bytes. Messages written after `close()` (late callbacks
    during shutdown) are counted in `dropped_after_close` and otherwise ignored, so shutdown can never
    crash a node.
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
        self._types: dict[str, str] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, str, bytes, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> BagRecorder:
        """Create the bag (raises BagError if that fails) and start the writer thread."""
        with self._lock:
            if self._thread is not None or self._closed:
                raise BagError(f"bag recorder for {self.path} was already opened")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            started = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(started,), name=f"bag:{self.path.name}", daemon=True
            )
            self._thread.start()
        started.wait()
        if self._error is not None:
            raise BagError(f"cannot create bag {self.path}: {self._error}") from self._error
        return self

    def close(self) -> None:
        """Write what is queued and finish the bag (index, summary, metadata.yaml). Safe to call twice."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._closed = True
        if thread is None:
            return
        self._queue.put(None)
        thread.join()
        if self._error is not None:
            raise BagError(f"bag {self.path} could not be written: {self._error}") from self._error
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
        return self._thread is not None

    # --- writing (any thread) -----------------------------------------------------------------------
    def write_serialized(
        self, topic: str, msgtype: str, data: bytes | memoryview, receive_time_ns: int
    ) -> None:
        """Queue one CDR-serialised message (as from rclpy.serialization.serialize_message)."""
        with self._lock:
            if self._thread is None:
                self.dropped_after_close += 1
                return
            known = self._types.get(topic)
            if known is None:
                if msgtype not in self.typestore.fielddefs:
                    raise BagError(
                        f"cannot record {topic}: type {msgtype} is unknown to the typestore; "
                        "record only standard ROS 2 message types"
                    )
                self._types[topic] = msgtype
            elif known != msgtype:
                raise BagError(
                    f"topic {topic} was recorded as {known} but now carries {msgtype}; "
                    "record each topic with one type"
                )
            self._queue.put((topic, msgtype, bytes(data), int(receive_time_ns)))

    def write(self, topic: str, message: Any, receive_time_ns: int) -> None:
        """Serialise a `rosbags` message object (see mpo_ros.data.messages) and queue it."""
        msgtype = getattr(message, "__msgtype__", None)
        if msgtype is None:
            raise BagError(
                f"cannot record {type(message).__name__} on {topic}: pass a rosbags message "
                "(mpo_ros.data.messages) or use write_serialized() with CDR bytes"
            )
        data = self.typestore.serialize_cdr(message, msgtype)
        self.write_serialized(topic, msgtype, data, receive_time_ns)

    # --- the writer thread --------------------------------------------------------------------------
    def _run(self, started: threading.Event) -> None:
        writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[self.storage])
        try:
            writer.open()
        except (WriterError, OSError) as exc:
            self._error = exc
            started.set()
            return
        started.set()
        connections: dict[str, Connection] = {}
        last_flush = time.monotonic()
        try:
            while (item := self._queue.get()) is not None:
                topic, msgtype, data, receive_ns = item
                connection = connections.get(topic)
                if connection is None:
                    connection = writer.add_connection(topic, msgtype, typestore=self.typestore)
                    connections[topic] = connection
                writer.write(connection, receive_ns, data)
                if time.monotonic() - last_flush >= self.flush_seconds:
                    last_flush = time.monotonic()
                    _commit(writer)
                self.message_counts[topic] = self.message_counts.get(topic, 0) + 1
            writer.close()
        except BaseException as exc:  # kept and raised by close(): the writing thread must not vanish
            self._error = exc
            log.error("recording %s failed: %s", self.path, exc)
            with contextlib.suppress(Exception):
                writer.abort()


def _commit(writer: Writer) -> None:
    """Commit the sqlite3 transaction now and then so a killed process keeps its data."""
    connection = getattr(writer.storage, "conn", None)  # only the sqlite3 storage has one
    if connection is not None:
        connection.commit()


def ros_type_name(message: Any) -> str:
    """'sensor_msgs/msg/JointState' for an rclpy message object (read from its generated class)."""
    cls = type(message)
    package = cls.__module__.split(".")[0]
    return f"{package}/msg/{cls.__name__}"
