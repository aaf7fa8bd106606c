"""The ONNX policy on the robot: load, verify against its own contract, act on one observation.

Needs numpy + onnxruntime only (no torch, no ROS), so a robot computer installs little and the node
starts fast. :class:`OnnxPolicy` loads a file written by ``mpo-ros export``, refuses it with a
specific error when it is damaged or does not match its own contract, and maps one observation to
one action with preallocated buffers (the hot path allocates only the returned copy). The safety
filter and the control step that use it live in :mod:`mpo_ros.robot.safety`.

Not thread-safe: one OnnxPolicy belongs to one control loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from mpo_ros.contract.policy_file import (
    INPUT_NAME,
    OUTPUT_NAME,
    ContractMismatchError,
    MissingContractError,
    NotOnnxError,
    PolicyMetadata,
    check_io_shapes,
    decode_metadata,
)
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ContractError, PolicyFileError

__all__ = [
    "DEVICES",
    "LatencyStats",
    "NonFiniteActionError",
    "OnnxPolicy",
    "ProviderUnavailableError",
]

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


class ProviderUnavailableError(PolicyFileError, RuntimeError):
    """device="cuda" was asked for but onnxruntime cannot run on CUDA here (never a silent CPU fallback)."""


class NonFiniteActionError(PolicyFileError, FloatingPointError):
    """The graph produced NaN/inf: the weights are broken or the observation is absurd; do not act on it."""


class LatencyStats(NamedTuple):
    """Per-call latency of :meth:`OnnxPolicy.act` over the last ``count`` calls, in seconds."""

    p50: float
    p99: float
    max: float
    count: int


# --------------------------------------------------------------------------------------------- policy


class OnnxPolicy:
    """A deterministic policy from an ONNX file written by ``mpo-ros export``.

    Args:
        path: the ``.onnx`` file.
        device: ``"cpu"``; ``"cuda"`` (CUDAExecutionProvider of onnxruntime-gpu, or
            :class:`ProviderUnavailableError`); ``"auto"`` = CUDA when onnxruntime offers it and a
            session starts on it, else CPU (logged). For a 17->256x256->6 MLP the CPU is faster per
            single observation than a GPU round trip; CUDA pays off for large batches or networks.
        intra_op_threads: onnxruntime intra-op threads. 1 (with sequential execution and one
            inter-op thread) gives the lowest jitter for small networks: no thread pool to wake.
        require_contract: raise :class:`MissingContractError` when the file has no robot contract
            (policies of plain gymnasium envs); the ROS node sets it, evaluation does not.
        latency_window: how many recent :meth:`act` calls :meth:`latency_stats` covers.
        warmup_calls: :meth:`act` calls on a zero observation at load (not counted in the stats),
            so the first control step does not pay for lazy allocations.

    Raises:
        PolicyFileError: the file does not exist; or one of its documented subclasses:
        :class:`~mpo_ros.contract.policy_file.NotOnnxError` (empty, truncated, not ONNX),
        :class:`~mpo_ros.contract.policy_file.CorruptPolicyError` (checksum mismatch),
        :class:`~mpo_ros.contract.policy_file.MissingContractError`,
        :class:`~mpo_ros.contract.policy_file.UnsupportedVersionError`,
        :class:`~mpo_ros.contract.policy_file.ContractMismatchError` (graph shapes vs contract),
        :class:`ProviderUnavailableError`, :class:`NonFiniteActionError` (already at warm-up).
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        intra_op_threads: int = 1,
        require_contract: bool = False,
        latency_window: int = 4096,
        warmup_calls: int = 32,
    ) -> None:
        self.path = Path(path)
        source = str(self.path)
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if intra_op_threads < 1 or latency_window < 1 or warmup_calls < 0:
            raise ValueError("intra_op_threads and latency_window must be >= 1, warmup_calls >= 0")
        if not self.path.is_file():
            raise PolicyFileError(
                f"policy file {source} does not exist; export one with `mpo-ros export --run runs/<name> --out {source}`"
            )
        model_bytes = self.path.read_bytes()
        self._session = _open_session(model_bytes, device, intra_op_threads, source)
        self.providers: list[str] = self._session.get_providers()
        self.device = "cuda" if self.providers and self.providers[0] == _CUDA else "cpu"

        props = dict(self._session.get_modelmeta().custom_metadata_map)
        self.policy_metadata: PolicyMetadata = decode_metadata(props, source, file_bytes=model_bytes)
        # Plain JSON-ready view (what `mpo-ros inspect --json` shows): format_version, robot_spec,
        # observation_names, provenance, sha256.
        self.metadata: dict[str, Any] = self.policy_metadata.to_dict()
        if require_contract and self.policy_metadata.robot_spec is None:
            raise MissingContractError(
                f"{source} has no robot contract (it was exported from plain gymnasium env "
                f"{self.policy_metadata.provenance.get('env_id')!r}); a robot needs a policy trained on a robot spec"
            )
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ContractMismatchError(
                f"{source}: mpo_ros policies have one input and one output, this graph has "
                f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}; re-export it with `mpo-ros export`"
            )
        self.obs_dim, self.act_dim = check_io_shapes(
            self.policy_metadata, inputs[0].name, inputs[0].shape, outputs[0].name, outputs[0].shape, source
        )
        self._obs_shape = (self.obs_dim,)
        self._input = np.zeros((1, self.obs_dim), dtype=np.float32)
        self._output = np.zeros((1, self.act_dim), dtype=np.float32)
        self._binding = _bind(self._session, self._input, self._output)
        # Row views of the bound buffers, made once: the hot path would otherwise index per call.
        self._input_row, self._output_row = self._input[0], self._output[0]
        self._sync_outputs = self.device == "cuda"
        self._latency_ns = [0] * latency_window
        self._calls = 0
        for _ in range(warmup_calls):
            self.act(self._input[0].copy())
        self.act_batch(np.zeros((2, self.obs_dim), dtype=np.float32))
        self._calls = 0

    # --- contract views ---------------------------------------------------------------------------
    @property
    def spec(self) -> RobotSpec | None:
        """The robot contract, or None for policies of plain gymnasium envs."""
        return self.policy_metadata.robot_spec

    @property
    def observation_names(self) -> tuple[str, ...]:
        return self.policy_metadata.observation_names

    @property
    def provenance(self) -> Mapping[str, Any]:
        """Where the file came from: env_id, step, eval/return, git_commit, created_at, parity, ..."""
        return self.policy_metadata.provenance

    @property
    def sha256(self) -> str:
        """The file's checksum: a short, unambiguous id of the policy for logs and diagnostics."""
        return self.policy_metadata.sha256

    # --- inference --------------------------------------------------------------------------------
    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action [act_dim] (float32, in [-1, 1], a fresh copy) for one observation [obs_dim].

        The hot path: the observation is copied into a preallocated input buffer bound to the session
        (IO binding), the graph writes into a preallocated output buffer, and only the returned copy is
        allocated. Raises ContractError on a wrong shape and NonFiniteActionError on NaN/inf output.
        """
        start = time.perf_counter_ns()
        if getattr(observation, "shape", None) != self._obs_shape:
            raise ContractError(
                f"observation must have shape {self._obs_shape} (one observation), got "
                f"{getattr(observation, 'shape', type(observation).__name__)}; use act_batch for [B, {self.obs_dim}]"
            )
        self._input[0] = observation
        # run_options stays None: onnxruntime 1.32's wrapper probes RunOptions for a graph-capture id
        # by raising and catching a C++ exception, which costs ~30 us per call when options are given.
        self._session.run_with_iobinding(self._binding)
        if self._sync_outputs:
            self._binding.synchronize_outputs()
        action = self._output[0].copy()
        self._latency_ns[self._calls % len(self._latency_ns)] = time.perf_counter_ns() - start
        self._calls += 1
        # Summing Python floats is ~4x cheaper than np.isfinite(...).all() on a few elements, and the
        # outputs are clipped to [-1, 1], so a non-finite sum means a non-finite element.
        if not math.isfinite(sum(action.tolist())):
            self._non_finite(action.tolist(), observation)
        return action

    @property
    def input_buffer(self) -> np.ndarray:
        """The float32 [obs_dim] buffer bound to the session: what :meth:`act_bound` runs on."""
        return self._input_row

    def act_bound(self) -> list[float]:
        """The action (as Python floats) for the observation already written into :attr:`input_buffer`.

        :func:`policy_step`'s hot path: the observation is written straight into the bound buffer
        (``StepMapper.write_observation``) and the action is read out as floats for
        ``StepMapper.command``, so no array is copied or allocated around inference. Counted in
        :meth:`latency_stats` like :meth:`act`; raises NonFiniteActionError on NaN/inf output.
        """
        start = time.perf_counter_ns()
        self._session.run_with_iobinding(self._binding)
        if self._sync_outputs:
            self._binding.synchronize_outputs()
        action = self._output_row.tolist()
        self._latency_ns[self._calls % len(self._latency_ns)] = time.perf_counter_ns() - start
        self._calls += 1
        if not math.isfinite(sum(action)):
            self._non_finite(action, self._input_row)
        return action

    def warm(self) -> None:
        """One inference on :attr:`input_buffer`, result discarded and not timed: warms the caches.

        The control loop calls it just before a deadline (``FixedRateLoop(warmup=...)``): after a
        period asleep the first inference runs on cold caches, tens of times slower than in a hot loop.
        """
        self._session.run_with_iobinding(self._binding)

    def _non_finite(self, action: list[float], observation: np.ndarray) -> None:
        raise NonFiniteActionError(
            f"{self.path} produced a non-finite action {action} for observation "
            f"{np.asarray(observation).tolist()}; the weights may be broken: re-export the policy"
        )

    def act_batch(self, observations: np.ndarray) -> np.ndarray:
        """Actions [B, act_dim] for observations [B, obs_dim] (evaluation, parity checks; not timed)."""
        batch = np.asarray(observations, dtype=np.float32)
        if batch.ndim != 2 or batch.shape[1] != self.obs_dim:
            raise ContractError(f"observations must have shape [B, {self.obs_dim}], got {batch.shape}")
        actions = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        if not np.isfinite(actions).all():
            bad = int(np.flatnonzero(~np.isfinite(actions).all(axis=1))[0])
            raise NonFiniteActionError(
                f"{self.path} produced a non-finite action for batch row {bad} "
                f"(observation {batch[bad].tolist()}); the weights may be broken: re-export the policy"
            )
        return actions

    def latency_stats(self) -> LatencyStats:
        """p50 / p99 / max of :meth:`act` (seconds) over the last ``latency_window`` calls."""
        count = min(self._calls, len(self._latency_ns))
        if count == 0:
            return LatencyStats(0.0, 0.0, 0.0, 0)
        samples = np.asarray(self._latency_ns[:count], dtype=np.float64) * 1e-9
        p50, p99 = np.percentile(samples, [50.0, 99.0])
        return LatencyStats(float(p50), float(p99), float(samples.max()), count)

    def reset_latency_stats(self) -> None:
        self._calls = 0

    def __repr__(self) -> str:
        robot = self.spec.name if self.spec is not None else self.provenance.get("env_id")
        return f"OnnxPolicy({str(self.path)!r}, {robot}, obs {self.obs_dim} -> act {self.act_dim}, {self.device})"


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings about CPU-placed shape ops are noise here
    return options


def _open_session(
    model_bytes: bytes, device: str, intra_op_threads: int, source: str
) -> ort.InferenceSession:
    if not model_bytes:
        raise NotOnnxError(f"{source} is empty; copy the policy file again or re-export it")
    available = ort.get_available_providers()
    if device == "cuda" and _CUDA not in available:
        raise ProviderUnavailableError(
            f"device='cuda' needs onnxruntime's CUDAExecutionProvider but this onnxruntime offers {available}; "
            "install onnxruntime-gpu (matching your CUDA/cuDNN) instead of onnxruntime, or use device='cpu'"
        )
    options = _session_options(intra_op_threads)
    if not (device == "cuda" or (device == "auto" and _CUDA in available)):
        return _create_session(model_bytes, options, [_CPU], source)
    try:
        session = ort.InferenceSession(model_bytes, options, providers=[_CUDA, _CPU])
        reason = "" if _CUDA in session.get_providers() else f"providers in use: {session.get_providers()}"
    except Exception as exc:  # a CUDA start failure, or a bad file (told apart below)
        session, reason = None, _first_line(exc)
    if not reason:
        return session
    # onnxruntime may fall back to the CPU silently when the CUDA libraries fail to load; a file that
    # does not load on the CPU either is a bad file, and says so.
    cpu_session = _create_session(model_bytes, options, [_CPU], source)
    if device == "cuda":
        raise ProviderUnavailableError(
            f"onnxruntime could not start a CUDA session for {source} ({reason}); check the CUDA/cuDNN "
            "libraries onnxruntime-gpu needs (see onnxruntime's CUDA requirements) or use device='cpu'"
        )
    log.info("device='auto': CUDA unavailable (%s); %s runs on the CPU", reason, source)
    return cpu_session


def _create_session(
    model_bytes: bytes, options: ort.SessionOptions, providers: list[str], source: str
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model_bytes, options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
        raise NotOnnxError(
            f"{source} is not a loadable ONNX model ({_first_line(exc)}); it may be truncated or not an ONNX "
            "file: copy it again or re-export it with `mpo-ros export`"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _bind(session: ort.InferenceSession, inputs: np.ndarray, outputs: np.ndarray) -> Any:
    """IO binding over host buffers; with CUDA, onnxruntime copies them to/from the device per run."""
    binding = session.io_binding()
    binding.bind_input(INPUT_NAME, "cpu", 0, np.float32, list(inputs.shape), inputs.ctypes.data)
    binding.bind_output(OUTPUT_NAME, "cpu", 0, np.float32, list(outputs.shape), outputs.ctypes.data)
    return binding
