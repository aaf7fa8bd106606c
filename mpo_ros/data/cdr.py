"""CDR deserialisation that accepts what real ROS 2 middlewares write.

`rosbags` rejects a message with more than 3 bytes after its last field ("CDR message size
mismatch"). Fast-CDR 2 (rmw_fastrtps, the default middleware of Jazzy and Kilted) pads serialised
messages to an 8-byte boundary: a JointState from `rclpy.serialization.serialize_message` on Kilted
ends in 4 bytes of padding, so a bag recorded by `ros2 bag record` or by the sim node would not
decode. This deserialiser runs the same generated code as `Typestore.deserialize_cdr` (the public
`Msgdef` of `rosbags.interfaces`) and allows up to 7 bytes of trailing padding; anything longer is
still an error. It also skips a per-message method layer, which the read loop feels.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from rosbags.typesys.store import Typestore

__all__ = ["MAX_PADDING", "CdrError", "cdr_deserializer"]

# Alignment of CDR primitives is at most 8 bytes, so a padded message ends at most 7 bytes later.
MAX_PADDING = 7


class CdrError(ValueError):
    """A message's bytes do not match its type."""


def cdr_deserializer(store: Typestore) -> Callable[[bytes, str], Any]:
    """`deserialize(raw, typename) -> message` over `store`, tolerant of alignment padding."""
    msgdefs: dict[str, Any] = {}

    def deserialize(raw: bytes, typename: str) -> Any:
        msgdef = msgdefs.get(typename)
        if msgdef is None:
            msgdef = msgdefs[typename] = store.get_msgdef(typename)
        if len(raw) < 4 or raw[0] != 0 or raw[1] > 1:
            raise CdrError(f"{typename}: invalid or unsupported CDR encapsulation header")
        func = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
        try:
            message, end = func(raw[4:], 0, msgdef.cls, store)
        except (struct.error, UnicodeDecodeError, ValueError, IndexError) as exc:
            raise CdrError(f"{typename}: {exc}") from exc
        if end + 4 + MAX_PADDING < len(raw):
            raise CdrError(f"{typename}: {len(raw) - end - 4} bytes left after the last field")
        return message

    return deserialize
