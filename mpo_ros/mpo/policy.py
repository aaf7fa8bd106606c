"""Load a training checkpoint as a deployable deterministic policy (raw observation -> action in [-1, 1]).

The returned module carries the observation normaliser inside, uses only traceable tensor ops (no Python
control flow on tensor values, ``clamp`` for the bounds), so ``torch.onnx.export(..., dynamo=False)`` captures
the whole observation-to-action path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mpo_ros.errors import CheckpointError
from mpo_ros.mpo.learner import MPOConfig, build_policy
from mpo_ros.mpo.networks import GaussianPolicy, ObservationNormalizer

__all__ = ["DeterministicPolicy", "checkpoint_path_for", "load_checkpoint", "load_policy"]

CHECKPOINT_NAME = "latest.pt"


class DeterministicPolicy(nn.Module):
    """``forward(obs [B, O] float32 raw) -> clamp(mean, -1, 1) [B, D]``."""

    def __init__(self, policy: GaussianPolicy, normalizer: ObservationNormalizer | None) -> None:
        super().__init__()
        self.policy = policy
        self.normalizer = normalizer

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = self.normalizer(observations) if self.normalizer is not None else observations
        return self.policy.deterministic(x)


def checkpoint_path_for(path: str | Path) -> Path:
    """Resolve a run directory (``runs/<name>``), its ``checkpoints/`` folder, or a ``.pt`` file to the
    checkpoint file."""
    path = Path(path)
    if path.is_file():
        return path
    for candidate in (path / "checkpoints" / CHECKPOINT_NAME, path / CHECKPOINT_NAME):
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"no checkpoint at {path}: expected a .pt file or a run directory holding "
        f"checkpoints/{CHECKPOINT_NAME} (written by `mpo-ros train --out {path}`)"
    )


def load_checkpoint(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors, primitives and containers only)."""
    file = checkpoint_path_for(path)
    try:
        data = torch.load(file, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {file}: {exc}") from exc
    if not isinstance(data, dict) or "learner" not in data or "metadata" not in data:
        raise CheckpointError(f"{file} is not an mpo_ros training checkpoint (no 'learner'/'metadata' keys)")
    return data


def load_policy(checkpoint_path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The deterministic policy of a checkpoint (eval mode, frozen) and its metadata.

    Metadata keys: ``obs_dim``, ``act_dim``, ``env_id``, ``step``, ``config`` (resolved training config),
    ``robot_spec_json`` (str or None), ``eval/return`` and ``eval/success_rate`` (last evaluation, or None).
    """
    data = load_checkpoint(checkpoint_path, device)
    learner_state = data["learner"]
    config = MPOConfig.from_any({**learner_state["config"], "device": device})
    policy = build_policy(int(learner_state["obs_dim"]), int(learner_state["act_dim"]), config)
    policy.load_state_dict(learner_state["policy"])
    normalizer = None
    if config.normalize_observations:
        normalizer = ObservationNormalizer(int(learner_state["obs_dim"]))
        normalizer.load_state_dict(learner_state["normalizer"])
    module = DeterministicPolicy(policy, normalizer).to(device).eval().requires_grad_(False)
    return module, dict(data["metadata"])
