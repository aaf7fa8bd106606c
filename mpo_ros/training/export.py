"""`mpo-ros export`: a trained policy -> one self-describing ONNX file for the robot.

The file holds the deterministic policy (mean action clipped to [-1, 1]) with the observation
normaliser inside the graph, and as metadata the robot contract, the observation names, provenance
and a checksum (see :mod:`mpo_ros.contract.policy_file`). Nothing is written unless every check passes:

- the graph uses standard ONNX operators only (no custom ops) at opset :data:`DEFAULT_OPSET`
  (fixed, so the graph never depends on the exporter's default; onnxruntime runs opset 17 since 1.12);
- ``onnx.checker`` (full check, with shape inference) accepts it;
- parity: onnxruntime reproduces torch on >= :data:`MIN_PARITY_OBSERVATIONS` observations
  (batched and one at a time) within :data:`PARITY_TOLERANCE` max abs error;
- the final bytes load through :class:`mpo_ros.robot.onnx_policy.OnnxPolicy`, the exact robot code path.

The file is written atomically (temp file + rename), so a robot never sees half a policy.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import logging
import os
import subprocess
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

import mpo_ros
from mpo_ros import config as cfg
from mpo_ros.config import option
from mpo_ros.contract.observation import observation_names as contract_observation_names
from mpo_ros.contract.policy_file import INPUT_NAME, OUTPUT_NAME, encode_metadata, seal
from mpo_ros.contract.resolve import locate_mjcf
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ExportError, PolicyFileError, SpecError

__all__ = [
    "DEFAULT_OPSET",
    "MIN_PARITY_OBSERVATIONS",
    "PARITY_TOLERANCE",
    "ExportConfig",
    "ExportReport",
    "add_arguments",
    "export_checkpoint",
    "export_module",
    "run",
    "sample_around_normalizer",
]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_PARITY_OBSERVATIONS = 1000
PARITY_TOLERANCE = 1e-5
# Single-observation parity (the robot's call) on this many rows; each is one onnxruntime call.
_SINGLE_PARITY_ROWS = 64


@dataclass
class ExportConfig:
    """Options of `mpo-ros export` (also accepted from a YAML file via --config)."""

    run: str = option("", "training run folder runs/<name> (uses checkpoints/latest.pt)")
    checkpoint: str = option("", "checkpoint file to export instead of the run's latest.pt")
    out: str = option("", "ONNX file to write; empty: <run>/policy.onnx")
    opset: int = option(DEFAULT_OPSET, "ONNX opset of the exported graph")
    parity_observations: int = option(
        2048, f"observations in the torch-vs-onnxruntime parity check (>= {MIN_PARITY_OBSERVATIONS})"
    )
    tolerance: float = option(PARITY_TOLERANCE, "largest allowed |torch - onnxruntime| action difference")
    seed: int = option(0, "seed of the observations used for the parity check")

    def __post_init__(self) -> None:
        problems = []
        if not (0.0 < self.tolerance < 1.0):
            problems.append(f"tolerance={self.tolerance} must lie in (0, 1) (actions are in [-1, 1])")
        if self.parity_observations < MIN_PARITY_OBSERVATIONS:
            problems.append(
                f"parity_observations={self.parity_observations} must be >= {MIN_PARITY_OBSERVATIONS}"
            )
        if self.run and self.checkpoint:
            problems.append("give --run or --checkpoint, not both (which one was meant is not clear)")
        if problems:
            raise ExportError("; ".join(problems))


@dataclass(frozen=True)
class ExportReport:
    """What was written and how well it matched torch."""

    path: Path
    sha256: str
    opset: int
    size_bytes: int
    parity_max_abs_error: float
    parity_observations: int
    parity_source: str


# ------------------------------------------------------------------------------------- lower layer


def export_module(
    module: torch.nn.Module,
    obs_dim: int,
    act_dim: int,
    out_path: str | Path,
    *,
    robot_spec: RobotSpec | None = None,
    observation_names: Sequence[str] | None = None,
    provenance: Mapping[str, Any] | None = None,
    parity_observations: np.ndarray | None = None,
    parity_source: str = "",
    opset: int = DEFAULT_OPSET,
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 0,
) -> ExportReport:
    """Export ``module`` (RAW observations [B, obs_dim] -> actions [B, act_dim]) to ``out_path``.

    ``module`` must already contain the normaliser and the clip to [-1, 1]. Without
    ``parity_observations`` the check samples around the module's normaliser statistics
    (:func:`sample_around_normalizer`). Raises :class:`~mpo_ros.errors.ExportError` when a check
    fails; ``out_path`` is then left untouched.
    """
    out_path = Path(out_path)
    module = module.eval().cpu()
    names = _observation_names(robot_spec, observation_names, obs_dim, act_dim)
    _check_module_shapes(module, obs_dim, act_dim)
    if parity_observations is None:
        parity_observations = sample_around_normalizer(module, obs_dim, 2048, seed)
        parity_source = parity_source or "sampled around the normaliser statistics"
    observations = _checked_observations(parity_observations, obs_dim)
    expected = _torch_actions(module, observations)
    if not np.all(np.abs(expected) <= 1.0):
        raise ExportError(
            f"the module's actions reach {np.abs(expected).max():.3g}; a deployable policy ends with a clamp "
            "to [-1, 1] (load it with mpo_ros.mpo.policy.load_policy)"
        )

    graph_bytes = _torch_to_onnx(module, obs_dim, opset)
    model = onnx.load_from_string(graph_bytes)
    _check_operators(model, opset)
    max_error = _parity(graph_bytes, observations, expected, tolerance)

    full_provenance = {
        **base_provenance(),
        **dict(provenance or {}),
        "opset": opset,
        "parity_max_abs_error": max_error,
        "parity_observations": len(observations),
        "parity_source": parity_source,
    }
    for key, value in encode_metadata(robot_spec, names, full_provenance).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    model.producer_name = "mpo_ros"
    model.producer_version = mpo_ros.__version__
    model.doc_string = (
        "mpo_ros deterministic policy: input 'observation' [batch, obs_dim] raw float32 (normaliser inside), "
        "output 'action' [batch, act_dim] in [-1, 1]. Run `mpo-ros inspect <file>` for the robot contract."
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from exc
    unsealed = model.SerializeToString()
    sealed = seal(unsealed)  # the checksum written is the SHA-256 of the unsealed bytes
    _write_verified(sealed, out_path, observations, expected, tolerance)
    return ExportReport(
        path=out_path,
        sha256=hashlib.sha256(unsealed).hexdigest(),
        opset=opset,
        size_bytes=len(sealed),
        parity_max_abs_error=max_error,
        parity_observations=len(observations),
        parity_source=parity_source,
    )


def _observation_names(
    robot_spec: RobotSpec | None, given: Sequence[str] | None, obs_dim: int, act_dim: int
) -> list[str]:
    """The contract's observation names (or ``observation/<i>`` without one), checked against the sizes."""
    if robot_spec is not None:
        if robot_spec.action_dim != act_dim:
            raise ExportError(
                f"the policy outputs {act_dim} actions but robot '{robot_spec.name}' has "
                f"{robot_spec.action_dim} joints; export the checkpoint trained on this robot"
            )
        names = contract_observation_names(robot_spec)
        if given is not None and list(given) != names:
            raise ExportError(f"observation names {list(given)} differ from the contract's {names}")
    else:
        names = list(given) if given is not None else [f"observation/{i}" for i in range(obs_dim)]
    if len(names) != obs_dim:
        raise ExportError(
            f"{len(names)} observation names for an observation of size {obs_dim}; the checkpoint and "
            "the robot spec disagree on the observation layout"
        )
    return names


def _checked_observations(observations: np.ndarray, obs_dim: int) -> np.ndarray:
    observations = np.ascontiguousarray(observations, dtype=np.float32)
    if observations.ndim != 2 or observations.shape[1] != obs_dim:
        raise ExportError(f"parity observations must have shape [N, {obs_dim}], got {observations.shape}")
    if len(observations) < MIN_PARITY_OBSERVATIONS:
        raise ExportError(
            f"parity check needs >= {MIN_PARITY_OBSERVATIONS} observations, got {len(observations)}"
        )
    if not np.isfinite(observations).all():
        raise ExportError("parity observations contain NaN/inf; pass finite observations")
    return observations


def _check_module_shapes(module: torch.nn.Module, obs_dim: int, act_dim: int) -> None:
    with torch.no_grad():
        try:
            out = module(torch.zeros(2, obs_dim))
        except Exception as exc:
            raise ExportError(
                f"the policy module fails on an observation batch [2, {obs_dim}]: {exc}"
            ) from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, act_dim):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ExportError(f"the policy module maps [2, {obs_dim}] to {shape}, expected (2, {act_dim})")


def _torch_to_onnx(module: torch.nn.Module, obs_dim: int, opset: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo; it is the one that produces a
        # plain, small graph for an MLP and is the one we test (see the team notes).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (torch.zeros(1, obs_dim),),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()


def _check_operators(model: onnx.ModelProto, opset: int) -> None:
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ExportError(
            f"the graph uses custom operators {custom}; onnxruntime on the robot cannot run them"
        )
    versions = {o.domain: o.version for o in model.opset_import}
    if versions.get("", versions.get("ai.onnx")) != opset:
        raise ExportError(f"exported opset {versions} differs from the requested opset {opset}")


def _torch_actions(module: torch.nn.Module, observations: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(observations)).numpy().astype(np.float32)


def _reference_session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _parity(model_bytes: bytes, observations: np.ndarray, expected: np.ndarray, tolerance: float) -> float:
    """Max |torch - onnxruntime| over the batch and over single-observation calls."""
    session = _reference_session(model_bytes)
    batched = session.run([OUTPUT_NAME], {INPUT_NAME: observations})[0]
    single = np.concatenate(
        [
            session.run([OUTPUT_NAME], {INPUT_NAME: observations[i : i + 1]})[0]
            for i in range(_SINGLE_PARITY_ROWS)
        ]
    )
    errors = [np.abs(batched - expected), np.abs(single - expected[:_SINGLE_PARITY_ROWS])]
    max_error = max(float(e.max()) if np.isfinite(e).all() else float("inf") for e in errors)
    if not max_error < tolerance:
        worst = int(np.argmax(np.abs(batched - expected).max(axis=1)))
        raise ExportError(
            f"parity check failed: onnxruntime differs from torch by up to {max_error:.3g} "
            f"(tolerance {tolerance:g}), worst observation row {worst}; nothing was written. "
            "Check the module for ops that export differently (e.g. float64 math, random sampling)"
        )
    return max_error


def _write_verified(
    sealed: bytes, out_path: Path, observations: np.ndarray, expected: np.ndarray, tolerance: float
) -> None:
    """Write to a temp file, load it as the robot would, re-check parity, then rename into place."""
    from mpo_ros.robot.onnx_policy import (
        OnnxPolicy,  # no torch inside; imported late to keep this module's deps clear
    )

    if out_path.is_dir():
        raise ExportError(
            f"--out {out_path} is a folder; give the .onnx file to write, e.g. {out_path / 'policy.onnx'}"
        )
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as fh:
                fh.write(sealed)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise ExportError(
                f"cannot write {out_path}: {exc.strerror or exc}; choose a writable --out with free space"
            ) from exc
        try:
            policy = OnnxPolicy(tmp, device="cpu", warmup_calls=1)
        except PolicyFileError as exc:
            raise ExportError(f"the exported file does not load through OnnxPolicy: {exc}") from exc
        errors = [
            np.abs(policy.act_batch(observations) - expected).max(),
            max(np.abs(policy.act(observations[i]) - expected[i]).max() for i in range(_SINGLE_PARITY_ROWS)),
        ]
        if not max(errors) < tolerance:
            raise ExportError(f"the sealed file differs from torch by {max(errors):.3g} through OnnxPolicy")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)


def sample_around_normalizer(module: torch.nn.Module, obs_dim: int, count: int, seed: int) -> np.ndarray:
    """Observations spread over the normaliser's statistics: most within 3 std, 10 % far outside.

    The far ones exercise the normaliser's clip. Without a normaliser (buffers ``mean`` and ``var``
    of size ``obs_dim``) they are drawn around 0 with unit scale.
    """
    mean, std = np.zeros(obs_dim), np.ones(obs_dim)
    for sub in module.modules():
        buffers = dict(sub.named_buffers(recurse=False))
        if "mean" in buffers and "var" in buffers and buffers["mean"].shape == (obs_dim,):
            mean = buffers["mean"].detach().double().cpu().numpy()
            std = np.sqrt(buffers["var"].detach().double().cpu().numpy() + 1e-8)
            break
    rng = np.random.default_rng(seed)
    spread = np.where(rng.random((count, 1)) < 0.9, 1.5, 15.0)
    return (mean + std * spread * rng.standard_normal((count, obs_dim))).astype(np.float32)


def base_provenance() -> dict[str, Any]:
    """Who made this file and with what: versions, git commit, time."""
    commit, dirty = _git_commit()
    return {
        "mpo_ros_version": mpo_ros.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
    }


def _git_commit() -> tuple[str | None, bool | None]:
    """The commit of the mpo_ros checkout this code runs from, when it is one (None when installed)."""
    root = Path(mpo_ros.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return commit or None, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


# ------------------------------------------------------------------------------------- checkpoints


def _checkpoint_contract(checkpoint: Path, meta: dict) -> RobotSpec | None:
    """The checkpoint's robot contract (None for a plain gym run), with its MJCF located if possible.

    The contract in JSON names its MJCF without a folder: look where training found it (recorded in the
    checkpoint), then the usual places, so the parity check can rebuild e.g. a calibrated robot.
    """
    spec_json = meta.get("robot_spec_json")
    if not spec_json:
        return None
    spec = RobotSpec.from_json(spec_json, source=f"{checkpoint} robot spec")
    recorded = meta.get("mjcf_path")
    try:
        return locate_mjcf(spec, near=[Path(recorded).parent] if recorded else [])
    except SpecError as exc:
        log.warning("%s; the parity check samples observations instead of rolling the policy out", exc)
        return spec


def export_checkpoint(
    source: str | Path,
    out_path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    parity_count: int = 2048,
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 0,
) -> ExportReport:
    """Export a training checkpoint (a ``.pt`` file or a run folder ``runs/<name>``) to ONNX.

    Parity observations: three quarters from the run's saved replay when there is one, else from
    rolling the policy (with exploration noise) in its environment; the last quarter, and any
    shortfall, sampled around the normaliser statistics to cover states training never saw.
    """
    from mpo_ros.training.state import checkpoint_path_for, load_policy

    checkpoint = checkpoint_path_for(source)
    module, meta = load_policy(checkpoint, device="cpu")
    obs_dim, act_dim = int(meta["obs_dim"]), int(meta["act_dim"])
    spec = _checkpoint_contract(checkpoint, meta)
    if parity_count < MIN_PARITY_OBSERVATIONS:
        raise ExportError(f"parity_observations must be >= {MIN_PARITY_OBSERVATIONS}, got {parity_count}")
    observations, source_text = parity_observations_for(
        module, checkpoint, meta.get("env_id"), obs_dim, parity_count, seed, spec=spec
    )
    provenance = {
        "env_id": meta.get("env_id"),
        "robot": meta.get("robot"),
        "contract_sha256": meta.get("contract_sha256"),
        "mjcf_path": meta.get("mjcf_path"),
        # Same names as the checkpoint metadata: one name for one thing.
        "step": meta.get("step"),
        "eval/return": meta.get("eval/return"),
        "eval/success_rate": meta.get("eval/success_rate"),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "training_config": meta.get("config"),
    }
    return export_module(
        module,
        obs_dim,
        act_dim,
        out_path,
        robot_spec=spec,
        provenance=provenance,
        parity_observations=observations,
        parity_source=source_text,
        opset=opset,
        tolerance=tolerance,
        seed=seed,
    )


def parity_observations_for(
    module: torch.nn.Module,
    checkpoint: Path,
    env_id: str | None,
    obs_dim: int,
    count: int,
    seed: int,
    spec: RobotSpec | None = None,
) -> tuple[np.ndarray, str]:
    """Observations for the parity check and a sentence saying where they came from; ``spec``: the
    checkpoint's contract, which the rollout environment is built from."""
    rng = np.random.default_rng(seed)
    wanted = count - count // 4
    found, parts = [], []
    replay, where = _replay_observations(checkpoint, obs_dim, wanted, rng)
    if replay is not None:
        found.append(replay)
        parts.append(where)
    missing = wanted - sum(len(f) for f in found)
    if missing > 0 and env_id:
        rollout, where = _rollout_observations(module, env_id, missing, seed, spec)
        if rollout is not None and rollout.shape[1:] == (obs_dim,):
            found.append(rollout)
            parts.append(where)
    have = sum(len(f) for f in found)
    spread = sample_around_normalizer(module, obs_dim, count - have, seed + 1)
    parts.append(f"{len(spread)} sampled around the normaliser statistics")
    return np.concatenate([*found, spread]).astype(np.float32), "; ".join(parts)


def _replay_observations(
    checkpoint: Path, obs_dim: int, count: int, rng: np.random.Generator
) -> tuple[np.ndarray | None, str]:
    """Rows of a replay .npz saved beside the checkpoint (or in its run folder), if any."""
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    candidates = sorted({*checkpoint.parent.glob("replay*.npz"), *run_dir.glob("replay*.npz")})
    for path in candidates:
        try:
            with np.load(path, allow_pickle=False) as data:
                if "observations" not in data.files:
                    continue
                observations = np.asarray(data["observations"], dtype=np.float32)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("cannot read replay %s for the parity check (%s); trying other sources", path, exc)
            continue
        if observations.ndim != 2 or observations.shape[1] != obs_dim or len(observations) == 0:
            continue
        observations = observations[np.isfinite(observations).all(axis=1)]
        take = rng.choice(len(observations), size=min(count, len(observations)), replace=False)
        return observations[np.sort(take)], f"{len(take)} from the saved replay {path}"
    return None, ""


def _rollout_observations(
    module: torch.nn.Module, env_id: str, count: int, seed: int, spec: RobotSpec | None = None
) -> tuple[np.ndarray | None, str]:
    """Observations visited by the policy (plus N(0, 0.3) exploration noise) in its environment."""
    try:
        from mpo_ros.training.envs import EnvFactory  # the env exactly as training wrapped it

        env = EnvFactory.resolve(env_id, {"robot": spec} if spec is not None else None).make()
    except Exception as exc:  # unknown id, missing simulator: fall back to normaliser samples
        log.warning("cannot make %s for the parity check (%s); sampling observations instead", env_id, exc)
        return None, ""
    rng = np.random.default_rng(seed)
    observations = []
    try:
        obs, _ = env.reset(seed=seed)
        while len(observations) < count:
            observations.append(np.asarray(obs, dtype=np.float32).reshape(-1))
            with torch.no_grad():
                action = module(torch.as_tensor(observations[-1])[None])[0].numpy()
            action = np.clip(action + rng.normal(0.0, 0.3, action.shape), -1.0, 1.0)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
    return np.stack(observations), f"{len(observations)} from rolling the policy in {env_id}"


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML file with export options (flags override it)")
    cfg.add_arguments(parser, ExportConfig)


def run(args: argparse.Namespace) -> int:
    config = cfg.from_args(ExportConfig, args, args.config)
    if not config.run and not config.checkpoint:
        raise ExportError("give --run runs/<name> or --checkpoint <file.pt>")
    source = Path(config.checkpoint or config.run)
    if config.out:
        out = Path(config.out)
    elif config.run:
        out = Path(config.run) / "policy.onnx"
    else:
        raise ExportError("give --out <file>.onnx when exporting a bare --checkpoint")
    report = export_checkpoint(
        source,
        out,
        opset=config.opset,
        parity_count=config.parity_observations,
        tolerance=config.tolerance,
        seed=config.seed,
    )
    print(
        f"wrote {report.path} ({report.size_bytes / 1024:.1f} KiB, opset {report.opset}, sha256 "
        f"{report.sha256[:16]}...)\nparity: max |torch - onnxruntime| = {report.parity_max_abs_error:.2e} over "
        f"{report.parity_observations} observations ({report.parity_source})\n"
        f"inspect it with: mpo-ros inspect {report.path}"
    )
    return 0
