"""Read rosbag2 recordings (sqlite3 or MCAP) into numpy streams, surviving what real bags hold.

Real recordings are messy: old bags (metadata v5) store no message definitions, robots publish
types no standard typestore knows, a recorder killed by a power cut leaves no metadata.yaml or a
truncated file. The reader therefore

* decodes with the definitions stored in the bag where present and a chosen distro typestore
  (humble / jazzy / kilted) for the rest, per type, so one unknown type never hides the others;
* skips topics whose type cannot be decoded, with a count and a warning, never a crash;
* counts and skips messages that fail to deserialise;
* decodes the converter's message types in bulk straight into numpy columns (fastcdr.py), handing
  any message that path cannot parse to rosbags and counting it in `fallback_decodes`;
* opens a bag directory without metadata.yaml through its storage files, and keeps the messages
  read before a storage error (a truncated or corrupt file), recording what happened in the report;
* raises `BagError` naming the problem only when nothing at all can be read.

Everything it noticed lands in a `BagReport`, which the converter stores in the dataset's meta.json.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from mpo_ros.data import fastcdr, salvage
from mpo_ros.data.cdr import cdr_deserializer
from mpo_ros.data.messages import typestore as distro_typestore
from mpo_ros.data.streams import SINKS, Sink
from mpo_ros.errors import BagError

__all__ = ["BagReport", "TopicInfo", "open_bag", "read_streams"]

log = logging.getLogger(__name__)

STORAGE_SUFFIXES = (".db3", ".mcap")


@dataclass
class TopicInfo:
    """One topic as the bag describes it."""

    topic: str
    msgtype: str
    count: int
    # Why the topic cannot be decoded (None when it can).
    undecodable: str | None = None


@dataclass
class BagReport:
    """What reading one bag found: counts, skips and recoveries (stored in the dataset's meta.json)."""

    path: str
    storage: str = ""
    typestore: str = ""
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    # Messages actually read per topic (may fall short of `topics[t].count` after a storage error).
    messages_read: dict[str, int] = field(default_factory=dict)
    # Per-topic count of messages that failed to deserialise (skipped).
    decode_errors: dict[str, int] = field(default_factory=dict)
    # Per-topic count of messages the fast CDR decoder could not parse, decoded by rosbags instead.
    fallback_decodes: dict[str, int] = field(default_factory=dict)
    # Topics skipped entirely because their type cannot be decoded: topic -> reason.
    skipped_topics: dict[str, str] = field(default_factory=dict)
    # Recoveries and storage problems, in words (e.g. "metadata.yaml missing: ...").
    notes: list[str] = field(default_factory=list)
    # True when reading stopped early on a storage error; the data read so far was kept.
    partial: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Storage:
    """One readable unit: a bag directory (with metadata.yaml) or a single storage file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader: Any = None

    def open(self) -> list[Connection]:
        self.reader = Reader(self.path)
        self.reader.open()
        return list(self.reader.connections)

    def messages(self, connections: list[Connection]) -> Iterator[tuple[Connection, int, bytes]]:
        return self.reader.messages(connections=connections)

    def close(self) -> None:
        if self.reader is not None and self.reader.is_open:
            self.reader.close()


class _SalvagedMcap(_Storage):
    """A truncated MCAP file (no summary or footer: the recorder died) read record by record."""

    def open(self) -> list[Connection]:
        self.reader = salvage.McapScan(self.path)
        return self.reader.connections

    def messages(self, connections: list[Connection]) -> Iterator[tuple[Connection, int, bytes]]:
        return self.reader.messages(connections)

    def close(self) -> None:
        pass


def _storage_kind(path: Path) -> str:
    if path.is_dir():
        meta = path / "metadata.yaml"
        text = meta.read_text(errors="replace") if meta.is_file() else ""
        for kind in ("mcap", "sqlite3"):
            if f"storage_identifier: {kind}" in text:
                return kind
        files = [p.suffix for p in path.iterdir()]
        return "mcap" if ".mcap" in files else "sqlite3"
    return "mcap" if path.suffix == ".mcap" else "sqlite3"


def _open_storages(path: Path, report: BagReport) -> tuple[list[_Storage], list[list[Connection]]]:
    """Open a bag, falling back to its storage files when the directory-level metadata is unusable."""
    if not path.exists():
        raise BagError(f"bag {path} does not exist; pass a rosbag2 directory or a .db3/.mcap file")
    if path.is_file() and path.suffix not in STORAGE_SUFFIXES:
        raise BagError(f"{path} is not a rosbag2 bag: expected a bag directory or a .db3/.mcap file")
    report.storage = _storage_kind(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
        if not (path / "metadata.yaml").is_file():
            if not files:
                raise BagError(
                    f"{path} holds neither metadata.yaml nor any .db3/.mcap file; it is not a rosbag2 bag"
                )
            report.notes.append(
                f"metadata.yaml missing (recorder not shut down cleanly?): read {len(files)} storage "
                "file(s) directly"
            )
            return _open_files(files, report)
        storage = _Storage(path)
        try:
            return [storage], [storage.open()]
        except Exception as exc:
            if not files:
                raise BagError(f"cannot read bag {path}: {exc}") from exc
            report.notes.append(f"bag directory unreadable ({exc}); read its storage files directly")
            return _open_files(files, report)
    return _open_files([path], report)


def _open_files(files: list[Path], report: BagReport) -> tuple[list[_Storage], list[list[Connection]]]:
    storages: list[_Storage] = []
    connections: list[list[Connection]] = []
    errors: list[str] = []
    for file in files:
        storage: _Storage = _Storage(file)
        try:
            connections.append(storage.open())
            storages.append(storage)
            continue
        except Exception as exc:
            error = f"{file.name}: {exc}"
        if file.suffix == ".mcap":
            storage = _SalvagedMcap(file)
            try:
                conns = storage.open()
            except BagError as exc:
                errors.append(f"{error}; salvage failed: {exc}")
                continue
            report.notes.append(f"{error}; salvaged {storage.reader.summary()} by scanning the file")
            report.partial = True
            connections.append(conns)
            storages.append(storage)
        else:
            errors.append(error)
    if errors:
        report.notes.extend(f"unreadable storage file {e}" for e in errors)
    if not storages:
        raise BagError(
            f"no storage file of bag {report.path} can be read: {'; '.join(errors)}. "
            "The file is corrupt or not a rosbag2 storage file"
        )
    report.partial = report.partial or bool(errors)
    return storages, connections


def _typestore_for(connections: list[Connection], base: Typestore) -> Typestore:
    """The definitions the bag stores (they describe its bytes), the distro's for the rest.

    The common cases reuse one typestore: a bag without stored definitions (metadata v5) decodes
    with the cached distro typestore itself, so its generated deserialisers are built once per
    process; a bag storing every definition gets a store of just those (as rosbags' AnyReader does).
    Only a mix pays for a merged copy of the distro's types.
    """
    stored: dict[str, Any] = {}
    for connection in connections:
        definition = connection.msgdef
        try:
            if definition.format == MessageDefinitionFormat.MSG:
                stored.update(get_types_from_msg(definition.data, connection.msgtype))
            elif definition.format == MessageDefinitionFormat.IDL:
                separator = "=" * 80 + "\n"
                for part in definition.data.split(separator):
                    if part.startswith("IDL: "):
                        stored.update(get_types_from_idl(part.split("\n", 1)[1]))
                    elif part.strip():
                        stored.update(get_types_from_idl(part))
        except Exception as exc:  # a broken stored definition: fall back to the distro's
            log.warning("ignoring unparsable stored definition of %s: %s", connection.msgtype, exc)
    if not stored:
        return base
    missing = {c.msgtype for c in connections} - set(stored)
    types = {**base.fielddefs, **stored} if missing else stored
    key = repr(sorted(types.items())) if not missing else None
    if key is not None and key in _STORED_CACHE:
        return _STORED_CACHE[key]
    store = get_typestore(Stores.EMPTY)
    store.register(types)
    if key is not None:
        if len(_STORED_CACHE) > 32:
            _STORED_CACHE.clear()
        _STORED_CACHE[key] = store
    return store


# Typestores built from stored definitions, by their definitions: recordings of one robot share them.
_STORED_CACHE: dict[str, Typestore] = {}


def _undecodable_reason(store: Typestore, msgtype: str) -> str | None:
    try:
        store.get_msgdef(msgtype)
    except Exception as exc:
        return f"type {msgtype} unknown to the bag and the typestore ({type(exc).__name__}: {exc})"
    return None


class OpenBag:
    """An opened bag: topics, the report, and decoded message iteration (use via `open_bag`)."""

    def __init__(self, path: str | Path, typestore: str = "humble", fast_cdr: bool = True) -> None:
        self.path = Path(path)
        self.report = BagReport(path=str(self.path), typestore=typestore)
        self._storages, self._connections = _open_storages(self.path, self.report)
        all_connections = [c for group in self._connections for c in group]
        self.typestore = _typestore_for(all_connections, distro_typestore(typestore))
        self.deserialize = cdr_deserializer(self.typestore)
        self.fast_cdr = fast_cdr
        # Sink types whose definition here is the standard one the fast decoder implements.
        self.fast_types = (
            {t for t in SINKS if fastcdr.layout_supported(self.typestore, t)} if fast_cdr else set()
        )
        for connection in all_connections:
            info = self.report.topics.get(connection.topic)
            if info is None:
                reason = _undecodable_reason(self.typestore, connection.msgtype)
                self.report.topics[connection.topic] = TopicInfo(
                    connection.topic, connection.msgtype, connection.msgcount, reason
                )
                if reason is not None:
                    self.report.skipped_topics[connection.topic] = reason
            else:
                info.count += connection.msgcount
        if self.report.skipped_topics:
            log.warning(
                "%s: skipping %d topic(s) whose type cannot be decoded: %s",
                self.path,
                len(self.report.skipped_topics),
                ", ".join(f"{t} ({self.report.topics[t].msgtype})" for t in self.report.skipped_topics),
            )
        for note in self.report.notes:
            log.warning("%s: %s", self.path, note)

    @property
    def topics(self) -> dict[str, TopicInfo]:
        return self.report.topics

    def close(self) -> None:
        for storage in self._storages:
            storage.close()

    def __enter__(self) -> OpenBag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def messages(self, topics: Iterable[str]) -> Iterator[tuple[str, int, Any]]:
        """Decoded (topic, receive time ns, message) of the decodable `topics`, per storage file.

        A storage error mid-read ends the iteration of that file with the report marked partial.
        """
        wanted = self._decodable(topics)
        deserialize = self.deserialize
        for storage, connections in zip(self._storages, self._connections, strict=True):
            chosen = [c for c in connections if c.topic in wanted]
            if not chosen:
                continue
            read = dict.fromkeys(wanted, 0)
            try:
                for connection, timestamp, raw in storage.messages(chosen):
                    topic = connection.topic
                    try:
                        message = deserialize(raw, connection.msgtype)
                    except Exception:
                        self._decode_error(topic)
                        continue
                    read[topic] += 1
                    yield topic, timestamp, message
            except Exception as exc:
                self._stopped(storage, exc)
            finally:
                self._count_read(read)

    def collect(self, sinks: dict[str, Sink]) -> None:
        """Read every message of the sinks' topics into them, then decode them in bulk.

        The throughput-critical loop: per message one dict lookup and two list appends (receive
        time, raw bytes); `Sink.decode` does the rest per storage file, with the fast CDR path where
        the type allows it. Same error handling as :meth:`messages`.
        """
        wanted = self._decodable(sinks)
        for storage, connections in zip(self._storages, self._connections, strict=True):
            chosen = [c for c in connections if c.topic in wanted]
            if not chosen:
                continue
            targets = {
                c.id: (sinks[c.topic].pending_ns.append, sinks[c.topic].pending_raw.append) for c in chosen
            }
            # Storage plugins allocate per message and nothing here holds a cycle: pause the GC.
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                for connection, timestamp, raw in storage.messages(chosen):
                    add_time, add_raw = targets[connection.id]
                    add_time(timestamp)
                    add_raw(raw)
            except Exception as exc:
                self._stopped(storage, exc)
            finally:
                if gc_was_enabled:
                    gc.enable()
            for topic in sorted(wanted):
                self._decode(topic, sinks[topic])

    def _decode(self, topic: str, sink: Sink) -> None:
        fast = sink.msgtype in self.fast_types
        if self.fast_cdr and not fast and sink.pending_raw:
            note = (
                f"{topic}: the bag's definition of {sink.msgtype} is not the standard one; "
                "decoded message by message with rosbags"
            )
            if note not in self.report.notes:
                self.report.notes.append(note)
        counts = sink.decode(self.deserialize, fast=fast)
        if counts.errors:
            self.report.decode_errors[topic] = self.report.decode_errors.get(topic, 0) + counts.errors
        if counts.fallbacks:
            fallbacks = self.report.fallback_decodes
            fallbacks[topic] = fallbacks.get(topic, 0) + counts.fallbacks
        self._count_read({topic: counts.decoded})

    def _decodable(self, topics: Iterable[str]) -> set[str]:
        return {t for t in topics if t in self.report.topics and t not in self.report.skipped_topics}

    def _decode_error(self, topic: str) -> None:
        self.report.decode_errors[topic] = self.report.decode_errors.get(topic, 0) + 1

    def _stopped(self, storage: _Storage, exc: Exception) -> None:
        self.report.partial = True
        self.report.notes.append(f"reading {storage.path.name} stopped early: {type(exc).__name__}: {exc}")
        log.warning("%s: reading stopped early (%s); keeping what was read", storage.path, exc)

    def _count_read(self, read: dict[str, int]) -> None:
        for topic, count in read.items():
            self.report.messages_read[topic] = self.report.messages_read.get(topic, 0) + count


def open_bag(path: str | Path, typestore: str = "humble", fast_cdr: bool = True) -> OpenBag:
    """Open a rosbag2 directory or a .db3/.mcap file; raise BagError only when nothing is readable.

    `fast_cdr=False` decodes every message with rosbags (the reference the fast path is tested
    against; also a way out should a bag ever decode differently).
    """
    return OpenBag(path, typestore, fast_cdr)


def read_streams(bag: OpenBag, topics: Iterable[str]) -> dict[str, Any]:
    """One pass over the bag collecting each topic into its sink (see streams.SINKS).

    Returns topic -> sink; call the sink's `finish(...)` for the arrays. Topics of a type without a
    sink raise BagError naming the supported types.
    """
    sinks: dict[str, Any] = {}
    for topic in topics:
        info = bag.topics.get(topic)
        if info is None:
            continue
        sink_cls = SINKS.get(info.msgtype)
        if sink_cls is None:
            raise BagError(
                f"{bag.path}: topic {topic} has type {info.msgtype}; the converter reads {sorted(SINKS)}"
            )
        sinks[topic] = sink_cls()
    bag.collect(sinks)
    return sinks
