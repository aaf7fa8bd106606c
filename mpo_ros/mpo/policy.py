"""The deployable deterministic policy: raw observation -> action in [-1, 1].

The module carries the observation normaliser inside and uses only traceable tensor ops (no Python control
flow on tensor values, ``clamp`` for the bounds), so ``torch.onnx.export(..., dynamo=False)`` captures the
whole observation-to-action path. Reading one from a checkpoint file is the training engine's job
(:func:`mpo_ros.training.state.load_policy`).
"""

from __future__ import annotations

import torch
from torch import nn

from mpo_ros.mpo.networks import GaussianPolicy, ObservationNormalizer

__all__ = ["DeterministicPolicy"]


class DeterministicPolicy(nn.Module):
    """``forward(obs [B, O] float32 raw) -> clamp(mean, -1, 1) [B, D]``."""

    def __init__(self, policy: GaussianPolicy, normalizer: ObservationNormalizer | None) -> None:
        super().__init__()
        self.policy = policy
        self.normalizer = normalizer

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = self.normalizer(observations) if self.normalizer is not None else observations
        return self.policy.deterministic(x)
