"""The mpo_ros metadata inside an ONNX policy file: encode, decode, seal and verify.

An exported policy carries everything the robot needs besides its weights as ONNX ``metadata_props``
(string key -> string value), so that one ``.onnx`` file is the whole deliverable:

====================================  ===========================================================
key                                   value
====================================  ===========================================================
``mpo_ros.format_version``            integer, the layout of these keys (:data:`FORMAT_VERSION`)
``mpo_ros.robot_spec``                the robot contract, ``RobotSpec.to_json()`` (full precision,
                                      carries its own ``contract_version``); absent for policies of
                                      plain gymnasium environments (e.g. Hopper), which evaluation can
                                      run but the ROS node refuses
``mpo_ros.observation_names``         JSON list, one name per observation element, layout order
``mpo_ros.provenance``                JSON object: package version, git commit, training step,
                                      evaluation figures, env id, creation time, parity error, ...
``mpo_ros.sha256``                    SHA-256 of the whole file with this value replaced by
                                      :data:`SEAL_PLACEHOLDER`: catches bit rot and edits that the
                                      protobuf parser would accept (a flipped weight byte parses fine)
====================================  ===========================================================

This module needs neither torch nor onnx nor ROS: the robot reads metadata through onnxruntime's
``custom_metadata_map`` and the export side writes the dict returned by :func:`encode_metadata`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mpo_ros.contract.spec import CONTRACT_VERSION, RobotSpec
from mpo_ros.errors import PolicyFileError, SpecError

__all__ = [
    "FORMAT_VERSION",
    "INPUT_NAME",
    "KEY_FORMAT_VERSION",
    "KEY_OBSERVATION_NAMES",
    "KEY_PROVENANCE",
    "KEY_ROBOT_SPEC",
    "KEY_SHA256",
    "OUTPUT_NAME",
    "SEAL_PLACEHOLDER",
    "ContractMismatchError",
    "CorruptPolicyError",
    "MissingContractError",
    "NotOnnxError",
    "PolicyMetadata",
    "UnsupportedVersionError",
    "check_io_shapes",
    "decode_metadata",
    "encode_metadata",
    "seal",
    "verify_seal",
]

# Bump when a key is added with a meaning old readers would get wrong, or one changes meaning.
FORMAT_VERSION = 1

KEY_FORMAT_VERSION = "mpo_ros.format_version"
KEY_ROBOT_SPEC = "mpo_ros.robot_spec"
KEY_OBSERVATION_NAMES = "mpo_ros.observation_names"
KEY_PROVENANCE = "mpo_ros.provenance"
KEY_SHA256 = "mpo_ros.sha256"

INPUT_NAME = "observation"
OUTPUT_NAME = "action"

# 64 characters, the length of a hex SHA-256, and never valid hex, so a sealed file cannot contain it.
SEAL_PLACEHOLDER = "UNSEALED" * 8

_REEXPORT = "re-export it with `mpo-ros export --run runs/<name> --out <file>.onnx`"


class NotOnnxError(PolicyFileError):
    """The file is empty, truncated or not an ONNX model at all."""


class CorruptPolicyError(PolicyFileError):
    """The file parses but its bytes differ from what `mpo-ros export` wrote (checksum mismatch)."""


class MissingContractError(PolicyFileError):
    """The ONNX file lacks the mpo_ros metadata (or the robot contract where one is required)."""


class UnsupportedVersionError(PolicyFileError):
    """The file's metadata format or contract version is newer (or older) than this mpo_ros reads."""


class ContractMismatchError(PolicyFileError):
    """The graph's input/output shapes disagree with the contract in the metadata."""


@dataclass(frozen=True)
class PolicyMetadata:
    """Decoded mpo_ros metadata of one policy file."""

    format_version: int
    robot_spec: RobotSpec | None
    observation_names: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    @property
    def obs_dim(self) -> int:
        return len(self.observation_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (what `mpo-ros inspect --json` prints)."""
        return {
            "format_version": self.format_version,
            # Through JSON so that tuples become lists: the dict equals what the file holds.
            "robot_spec": None if self.robot_spec is None else json.loads(self.robot_spec.to_json()),
            "observation_names": list(self.observation_names),
            "provenance": self.provenance,
            "sha256": self.sha256,
        }


def encode_metadata(
    robot_spec: RobotSpec | None,
    observation_names: Sequence[str],
    provenance: Mapping[str, Any],
) -> dict[str, str]:
    """metadata_props for a new policy file, with the checksum still unsealed (see :func:`seal`)."""
    names = [str(n) for n in observation_names]
    if not names:
        raise PolicyFileError("a policy needs at least one observation name")
    if robot_spec is not None:
        from mpo_ros.contract.observation import observation_names as contract_names

        expected = contract_names(robot_spec)
        if names != expected:
            raise ContractMismatchError(
                f"observation names {names} differ from the contract's layout {expected}; "
                "export the policy trained on this robot spec"
            )
    props = {
        KEY_FORMAT_VERSION: str(FORMAT_VERSION),
        KEY_OBSERVATION_NAMES: json.dumps(names),
        # allow_nan=False: a NaN in provenance would make the JSON unreadable to strict parsers.
        KEY_PROVENANCE: json.dumps(_json_safe(dict(provenance)), sort_keys=True, allow_nan=False),
        KEY_SHA256: SEAL_PLACEHOLDER,
    }
    if robot_spec is not None:
        props[KEY_ROBOT_SPEC] = robot_spec.to_json()
    return props


def _json_safe(value: Any) -> Any:
    """Provenance values as JSON: non-finite floats become None (and are thus visibly missing)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    return value


def decode_metadata(
    props: Mapping[str, str], source: str = "policy file", file_bytes: bytes | None = None
) -> PolicyMetadata:
    """Parse and validate metadata_props; errors name the file and say how to fix it.

    With ``file_bytes`` (the whole file) the checksum is verified right after the format version and
    before any other value is parsed, so a damaged file is reported as damaged, not as bad JSON.
    """
    if KEY_FORMAT_VERSION not in props:
        raise MissingContractError(
            f"{source} has no mpo_ros metadata (no '{KEY_FORMAT_VERSION}' key; keys present: "
            f"{sorted(props)}): it was not written by `mpo-ros export`, or it is truncated; {_REEXPORT}"
        )
    version = _format_version(props[KEY_FORMAT_VERSION], source)
    if file_bytes is not None:
        verify_seal(file_bytes, props.get(KEY_SHA256, ""), source)
    spec = _decode_spec(props.get(KEY_ROBOT_SPEC), source)
    names = _decode_json(props, KEY_OBSERVATION_NAMES, source)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise MissingContractError(f"{source}: '{KEY_OBSERVATION_NAMES}' must be a non-empty list of strings")
    provenance = _decode_json(props, KEY_PROVENANCE, source)
    if not isinstance(provenance, dict):
        raise MissingContractError(f"{source}: '{KEY_PROVENANCE}' must be a JSON object")
    if spec is not None:
        from mpo_ros.contract.observation import observation_names as contract_names

        expected = contract_names(spec)
        if names != expected:
            raise ContractMismatchError(
                f"{source}: observation names {names} disagree with its own contract's layout {expected}; "
                f"the file was edited or written by a buggy exporter; {_REEXPORT}"
            )
    return PolicyMetadata(
        format_version=version,
        robot_spec=spec,
        observation_names=tuple(names),
        provenance=provenance,
        sha256=props.get(KEY_SHA256, ""),
    )


def _format_version(text: str, source: str) -> int:
    try:
        version = int(text)
    except ValueError:
        raise UnsupportedVersionError(
            f"{source}: '{KEY_FORMAT_VERSION}' is {text!r}, not an integer; {_REEXPORT}"
        ) from None
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{source} uses policy file format {version} but this mpo_ros reads format {FORMAT_VERSION}; "
            f"{'upgrade mpo_ros on this machine' if version > FORMAT_VERSION else _REEXPORT}"
        )
    return version


def _decode_json(props: Mapping[str, str], key: str, source: str) -> Any:
    if key not in props:
        raise MissingContractError(f"{source} lacks the metadata key '{key}'; {_REEXPORT}")
    try:
        return json.loads(props[key])
    except json.JSONDecodeError as exc:
        raise MissingContractError(
            f"{source}: metadata '{key}' is not valid JSON ({exc}); {_REEXPORT}"
        ) from exc


def _decode_spec(text: str | None, source: str) -> RobotSpec | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MissingContractError(
            f"{source}: the robot contract is not valid JSON ({exc}); {_REEXPORT}"
        ) from exc
    version = data.get("contract_version") if isinstance(data, dict) else None
    if version != CONTRACT_VERSION:
        hint = (
            "upgrade mpo_ros on this machine"
            if isinstance(version, int) and version > CONTRACT_VERSION
            else _REEXPORT
        )
        raise UnsupportedVersionError(
            f"{source} carries robot contract version {version!r}; this mpo_ros reads version "
            f"{CONTRACT_VERSION}; {hint}"
        )
    try:
        return RobotSpec.from_dict(data, source=f"{source} (robot contract)")
    except SpecError as exc:
        raise MissingContractError(f"{exc}; {_REEXPORT}") from exc


def check_io_shapes(
    metadata: PolicyMetadata,
    input_name: str,
    input_shape: Sequence[Any],
    output_name: str,
    output_shape: Sequence[Any],
    source: str = "policy file",
) -> tuple[int, int]:
    """Check the graph's one input/output against the metadata; return (obs_dim, act_dim).

    Shapes are as onnxruntime reports them: ``[batch, n]`` with a symbolic (str/None) batch.
    """
    if input_name != INPUT_NAME or output_name != OUTPUT_NAME:
        raise ContractMismatchError(
            f"{source}: graph input/output are named {input_name!r}/{output_name!r}; mpo_ros policies use "
            f"{INPUT_NAME!r}/{OUTPUT_NAME!r}; {_REEXPORT}"
        )
    obs_dim = _feature_dim(input_shape, "input", source)
    act_dim = _feature_dim(output_shape, "output", source)
    if obs_dim != metadata.obs_dim:
        raise ContractMismatchError(
            f"{source}: the graph takes observations of size {obs_dim} but the metadata lists "
            f"{metadata.obs_dim} observation names; the file mixes two policies; {_REEXPORT}"
        )
    spec = metadata.robot_spec
    if spec is not None and act_dim != spec.action_dim:
        raise ContractMismatchError(
            f"{source}: the graph outputs {act_dim} actions but the contract has {spec.action_dim} joints "
            f"{list(spec.joint_names)}; export the policy trained for robot '{spec.name}'"
        )
    return obs_dim, act_dim


def _feature_dim(shape: Sequence[Any], which: str, source: str) -> int:
    if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1:
        raise ContractMismatchError(
            f"{source}: graph {which} has shape {list(shape)}; expected [batch, n] with a fixed n; {_REEXPORT}"
        )
    if isinstance(shape[0], int):
        raise ContractMismatchError(
            f"{source}: graph {which} has a fixed batch size {shape[0]}; export with a dynamic batch axis "
            f"(`mpo-ros export` does)"
        )
    return int(shape[1])


def seal(model_bytes: bytes) -> bytes:
    """Replace the placeholder checksum in a serialised model with the SHA-256 of the bytes.

    The value has the same length as the placeholder, so no protobuf length prefix changes and the
    bytes around it stay identical: :func:`verify_seal` can undo the substitution exactly.
    """
    marker = SEAL_PLACEHOLDER.encode()
    if model_bytes.count(marker) != 1:
        raise PolicyFileError(
            f"cannot seal the policy: expected exactly one checksum placeholder, found {model_bytes.count(marker)}"
        )
    digest = hashlib.sha256(model_bytes).hexdigest().encode()
    return model_bytes.replace(marker, digest)


def verify_seal(file_bytes: bytes, digest: str, source: str = "policy file") -> None:
    """Raise CorruptPolicyError unless ``file_bytes`` are exactly what the exporter sealed."""
    fix = "copy the file again from its source, or " + _REEXPORT
    token = digest.encode()
    if len(digest) != len(SEAL_PLACEHOLDER) or file_bytes.count(token) != 1:
        raise CorruptPolicyError(f"{source}: its checksum entry is missing or damaged; {fix}")
    actual = hashlib.sha256(file_bytes.replace(token, SEAL_PLACEHOLDER.encode())).hexdigest()
    if actual != digest:
        raise CorruptPolicyError(
            f"{source} is corrupt: its content hashes to {actual[:12]}... but was sealed as {digest[:12]}...; {fix}"
        )
