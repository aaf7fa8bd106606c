"""Real policy files for the export / runtime / safety tests: small torch modules exported for real.

The module mirrors what ``mpo_ros.mpo.policy.load_policy`` returns (a normaliser with float64
running statistics inside, an MLP, the mean clamped to [-1, 1]) but is small, so an export takes
a fraction of a second. ``rewrite_metadata`` edits a file's metadata with onnx and seals it again,
to build files that are intact but wrong in one specific way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from mpo_ros.contract.observation import observation_size
from mpo_ros.contract.policy_file import KEY_SHA256, SEAL_PLACEHOLDER, seal
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.training.export import ExportReport, export_module


class TinyPolicy(torch.nn.Module):
    """Raw observation -> normalise (clipped at 10 std) -> MLP -> mean clamped to [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 32, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("mean", torch.randn(obs_dim, generator=generator, dtype=torch.float64))
        self.register_buffer("var", torch.rand(obs_dim, generator=generator, dtype=torch.float64) * 4 + 0.1)
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(obs_dim, hidden),
            torch.nn.LayerNorm(hidden),
            torch.nn.Tanh(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ELU(),
            torch.nn.Linear(hidden, act_dim),
        )

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(observations.dtype)
        std = (self.var.to(observations.dtype) + 1e-8).sqrt()
        x = ((observations - mean) / std).clamp(-10.0, 10.0)
        return (2.0 * self.net(x)).clamp(-1.0, 1.0)


def export_tiny(
    path: Path, spec: RobotSpec | None, obs_dim: int | None = None, act_dim: int | None = None, **kwargs
) -> tuple[TinyPolicy, ExportReport]:
    obs_dim = observation_size(spec) if spec is not None else obs_dim
    act_dim = spec.action_dim if spec is not None else act_dim
    assert obs_dim is not None and act_dim is not None
    module = TinyPolicy(obs_dim, act_dim)
    kwargs.setdefault("provenance", {"env_id": "test", "step": 123})
    return module, export_module(module, obs_dim, act_dim, path, robot_spec=spec, **kwargs)


def torch_actions(module: torch.nn.Module, observations: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.as_tensor(np.asarray(observations, dtype=np.float32))).numpy()


def rewrite_metadata(
    source: Path, target: Path, edit: Callable[[dict[str, str]], None], graph_edit=None
) -> None:
    """Copy ``source`` to ``target`` with its metadata (and optionally graph) edited, sealed again."""
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    edit(props)
    props[KEY_SHA256] = SEAL_PLACEHOLDER
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    if graph_edit is not None:
        graph_edit(model)
    target.write_bytes(seal(model.SerializeToString()))
