"""The whole training state, saved atomically and restored one way (Acme's ``TrainingState``).

A checkpoint (``<out>/checkpoints/latest.pt`` + ``replay-<step>.npz``) holds everything a resume needs: the
learner (networks, targets, duals, optimisers, normaliser), the ABM prior, the counters, every RNG (python,
numpy, torch, the environment's generator, each replay's sampler), and the **robot contract** the experience
was made with (the environment's or the datasets'), which export writes into the ONNX file. Checkpoints are
only written between iterations of the loop (signals are deferred to the boundary, see ``loop.py``), so a
checkpoint never holds half an update. They are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mpo_ros.contract.resolve import contract_hash, mjcf_location
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import CheckpointError, ConfigError
from mpo_ros.mpo.abm import ABMPrior
from mpo_ros.mpo.learner import MPOConfig, MPOLearner, build_policy
from mpo_ros.mpo.networks import ObservationNormalizer
from mpo_ros.mpo.policy import DeterministicPolicy
from mpo_ros.training.config import TrainConfig
from mpo_ros.training.replay import MixedReplay, ReplayBuffer

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "Counters",
    "TrainingState",
    "atomic_torch_save",
    "checkpoint_path_for",
    "load_checkpoint",
    "load_policy",
]

CHECKPOINT_NAME = "latest.pt"
CHECKPOINT_FORMAT = 2


@dataclasses.dataclass
class Counters:
    """Where the loop is (saved in the checkpoint). ``step``: environment steps, or updates offline."""

    step: int = 0
    episodes: int = 0
    episode_return: float = 0.0
    episode_length: int = 0
    at_boundary: bool = True  # no in-process episode in progress
    next_eval: int = 0
    next_checkpoint: int = 0
    next_log: int = 0
    elapsed_s: float = 0.0
    actor_restarts: int = 0
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainingState:
    """Learner, behaviour prior, replays, counters and contract of one run.

    ``replay``: the buffer experience is written to (online runs; ``None`` offline). ``sampler``: what
    batches are drawn from: ``replay`` itself, the datasets' replay (offline), or a :class:`MixedReplay`.
    ``logged``: the datasets' replays, rebuilt from the datasets at resume (only their RNG is saved).
    """

    config: TrainConfig
    learner: MPOLearner
    sampler: ReplayBuffer | MixedReplay
    replay: ReplayBuffer | None = None
    logged: list[ReplayBuffer] = dataclasses.field(default_factory=list)
    prior: ABMPrior | None = None
    contract: RobotSpec | None = None
    contract_source: str = "none"  # "environment", "datasets" or "none"
    env_description: dict[str, Any] = dataclasses.field(default_factory=dict)
    counters: Counters = dataclasses.field(default_factory=Counters)

    # --- saving ----------------------------------------------------------------------------------------

    def save(self, ckpt_dir: Path, env: Any = None) -> Path:
        """Write ``latest.pt`` (and the online replay) atomically; ``env``: the in-process environment whose
        generator state makes an in-process resume exact."""
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        replay_name = None
        if self.replay is not None:
            replay_name = f"replay-{self.counters.step}.npz"
            self.replay.save(ckpt_dir / replay_name)
        state = {
            "metadata": self.metadata(),
            "learner": self.learner.state_dict(),
            "loop": dataclasses.asdict(self.counters),
            "replay_file": replay_name,
            "rng": rng_state(env),
            "sampler_rng": [buffer.rng.bit_generator.state for buffer in self._sampled_buffers()],
        }
        if self.prior is not None:
            state["abm_prior"] = self.prior.state_dict()
        path = ckpt_dir / CHECKPOINT_NAME
        atomic_torch_save(state, path)
        for old in ckpt_dir.glob("replay-*.npz"):
            if old.name != replay_name:
                old.unlink(missing_ok=True)
        return path

    def metadata(self) -> dict[str, Any]:
        config = self.config
        return {
            "format": CHECKPOINT_FORMAT,
            **self.env_description,
            "obs_dim": self.learner.obs_dim,
            "act_dim": self.learner.act_dim,
            "action_space": "[-1, 1] (RescaleAction); deterministic action = clamp(mean, -1, 1)",
            "step": self.counters.step,
            "updates": self.learner.num_updates,
            "config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
            },
            "robot_spec_json": None if self.contract is None else self.contract.to_json(),
            "robot": None if self.contract is None else self.contract.name,
            "contract_sha256": None if self.contract is None else contract_hash(self.contract),
            "mjcf_path": mjcf_location(self.contract),
            "contract_source": self.contract_source,
            "datasets": list(config.data),
            "eval/return": self.counters.last_eval.get("eval/return"),
            "eval/success_rate": self.counters.last_eval.get("eval/success_rate"),
            "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-loadable
            "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }

    def _sampled_buffers(self) -> list[ReplayBuffer]:
        if isinstance(self.sampler, MixedReplay):
            return list(self.sampler.buffers)
        return [self.sampler]

    # --- restoring -------------------------------------------------------------------------------------

    def restore(self, checkpoint: dict[str, Any], ckpt_dir: Path, env: Any = None) -> None:
        """Load a checkpoint written by :meth:`save` into this freshly built state."""
        missing = [k for k in ("metadata", "learner", "loop", "rng") if k not in checkpoint]
        if missing:
            raise CheckpointError(
                f"{ckpt_dir / CHECKPOINT_NAME} lacks {missing}: it was not written whole by `mpo-ros train`; "
                "restore it from a backup or start a new run"
            )
        try:
            self._restore(checkpoint, ckpt_dir, env)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{ckpt_dir / CHECKPOINT_NAME} is incomplete or from another version ({type(exc).__name__}: {exc}); "
                "restore it from a backup or start a new run"
            ) from exc

    def _restore(self, checkpoint: dict[str, Any], ckpt_dir: Path, env: Any = None) -> None:
        saved = checkpoint["metadata"]
        saved_contract = saved.get("robot_spec_json")
        if (saved_contract is None) != (self.contract is None):
            raise ConfigError(
                f"cannot resume {ckpt_dir}: the run was trained "
                + ("with" if saved_contract else "without")
                + " a robot contract, this one "
                + ("has one" if self.contract is not None else "has none")
                + "; resume with the run's own --env and --data"
            )
        if saved_contract is not None and self.contract is not None:
            from mpo_ros.training.envs import check_same_contract

            check_same_contract(
                RobotSpec.from_json(saved_contract, source=f"{ckpt_dir} contract"),
                self.contract,
                ("checkpoint", f"resumed run's {self.contract_source}"),
            )
        self.learner.load_state_dict(checkpoint["learner"])
        if self.replay is not None:
            if not checkpoint.get("replay_file"):
                raise CheckpointError(f"{ckpt_dir} holds no replay file; resume it with its own --env/--data")
            self.replay.load(ckpt_dir / checkpoint["replay_file"])
        states = checkpoint.get("sampler_rng")
        buffers = self._sampled_buffers()
        if states is not None and len(states) == len(buffers):
            for buffer, rng in zip(buffers, states, strict=True):
                buffer.rng.bit_generator.state = rng
        else:
            raise CheckpointError(
                f"{ckpt_dir}: the checkpoint's replay sampling state does not fit this run ({len(states or [])} "
                f"sampler states for {len(buffers)} buffers); resume with the run's own --env/--data/--data-ratio"
            )
        if self.prior is not None:
            if "abm_prior" not in checkpoint:
                raise CheckpointError(
                    "cannot resume with the ABM prior: the checkpoint holds no prior state (the run was started "
                    "with --behaviour-prior none); resume with the run's own --behaviour-prior"
                )
            self.prior.load_state_dict(checkpoint["abm_prior"])
        self.counters = Counters(**checkpoint["loop"])
        set_rng_state(checkpoint["rng"], env)


# --- RNG state (weights_only-loadable: tensors, ints, lists, dicts) ----------------------------------------


def rng_state(env: Any = None) -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generators, and the in-process environment's."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if env is not None:
        state["env"] = env.unwrapped.np_random.bit_generator.state
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def set_rng_state(state: dict[str, Any], env: Any = None) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if env is not None and "env" in state:
        env.unwrapped.np_random.bit_generator.state = state["env"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- files ------------------------------------------------------------------------------------------


def atomic_torch_save(obj: Any, path: Path) -> None:
    """temp file + fsync + rename: a crash (or kill -9) leaves the previous file intact."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(
            f"cannot write the checkpoint {path}: {exc.strerror or exc}; free space (or choose another --out); "
            "the previous checkpoint is intact"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


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
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"refused to load {file}: it holds objects other than tensors and plain containers, and "
                "unpickling those can run arbitrary code, so mpo_ros never loads it; use a checkpoint written "
                "by `mpo-ros train`"
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {file} ({type(exc).__name__}): it is truncated or not a torch file; "
            "restore it from a backup or start a new run"
        ) from exc
    if not isinstance(data, dict) or "learner" not in data or "metadata" not in data:
        raise CheckpointError(f"{file} is not an mpo_ros training checkpoint (no 'learner'/'metadata' keys)")
    return data


def load_policy(checkpoint_path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The deterministic policy of a checkpoint (eval mode, frozen) and its metadata.

    Metadata keys: ``obs_dim``, ``act_dim``, ``env_id``, ``env_kwargs``, ``step``, ``config`` (resolved
    training config), ``robot_spec_json`` (the contract the experience was made with, or None),
    ``contract_source``, ``eval/return`` and ``eval/success_rate`` (last evaluation, or None).
    """
    data = load_checkpoint(checkpoint_path, device)
    learner_state = data["learner"]
    try:
        config = MPOConfig.from_any({**learner_state["config"], "device": device})
        policy = build_policy(int(learner_state["obs_dim"]), int(learner_state["act_dim"]), config)
        policy.load_state_dict(learner_state["policy"])
        normalizer = None
        if config.normalize_observations:
            normalizer = ObservationNormalizer(int(learner_state["obs_dim"]))
            normalizer.load_state_dict(learner_state["normalizer"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"{checkpoint_path_for(checkpoint_path)} holds no usable policy ({type(exc).__name__}: {exc}); "
            "use a checkpoint written whole by `mpo-ros train`"
        ) from exc
    module = DeterministicPolicy(policy, normalizer).to(device).eval().requires_grad_(False)
    return module, dict(data["metadata"])
