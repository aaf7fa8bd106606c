"""What runs on the robot: the ONNX policy, the safety filter, and the one call per control step.

Needs numpy + onnxruntime only (no torch, no ROS), so a robot computer installs little and the node
starts fast. Three pieces, each usable alone:

- :class:`OnnxPolicy` loads a file written by ``mpo-ros export``, refuses it with a specific error
  when it is damaged or does not match its own contract, and maps one observation to one action
  with preallocated buffers (the hot path allocates only the returned copy).
- :class:`SafetyFilter` turns actions into joint position commands that respect joint limits and
  per-step deltas (``observation.limit_command``), and holds or stops on non-finite data.
- :func:`policy_step` is one control step, joint state in, :class:`SafetyDecision` out; the ROS
  policy node calls it once per tick and the latency benchmark measures exactly this call. For float
  arrays of the contract's sizes it takes a hot path (``observation.StepMapper`` writing straight into
  the policy's bound input buffer, :meth:`OnnxPolicy.act_bound`), about 5-7 us on top of inference
  instead of 21-23 us (benchmarks/results/inference_latency.json); other inputs take the vectorised
  functions, with identical results.

Typical node code::

    policy = OnnxPolicy("models/arm2.onnx", device="cpu", require_contract=True)
    safety = SafetyFilter.for_policy(policy, on_fault="hold")
    safety.reset(measured_joint_positions)            # at enable (e-stop released)
    ...
    decision = policy_step(policy, safety, joint_positions, joint_velocities, goal)  # every tick
    if decision.publish:
        send(decision.command)
    if decision.fault:
        report(decision.fault)                        # also counted in safety.fault_counts

Not thread-safe: one OnnxPolicy and one SafetyFilter belong to one control loop.
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

from mpo_ros.contract.observation import StepMapper, build_observation, executed_action, limit_command
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


# --------------------------------------------------------------------------------------------- safety

FAULT_NOT_ENABLED = "not_enabled"  # step before reset(), or after disable()
FAULT_NONFINITE_OBSERVATION = "nonfinite_observation"  # NaN/inf joint state, velocity or goal
FAULT_NONFINITE_ACTION = "nonfinite_action"  # NaN/inf from the policy
FAULT_BAD_INPUT = "bad_input"  # wrong vector sizes (a contract violation upstream)
FAULT_STOPPED = "stopped"  # on_fault="stop" latched after an earlier fault; reset() to resume

ON_FAULT = ("hold", "stop")


class SafetyDecision(NamedTuple):
    """What to do this control step.

    command: joint position targets [num_joints] in contract order (rad). On a fault it is the last
        safe command (the hold position). Always within joint limits.
    publish: send ``command`` this step. False when stopped or not enabled: send nothing and let the
        controller's own hold/timeout behaviour take over.
    fault: None when the policy's command passed (possibly clamped); else a FAULT_* code.
    """

    command: np.ndarray
    publish: bool
    fault: str | None


def _finite(values: np.ndarray) -> bool:
    # Exact for float32 inputs (a float64 sum of float32 values cannot overflow at these sizes).
    # ravel: an observation broadcast to 2-D by a wrongly shaped input is a fault (the policy refuses
    # its shape), not a TypeError from summing nested lists.
    return math.isfinite(sum(values.ravel().tolist()))


class SafetyFilter:
    """Last line of defence between the policy and the joints.

    Commands pass through ``observation.limit_command`` (joint limits and per-step ``max_delta``,
    the same function simulation applies, so the policy was trained under the same limits). Non-finite
    observations or actions are rejected and counted by reason; then

    - ``on_fault="hold"``: publish the last safe command (the robot holds still) and carry on with the
      next good step, which is delta-limited from the held command;
    - ``on_fault="stop"``: tell the caller to stop publishing (``publish=False``) and stay stopped
      (``FAULT_STOPPED``) until :meth:`reset`.

    Before the first :meth:`reset` (and after :meth:`disable`) nothing is published. :meth:`reset`
    takes the measured joint positions at enable time as the initial hold command, so enabling never
    makes the arm jump, and sets the last action fed back into observations the way simulation does
    at an episode start (the action of the held pose).

    The last command and last action are kept as Python floats for ``observation.StepMapper``, the
    single-step form of the contract mappings (bit-identical to the vectorised ones, a third of the
    cost); :attr:`last_command` and :attr:`last_action` give them as arrays.
    """

    def __init__(self, spec: RobotSpec, on_fault: str = "hold") -> None:
        if on_fault not in ON_FAULT:
            raise ValueError(f"on_fault must be one of {ON_FAULT}, got {on_fault!r}")
        self.spec = spec
        self.on_fault = on_fault
        self.fault_counts: dict[str, int] = {}
        self.steps = 0
        # Steps where limit_command changed the policy's command (joint or delta limit active).
        self.limited_steps = 0
        self._lower = np.array([j.lower for j in spec.joints])
        self._upper = np.array([j.upper for j in spec.joints])
        self._mapper = StepMapper(spec)
        self._command: list[float] = [j.default for j in spec.joints]
        self._action: list[float] = [0.0] * spec.action_dim
        self.enabled = False
        self.stopped = False

    @classmethod
    def for_policy(cls, policy: OnnxPolicy, on_fault: str = "hold") -> SafetyFilter:
        """A filter for ``policy``'s robot contract; refuses contract-less (plain gym) policies."""
        if policy.spec is None:
            raise MissingContractError(
                f"{policy.path} has no robot contract, so it cannot drive a robot; export a policy trained on a robot spec"
            )
        return cls(policy.spec, on_fault)

    @property
    def last_command(self) -> np.ndarray:
        """The last safe command (a copy): what the robot is told to hold."""
        return np.array(self._command)

    @property
    def last_action(self) -> np.ndarray:
        """The executed action (a copy) the next observation's ``last_action`` block carries."""
        return np.array(self._action)

    @last_action.setter
    def last_action(self, value: np.ndarray) -> None:
        action = np.asarray(value, dtype=np.float64)
        if action.shape != (self.spec.action_dim,):
            raise ContractError(f"last_action must have shape ({self.spec.action_dim},), got {action.shape}")
        self._action = action.tolist()

    def reset(self, hold_positions: np.ndarray) -> None:
        """Enable: hold ``hold_positions`` (measured joints, contract order), clear the fault latch.

        Raises ContractError if the positions are not finite or of the wrong size: enabling from an
        unknown pose is refused rather than guessed.
        """
        hold = np.asarray(hold_positions, dtype=np.float64)
        if hold.shape != (self.spec.num_joints,) or not np.isfinite(hold).all():
            raise ContractError(
                f"cannot enable: hold positions must be {self.spec.num_joints} finite values for "
                f"{list(self.spec.joint_names)}, got {hold.tolist()}; wait for a valid /joint_states"
            )
        command = np.clip(hold, self._lower, self._upper)
        self._command = command.tolist()
        # As in simulation (sim/reach_env.py reset): the held pose is the previous command and its
        # action, clipped to [-1, 1], the last action the first observation sees.
        self._action = executed_action(self.spec, command).tolist()
        self.enabled = True
        self.stopped = False

    def disable(self) -> None:
        """E-stop: publish nothing until the next :meth:`reset`."""
        self.enabled = False

    def step(self, observation: np.ndarray, action: np.ndarray) -> SafetyDecision:
        """Command for a policy action in [-1, 1] (``action_to_command``, then limits)."""
        observation, action = np.asarray(observation), np.asarray(action)
        gate = self._gate(observation, action)
        if gate is not None:
            return gate
        if action.shape != (self.spec.action_dim,):
            return self.reject(FAULT_BAD_INPUT)
        return self._accept_action(np.asarray(action, dtype=np.float64).tolist())

    def step_command(self, observation: np.ndarray, command: np.ndarray) -> SafetyDecision:
        """Like :meth:`step` for a controller that already produced joint position targets (rad)."""
        observation, command = np.asarray(observation), np.asarray(command)
        gate = self._gate(observation, command)
        if gate is not None:
            return gate
        if command.shape != (self.spec.num_joints,):
            return self.reject(FAULT_BAD_INPUT)
        wanted = np.asarray(command, dtype=np.float64)
        limited = limit_command(self.spec, np.array(self._command), wanted)
        self.steps += 1
        if not np.array_equal(limited, wanted):
            self.limited_steps += 1
        self._command = limited.tolist()
        return SafetyDecision(limited, True, None)

    def reject(self, fault: str) -> SafetyDecision:
        """Count ``fault`` and return the hold (or stop) decision for it."""
        self.steps += 1
        self.fault_counts[fault] = self.fault_counts.get(fault, 0) + 1
        hold = np.array(self._command)
        if not self.enabled:
            return SafetyDecision(hold, False, fault)
        if self.on_fault == "stop":
            self.stopped = True
            return SafetyDecision(hold, False, fault)
        return SafetyDecision(hold, True, fault)

    def _gate(self, observation: np.ndarray, action: np.ndarray) -> SafetyDecision | None:
        if not self.enabled:
            return self.reject(FAULT_NOT_ENABLED)
        if self.stopped:
            return self.reject(FAULT_STOPPED)
        if not _finite(observation):
            return self.reject(FAULT_NONFINITE_OBSERVATION)
        if not _finite(action):
            return self.reject(FAULT_NONFINITE_ACTION)
        return None

    def _accept_action(self, action: list[float]) -> SafetyDecision:
        """A finite action of the right size: map, limit, and remember command and executed action."""
        command, self._action, limited = self._mapper.command(self._command, action)
        self.steps += 1
        if limited:
            self.limited_steps += 1
        self._command = command
        return SafetyDecision(np.array(command), True, None)


def policy_step(
    policy: OnnxPolicy,
    safety: SafetyFilter,
    joint_positions: np.ndarray,
    joint_velocities: np.ndarray,
    goal: np.ndarray,
) -> SafetyDecision:
    """One control step: joint state (contract order, rad, rad/s) and goal -> the command to send.

    Builds the observation from the joint state, the goal and the safety filter's last action, runs
    the policy, and filters its action. Never raises on bad data: wrong sizes, NaN/inf inputs or
    outputs become a fault decision (hold or stop, see :class:`SafetyFilter`). The policy is not run
    while the filter is disabled or stopped.

    With an :class:`OnnxPolicy` and 1-D float arrays of the contract's sizes (what the node passes)
    the step runs on ``observation.StepMapper``; anything else goes through the vectorised
    ``observation`` functions. Both give bit-identical commands (tests/test_safety.py).
    """
    if not safety.enabled or safety.stopped:
        return safety.reject(FAULT_NOT_ENABLED if not safety.enabled else FAULT_STOPPED)
    mapper = safety._mapper
    if (
        type(policy) is OnnxPolicy
        and policy.obs_dim == mapper.observation_size
        and policy.act_dim == mapper.num_joints
    ):
        positions = _floats(joint_positions, mapper.num_joints)
        velocities = _floats(joint_velocities, mapper.num_joints)
        goal_values = _floats(goal, mapper.goal_dim)
        if positions is not None and velocities is not None and goal_values is not None:
            # The hot path: same mappings (StepMapper), same checks, same faults as the general path
            # below, without building intermediate arrays.
            observation = policy.input_buffer
            mapper.write_observation(observation, positions, velocities, safety._action, goal_values)
            if not math.isfinite(sum(observation.tolist())):
                return safety.reject(FAULT_NONFINITE_OBSERVATION)
            try:
                action = policy.act_bound()
            except NonFiniteActionError:
                return safety.reject(FAULT_NONFINITE_ACTION)
            return safety._accept_action(action)
    # Anything else (lists, other dtypes or sizes, a policy object that is not an OnnxPolicy): the
    # vectorised mappings, which also turn wrong sizes into ContractError -> FAULT_BAD_INPUT.
    try:
        observation = build_observation(
            safety.spec, joint_positions, joint_velocities, np.array(safety._action), goal
        )
        if not _finite(observation):
            return safety.reject(FAULT_NONFINITE_OBSERVATION)
        action = policy.act(observation)
    except NonFiniteActionError:
        return safety.reject(FAULT_NONFINITE_ACTION)
    except ContractError:
        return safety.reject(FAULT_BAD_INPUT)
    return safety.step(observation, action)


def _floats(values: Any, size: int) -> list[float] | None:
    """``values`` as Python floats when it is a 1-D float ndarray of ``size`` elements, else None.

    Float arrays only: their elements convert to Python floats exactly, as ``np.asarray(..., float64)``
    would; anything else goes the general path, which converts and validates it the vectorised way.
    """
    if type(values) is np.ndarray and values.shape == (size,) and values.dtype.kind == "f":
        return values.tolist()
    return None
