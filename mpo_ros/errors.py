"""Exceptions raised on bad user input; each message says how to fix the problem."""

from __future__ import annotations

__all__ = [
    "BagError",
    "CalibrationError",
    "CheckpointError",
    "ConfigError",
    "ContractError",
    "DatasetError",
    "ExportError",
    "MpoRosError",
    "PolicyFileError",
    "SpecError",
]


class MpoRosError(Exception):
    """Base class: catch this to handle every error mpo_ros raises on purpose."""


class SpecError(MpoRosError):
    """A robot/task spec (YAML or JSON) is malformed or inconsistent."""


class ConfigError(MpoRosError):
    """A command's configuration holds a bad value or a bad combination of values."""


class ContractError(MpoRosError):
    """Live data (e.g. /joint_states) or a model does not match the robot contract."""


class PolicyFileError(MpoRosError):
    """A policy file (ONNX) is missing, corrupt, or lacks or mismatches its contract."""


class CheckpointError(MpoRosError):
    """A training checkpoint is missing, corrupt or incompatible."""


class BagError(MpoRosError):
    """A rosbag2 recording cannot be read (fully or at all)."""


class DatasetError(MpoRosError):
    """A converted dataset on disk is missing, corrupt or of an unsupported version."""


class ExportError(PolicyFileError):
    """Exporting a policy to ONNX failed a check (parity, onnx.checker, custom ops); nothing was written."""


class CalibrationError(MpoRosError):
    """Logs cannot identify the requested simulator parameters (too short, unexcited, NaN, gaps)."""
