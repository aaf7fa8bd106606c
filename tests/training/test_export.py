"""Export: real torch -> ONNX -> onnxruntime, on a small module and on a real (short) training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from policy_files import TinyPolicy, export_tiny, torch_actions

from mpo_ros import cli
from mpo_ros.contract.observation import observation_names, observation_size
from mpo_ros.contract.policy_file import (
    INPUT_NAME,
    KEY_FORMAT_VERSION,
    KEY_OBSERVATION_NAMES,
    KEY_PROVENANCE,
    KEY_ROBOT_SPEC,
    KEY_SHA256,
    OUTPUT_NAME,
)
from mpo_ros.contract.spec import load_spec
from mpo_ros.errors import CheckpointError, ExportError
from mpo_ros.robot.onnx_policy import OnnxPolicy
from mpo_ros.training.export import DEFAULT_OPSET, export_module

pytestmark = pytest.mark.filterwarnings("ignore:.*precision lowered:UserWarning")
torch.set_num_threads(1)
SPEC = load_spec("arm2")
OBS_DIM = observation_size(SPEC)


def test_exported_graph_is_plain_onnx_with_the_contract(tmp_path: Path) -> None:
    path = tmp_path / "arm2.onnx"
    _, report = export_tiny(path, SPEC)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # no custom ops
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == INPUT_NAME and graph_output.name == OUTPUT_NAME
    for value, size in ((graph_input, OBS_DIM), (graph_output, SPEC.action_dim)):
        batch, features = value.type.tensor_type.shape.dim
        assert batch.dim_param and not batch.HasField("dim_value")  # dynamic batch axis
        assert features.dim_value == size

    props = {p.key: p.value for p in model.metadata_props}
    assert props[KEY_FORMAT_VERSION] == "1"
    assert props[KEY_ROBOT_SPEC] == SPEC.to_json()
    assert json.loads(props[KEY_OBSERVATION_NAMES]) == observation_names(SPEC)
    provenance = json.loads(props[KEY_PROVENANCE])
    for key in ("mpo_ros_version", "git_commit", "created_at", "opset", "parity_max_abs_error", "env_id"):
        assert key in provenance
    assert provenance["parity_observations"] >= 1000 and provenance["parity_max_abs_error"] < 1e-5
    assert props[KEY_SHA256] == report.sha256 and report.size_bytes == path.stat().st_size
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed, not left behind


def test_parity_failure_writes_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    class CountingPolicy(TinyPolicy):
        """Python state in forward: the trace freezes it, torch keeps counting -> ONNX != torch."""

        calls = 0

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return (super().forward(observations) * 0.5 + 0.01 * self.calls).clamp(-1.0, 1.0)

    path = tmp_path / "arm2.onnx"
    path.write_bytes(b"the policy that is running on the robot")
    with pytest.raises(ExportError, match="parity check failed"):
        export_module(CountingPolicy(OBS_DIM, 2), OBS_DIM, 2, path, robot_spec=SPEC)
    assert path.read_bytes() == b"the policy that is running on the robot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arm2.onnx"]


def test_export_refuses_inconsistent_inputs(tmp_path: Path) -> None:
    module = TinyPolicy(OBS_DIM, 2)
    out = tmp_path / "x.onnx"
    with pytest.raises(ExportError, match="1000"):
        export_module(module, OBS_DIM, 2, out, parity_observations=np.zeros((10, OBS_DIM)))
    with pytest.raises(ExportError, match="NaN"):
        export_module(module, OBS_DIM, 2, out, parity_observations=np.full((1000, OBS_DIM), np.nan))
    with pytest.raises(ExportError, match="has 2 joints"):
        export_module(TinyPolicy(OBS_DIM, 3), OBS_DIM, 3, out, robot_spec=SPEC)
    with pytest.raises(ExportError, match="expected"):
        export_module(module, OBS_DIM, 3, out)
    assert not out.exists()


def test_export_parity_holds_beyond_the_check(tmp_path: Path) -> None:
    module, _ = export_tiny(tmp_path / "p.onnx", SPEC, seed=7)
    policy = OnnxPolicy(tmp_path / "p.onnx")
    observations = np.random.default_rng(1).normal(0, 5, (2000, OBS_DIM)).astype(np.float32)
    assert np.abs(policy.act_batch(observations) - torch_actions(module, observations)).max() < 1e-5


# --- a real training run -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 steps of real MPO training on arm2 (a few seconds): a checkpoint + replay on disk."""
    from mpo_ros.training.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "arm2-short"
    config = TrainConfig(
        env="mpo_ros_sim:Arm2Reach-v0",
        steps=400,
        warmup_steps=200,
        batch_size=32,
        eval_every=0,
        eval_episodes=1,
        checkpoint_every=0,
        log_every=200,
        out=str(out),
        threads=1,
        progress=False,
        policy_hidden=[32, 32],
        critic_hidden=[32, 32],
        num_samples=8,
    )
    train(config)
    return out


@pytest.mark.slow
def test_cli_export_and_inspect_a_trained_run(trained_run: Path, capsys: pytest.CaptureFixture) -> None:
    out = trained_run / "arm2.onnx"
    assert cli.main(["export", "--run", str(trained_run), "--out", str(out)]) == 0
    assert "parity: max |torch - onnxruntime|" in capsys.readouterr().out
    policy = OnnxPolicy(out, require_contract=True)
    assert policy.spec == SPEC
    # arm2's contract action filter rides in the file: the node applies the one training saw.
    assert (policy.spec.action_filter, policy.spec.action_filter_cutoff_hz) == ("lowpass", 3.0)
    assert policy.provenance["step"] == 400 and policy.provenance["env_id"] == "mpo_ros_sim:Arm2Reach-v0"
    assert "from the saved replay" in policy.provenance["parity_source"]

    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    for expected in ("status      OK", "shoulder", "elbow", "50 Hz", "joint_velocities/elbow", "git_commit",
                     "low-pass filtered (cutoff 3 Hz"):  # fmt: skip
        assert expected in text
    assert cli.main(["inspect", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["valid"] and info["deployable"] and info["robot_spec"] == json.loads(SPEC.to_json())

    broken = trained_run / "broken.onnx"
    data = bytearray(out.read_bytes())
    data[len(data) // 3] ^= 0x01
    broken.write_bytes(bytes(data))
    assert cli.main(["inspect", str(broken)]) == 2
    assert "INVALID" in capsys.readouterr().out


@pytest.mark.slow
def test_onnx_and_checkpoint_agree_in_simulation(trained_run: Path, tmp_path: Path) -> None:
    """Sim-only evaluation: the exported file and the checkpoint act the same, step by step."""
    from mpo_ros.training.envs import make_env
    from mpo_ros.training.export import export_checkpoint
    from mpo_ros.training.state import load_policy

    report = export_checkpoint(trained_run, tmp_path / "arm2.onnx")
    assert report.parity_max_abs_error < 1e-5
    policy = OnnxPolicy(report.path)
    module, _ = load_policy(trained_run)
    env = make_env("mpo_ros_sim:Arm2Reach-v0")
    try:
        returns = {}
        for name in ("onnx", "torch"):
            obs, _ = env.reset(seed=11)
            total, done, worst = 0.0, False, 0.0
            while not done:
                onnx_action = policy.act(np.asarray(obs, np.float32))
                torch_action = torch_actions(module, obs[None])[0]
                worst = max(worst, float(np.abs(onnx_action - torch_action).max()))
                obs, reward, terminated, truncated, _ = env.step(
                    onnx_action if name == "onnx" else torch_action
                )
                total += float(reward)
                done = terminated or truncated
            assert worst < 1e-5
            returns[name] = total
    finally:
        env.close()
    assert returns["onnx"] == pytest.approx(returns["torch"], rel=1e-4, abs=1e-4)


def test_export_of_a_missing_run_fails_clearly(tmp_path: Path) -> None:
    from mpo_ros.training.export import export_checkpoint

    with pytest.raises(CheckpointError, match="no checkpoint at"):
        export_checkpoint(tmp_path / "no-such-run", tmp_path / "x.onnx")
    assert cli.main(["export", "--run", str(tmp_path / "no-such-run")]) == 2
    assert cli.main(["export", "--checkpoint", str(tmp_path / "a.pt")]) == 2  # no --out for a bare checkpoint
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("opset", [16, 18])
def test_other_opsets_export_with_parity(tmp_path: Path, opset: int) -> None:
    _, report = export_tiny(tmp_path / "o.onnx", SPEC, opset=opset)
    model = onnx.load(str(tmp_path / "o.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert report.parity_max_abs_error < 1e-5 and OnnxPolicy(report.path).spec == SPEC


def test_inspect_a_policy_without_contract(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    export_tiny(tmp_path / "hopper.onnx", None, obs_dim=11, act_dim=3, provenance={"env_id": "Hopper-v5"})
    assert cli.main(["inspect", str(tmp_path / "hopper.onnx")]) == 0
    text = capsys.readouterr().out
    assert "no robot contract" in text and "Hopper-v5" in text and "observation/10" in text
    assert cli.main(["inspect", str(tmp_path / "missing.onnx")]) == 2


@pytest.mark.slow
def test_plain_gym_checkpoint_exports_without_contract(tmp_path: Path) -> None:
    """Hopper: no robot contract; without a saved replay the parity data come from rolling the policy."""
    from mpo_ros.training.export import export_checkpoint
    from mpo_ros.training.loop import TrainConfig, train

    run = tmp_path / "hopper"
    train(
        TrainConfig(
            env="Hopper-v5",
            steps=150,
            warmup_steps=100,
            batch_size=16,
            eval_every=0,
            eval_episodes=1,
            checkpoint_every=0,
            log_every=100,
            out=str(run),
            threads=1,
            progress=False,
            policy_hidden=[16],
            critic_hidden=[16],
            num_samples=4,
        )
    )
    for replay in (run / "checkpoints").glob("replay*.npz"):
        replay.unlink()
    report = export_checkpoint(run, tmp_path / "hopper.onnx", parity_count=1200)
    assert "from rolling the policy in Hopper-v5" in report.parity_source
    policy = OnnxPolicy(report.path)
    assert policy.spec is None and (policy.obs_dim, policy.act_dim) == (11, 3)
    assert policy.provenance["env_id"] == "Hopper-v5" and policy.provenance["step"] == 150


def test_unclamped_module_is_refused(tmp_path: Path) -> None:
    """Actions outside [-1, 1] mean the module is not the deployable policy (e.g. raw mean head)."""
    torch.manual_seed(0)
    with pytest.raises(ExportError, match="clamp"):
        export_module(torch.nn.Linear(OBS_DIM, 2), OBS_DIM, 2, tmp_path / "u.onnx")
    assert not (tmp_path / "u.onnx").exists()
