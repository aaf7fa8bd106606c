"""OnnxPolicy: real exported files through real onnxruntime; every documented load error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
from policy_files import TinyPolicy, export_tiny, rewrite_metadata, torch_actions

from mpo_ros.contract.observation import observation_names, observation_size
from mpo_ros.contract.policy_file import (
    KEY_FORMAT_VERSION,
    KEY_ROBOT_SPEC,
    ContractMismatchError,
    CorruptPolicyError,
    MissingContractError,
    NotOnnxError,
    UnsupportedVersionError,
)
from mpo_ros.contract.spec import JointSpec, RobotSpec, TaskSpec, load_spec
from mpo_ros.errors import ContractError, PolicyFileError
from mpo_ros.robot.onnx_policy import NonFiniteActionError, OnnxPolicy, ProviderUnavailableError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def arm2_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyPolicy]:
    path = tmp_path_factory.mktemp("policies") / "arm2.onnx"
    module, _ = export_tiny(path, load_spec("arm2"))
    return path, module


def _odd_spec() -> RobotSpec:
    """A contract with floats that do not survive rounding to a few digits."""
    third = 1.0 / 3.0
    joints = tuple(
        JointSpec(f"j{i}", -1.1 - third, 1.2 + third, 3.3, 0.1 * i, 0.7 + third, 0.05 + 1e-9 * i)
        for i in range(3)
    )
    task = TaskSpec("reach", (0.1, -0.2, 0.0), (0.3, 0.2 + third, 0.1), 0.025, 1.5, {"w": 1e-7 + third})
    return RobotSpec("odd3", joints, 123.456789, 7, ("goal", "joint_velocities", "joint_positions"), task)


# --- the happy path ----------------------------------------------------------------------------------


def test_act_matches_torch_and_metadata_round_trips(arm2_file: tuple[Path, TinyPolicy]) -> None:
    path, module = arm2_file
    spec = load_spec("arm2")
    policy = OnnxPolicy(path)
    assert policy.spec == spec and policy.spec.to_json() == spec.to_json()
    assert policy.obs_dim == observation_size(spec) and policy.act_dim == spec.action_dim
    assert policy.observation_names == tuple(observation_names(spec))
    assert policy.providers == ["CPUExecutionProvider"] and policy.device == "cpu"
    assert policy.provenance["step"] == 123 and len(policy.provenance["git_commit"] or "x") > 0
    assert policy.metadata["robot_spec"] == json.loads(spec.to_json())
    assert policy.metadata["observation_names"] == observation_names(spec)
    assert policy.metadata["sha256"] == policy.sha256 and len(policy.sha256) == 64

    observations = np.random.default_rng(0).normal(0, 3, (300, policy.obs_dim)).astype(np.float32)
    expected = torch_actions(module, observations)
    singles = np.stack([policy.act(o) for o in observations])
    assert np.abs(singles - expected).max() < 1e-5
    assert np.abs(policy.act_batch(observations) - expected).max() < 1e-5
    assert singles.dtype == np.float32 and np.abs(singles).max() <= 1.0


def test_full_precision_contract_round_trip(tmp_path: Path) -> None:
    spec = _odd_spec()
    export_tiny(tmp_path / "odd.onnx", spec)
    loaded = OnnxPolicy(tmp_path / "odd.onnx").spec
    assert loaded == spec
    assert loaded.joints[1].lower == spec.joints[1].lower  # exact, not rounded
    assert loaded.task.params["w"] == 1e-7 + 1.0 / 3.0


def test_act_returns_a_copy_and_counts_latency(arm2_file: tuple[Path, TinyPolicy]) -> None:
    policy = OnnxPolicy(arm2_file[0], latency_window=8)
    assert policy.latency_stats().count == 0  # warm-up calls are not counted
    obs = np.ones(policy.obs_dim, np.float32)
    first = policy.act(obs)
    first_value = first.copy()
    first[:] = 99.0
    second = policy.act(obs)
    np.testing.assert_array_equal(second, first_value)
    for _ in range(20):
        policy.act(obs)
    stats = policy.latency_stats()
    assert stats.count == 8  # ring buffer
    assert 0 < stats.p50 <= stats.p99 <= stats.max < 1.0


def test_act_rejects_wrong_shapes(arm2_file: tuple[Path, TinyPolicy]) -> None:
    policy = OnnxPolicy(arm2_file[0])
    for bad in (
        np.zeros(policy.obs_dim + 1),
        np.zeros((1, policy.obs_dim)),
        np.zeros(1),
        [0.0] * policy.obs_dim,
    ):
        with pytest.raises(ContractError, match="observation must have shape"):
            policy.act(bad)  # type: ignore[arg-type]
    with pytest.raises(ContractError):
        policy.act_batch(np.zeros(policy.obs_dim))


def test_plain_gym_policy_loads_without_contract_but_is_refused_for_robots(tmp_path: Path) -> None:
    path = tmp_path / "hopper.onnx"
    export_tiny(path, None, obs_dim=11, act_dim=3, provenance={"env_id": "Hopper-v5"})
    policy = OnnxPolicy(path)
    assert policy.spec is None and (policy.obs_dim, policy.act_dim) == (11, 3)
    assert policy.observation_names[0] == "observation/0"
    assert policy.act(np.zeros(11, np.float32)).shape == (3,)
    with pytest.raises(MissingContractError, match="Hopper-v5"):
        OnnxPolicy(path, require_contract=True)


def test_devices(arm2_file: tuple[Path, TinyPolicy]) -> None:
    import onnxruntime as ort

    assert OnnxPolicy(arm2_file[0], device="auto").device in ("cpu", "cuda")
    with pytest.raises(ValueError, match="device"):
        OnnxPolicy(arm2_file[0], device="gpu")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu installed: device='cuda' is expected to work here")
    with pytest.raises(ProviderUnavailableError, match="onnxruntime-gpu"):
        OnnxPolicy(arm2_file[0], device="cuda")
    assert issubclass(ProviderUnavailableError, RuntimeError)


# --- files that must be refused ----------------------------------------------------------------------


def _load_error(path: Path) -> PolicyFileError:
    with pytest.raises(PolicyFileError) as info:
        OnnxPolicy(path)
    return info.value


def test_missing_empty_text_and_truncated_files(tmp_path: Path, arm2_file: tuple[Path, TinyPolicy]) -> None:
    error = _load_error(tmp_path / "nope.onnx")
    assert "does not exist" in str(error) and "mpo-ros export" in str(error)
    data = arm2_file[0].read_bytes()
    cases = {
        "empty": b"",
        "text": b"policy = 'not onnx'\n",
        "half": data[: len(data) // 2],
        "head": data[:64],
    }
    for name, content in cases.items():
        (tmp_path / f"{name}.onnx").write_bytes(content)
        error = _load_error(tmp_path / f"{name}.onnx")
        assert isinstance(error, NotOnnxError), (name, error)
        assert "re-export" in str(error)


def test_flipped_weight_byte_is_caught_by_the_checksum(
    tmp_path: Path, arm2_file: tuple[Path, TinyPolicy]
) -> None:
    model = onnx.load(str(arm2_file[0]))
    weight = onnx.numpy_helper.to_array(model.graph.initializer[0])
    data = bytearray(arm2_file[0].read_bytes())
    at = bytes(data).find(weight.tobytes())
    assert at > 0
    data[at + 5] ^= 0x40  # still valid protobuf, still a float: only the checksum can tell
    (tmp_path / "flipped.onnx").write_bytes(bytes(data))
    error = _load_error(tmp_path / "flipped.onnx")
    assert isinstance(error, CorruptPolicyError) and "copy the file again" in str(error)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_plain_onnx_without_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.onnx"
    torch.onnx.export(
        TinyPolicy(8, 2),
        (torch.zeros(1, 8),),
        str(path),
        input_names=["observation"],
        output_names=["action"],
        dynamic_axes={"observation": {0: "b"}, "action": {0: "b"}},
        opset_version=17,
        dynamo=False,
    )
    error = _load_error(path)
    assert isinstance(error, MissingContractError) and "mpo-ros export" in str(error)


def test_contract_that_does_not_match_the_graph(tmp_path: Path, arm2_file: tuple[Path, TinyPolicy]) -> None:
    arm6 = load_spec("arm6")

    def swap_to_arm6(props: dict[str, str]) -> None:
        props[KEY_ROBOT_SPEC] = arm6.to_json()
        props["mpo_ros.observation_names"] = json.dumps(observation_names(arm6))

    rewrite_metadata(arm2_file[0], tmp_path / "mixed.onnx", swap_to_arm6)
    error = _load_error(tmp_path / "mixed.onnx")
    assert isinstance(error, ContractMismatchError) and "observations of size" in str(error)


def test_action_size_mismatch(tmp_path: Path) -> None:
    spec = load_spec("arm2")
    path = tmp_path / "wide.onnx"
    export_tiny(path, None, obs_dim=observation_size(spec), act_dim=3)

    def add_arm2_contract(props: dict[str, str]) -> None:
        props[KEY_ROBOT_SPEC] = spec.to_json()
        props["mpo_ros.observation_names"] = json.dumps(observation_names(spec))

    rewrite_metadata(path, tmp_path / "bad.onnx", add_arm2_contract)
    error = _load_error(tmp_path / "bad.onnx")
    assert isinstance(error, ContractMismatchError) and "outputs 3 actions" in str(error)


@pytest.mark.parametrize("which", ["format", "contract"])
def test_future_versions_are_refused(tmp_path: Path, arm2_file: tuple[Path, TinyPolicy], which: str) -> None:
    def bump(props: dict[str, str]) -> None:
        if which == "format":
            props[KEY_FORMAT_VERSION] = "99"
        else:
            data = json.loads(props[KEY_ROBOT_SPEC])
            data["contract_version"] = 99
            props[KEY_ROBOT_SPEC] = json.dumps(data)

    rewrite_metadata(arm2_file[0], tmp_path / "future.onnx", bump)
    error = _load_error(tmp_path / "future.onnx")
    assert isinstance(error, UnsupportedVersionError) and "upgrade mpo_ros" in str(error)


def test_nan_weights_are_refused_at_load(tmp_path: Path, arm2_file: tuple[Path, TinyPolicy]) -> None:
    def poison(model: onnx.ModelProto) -> None:
        for tensor in model.graph.initializer:
            array = onnx.numpy_helper.to_array(tensor)
            if array.ndim == 2:  # the Linear weight matrices
                tensor.CopyFrom(onnx.numpy_helper.from_array(np.full_like(array, np.nan), tensor.name))

    rewrite_metadata(arm2_file[0], tmp_path / "nan.onnx", lambda props: None, graph_edit=poison)
    error = _load_error(tmp_path / "nan.onnx")
    assert isinstance(error, NonFiniteActionError) and "re-export" in str(error)


def test_nan_output_for_some_observations_raises(tmp_path: Path) -> None:
    class SqrtPolicy(torch.nn.Module):
        """NaN whenever observation[0] < 0: a stand-in for a graph that blows up off-distribution."""

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            return torch.sqrt(observations[:, :2]).clamp(-1.0, 1.0)

    observations = np.random.default_rng(0).uniform(0.0, 2.0, (1000, 4)).astype(np.float32)
    from mpo_ros.training.export import export_module

    export_module(SqrtPolicy(), 4, 2, tmp_path / "sqrt.onnx", parity_observations=observations)
    policy = OnnxPolicy(tmp_path / "sqrt.onnx")
    assert np.isfinite(policy.act(np.ones(4, np.float32))).all()
    with pytest.raises(NonFiniteActionError, match="non-finite action"):
        policy.act(np.array([-1.0, 1.0, 0.0, 0.0], np.float32))
    with pytest.raises(NonFiniteActionError, match="batch row 1"):
        policy.act_batch(np.array([[1, 1, 0, 0], [1, -1, 0, 0]], np.float32))


def test_robot_side_imports_no_torch() -> None:
    code = "import sys, mpo_ros.robot.onnx_policy, mpo_ros.robot.safety, mpo_ros.tools.inspect; print('torch' in sys.modules, 'rclpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
