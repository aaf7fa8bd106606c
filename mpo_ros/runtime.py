"""Former home of the robot runtime, kept as a re-export for callers that are being restructured.

The code lives in :mod:`mpo_ros.robot.onnx_policy` (OnnxPolicy) and :mod:`mpo_ros.robot.safety`
(SafetyFilter, policy_step). ``export.py`` and ``evaluate.py`` still import ``mpo_ros.runtime``; they
are owned by the training restructuring, which switches them to ``mpo_ros.robot`` and removes this file.
"""

from __future__ import annotations

from mpo_ros.robot.onnx_policy import (
    DEVICES,
    LatencyStats,
    NonFiniteActionError,
    OnnxPolicy,
    ProviderUnavailableError,
)
from mpo_ros.robot.safety import (
    FAULT_BAD_INPUT,
    FAULT_NONFINITE_ACTION,
    FAULT_NONFINITE_OBSERVATION,
    FAULT_NOT_ENABLED,
    FAULT_STOPPED,
    SafetyDecision,
    SafetyFilter,
    policy_step,
)

__all__ = [
    "DEVICES",
    "FAULT_BAD_INPUT",
    "FAULT_NONFINITE_ACTION",
    "FAULT_NONFINITE_OBSERVATION",
    "FAULT_NOT_ENABLED",
    "FAULT_STOPPED",
    "LatencyStats",
    "NonFiniteActionError",
    "OnnxPolicy",
    "ProviderUnavailableError",
    "SafetyDecision",
    "SafetyFilter",
    "policy_step",
]
