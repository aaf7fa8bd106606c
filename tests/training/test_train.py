"""The training loop end to end on real gymnasium / MuJoCo environments (tiny networks, short runs)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from mpo_ros import cli
from mpo_ros.errors import CheckpointError, ConfigError
from mpo_ros.training.loop import TrainConfig, train
from mpo_ros.training.replay import ReplayBuffer
from mpo_ros.training.state import checkpoint_path_for, load_checkpoint, load_policy

torch.set_num_threads(1)

TINY = dict(
    policy_hidden=[16, 16],
    critic_hidden=[16, 16],
    num_samples=4,
    batch_size=16,
    warmup_steps=100,
    eval_episodes=1,
    progress=False,
    threads=1,
)


def _config(out, **overrides: object) -> TrainConfig:
    return TrainConfig(**{"env": "Pendulum-v1", "out": str(out), **TINY, **overrides})  # type: ignore[arg-type]


def _assert_same_state(a: dict, b: dict, path: str = "") -> None:
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("split_at", [400, 600], ids=["between-evaluations", "at-an-evaluation"])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, split_at: int) -> None:
    """Pendulum-v1 episodes are 200 steps, so a run stopped at step 400 or 600 stops at an episode boundary.
    600 is also an evaluation step: the resumed run must not evaluate again at 601."""
    common = dict(steps=700, eval_every=300, checkpoint_every=250, log_every=100)
    train(_config(tmp_path / "straight", **common))
    train(_config(tmp_path / "split", **{**common, "steps": split_at}))
    summary = train(_config(tmp_path / "split", **common, resume=True))
    assert summary["step"] == 700

    straight = load_checkpoint(tmp_path / "straight")
    split = load_checkpoint(tmp_path / "split")
    _assert_same_state(straight["learner"], split["learner"])
    _assert_same_state(straight["rng"], split["rng"])
    for key in ("step", "episodes", "next_eval", "next_checkpoint"):
        assert straight["loop"][key] == split["loop"][key], key
    replays = []
    for run in ("straight", "split"):
        buf = ReplayBuffer(1000, 3, 1)
        buf.load(tmp_path / run / "checkpoints" / f"replay-{700}.npz")
        replays.append(buf.state_dict())
    for key in ("observations", "actions", "rewards", "terminated", "episode_ids", "log_probs"):
        np.testing.assert_array_equal(replays[0][key], replays[1][key])
    # metrics.csv of the resumed run has every logged step once
    with (tmp_path / "split" / "metrics.csv").open() as fh:
        steps = [int(row["step"]) for row in csv.DictReader(fh) if row["loss/critic"]]
    assert steps == sorted(set(steps)) and steps[-1] == 700
    evaluated = []
    for run in ("straight", "split"):
        with (tmp_path / run / "metrics.csv").open() as fh:
            evaluated.append([int(row["step"]) for row in csv.DictReader(fh) if row.get("eval/return")])
    assert evaluated[0] == [300, 600, 700]
    assert evaluated[1] == sorted({*evaluated[0], split_at})


def test_run_directory_checkpoint_and_policy(tmp_path) -> None:
    out = tmp_path / "run"
    summary = train(_config(out, env="InvertedPendulum-v5", steps=300, eval_every=150, log_every=100))
    assert summary["step"] == 300 and "eval/return" in summary
    for name in ("config.yaml", "metrics.csv", "learning_curve.png", "checkpoints/latest.pt"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert [p.name for p in (out / "checkpoints").glob("replay-*.npz")] == ["replay-300.npz"]
    assert checkpoint_path_for(out) == out / "checkpoints" / "latest.pt"

    policy, meta = load_policy(out)
    assert (meta["obs_dim"], meta["act_dim"], meta["env_id"], meta["step"]) == (
        4,
        1,
        "InvertedPendulum-v5",
        300,
    )
    assert meta["robot_spec_json"] is None and meta["eval/return"] == summary["eval/return"]
    assert meta["config"]["policy_hidden"] == [16, 16]
    obs = torch.randn(5, 4) * 100
    action = policy(obs)
    assert action.shape == (5, 1) and action.abs().max() <= 1.0 and not action.requires_grad
    # The export engineer's path: TorchScript-free ONNX export of the whole obs -> action module.
    onnxruntime = pytest.importorskip("onnxruntime")
    buffer = io.BytesIO()
    torch.onnx.export(policy, (torch.zeros(1, 4),), buffer, dynamo=False, input_names=["obs"],
                      output_names=["action"], dynamic_axes={"obs": {0: "batch"}})  # fmt: skip
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (onnx_action,) = session.run(None, {"obs": obs.numpy()})
    np.testing.assert_allclose(onnx_action, action.numpy(), atol=1e-5)


def test_existing_run_needs_resume_and_resume_needs_a_checkpoint(tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(CheckpointError, match="does not exist"):
        train(_config(out, steps=50, resume=True))
    train(_config(out, steps=50, warmup_steps=50, updates_per_step=0))
    with pytest.raises(ConfigError, match="--resume"):
        train(_config(out, steps=60))


def test_cli_train_with_yaml_config_and_flags(tmp_path) -> None:
    config_file = tmp_path / "c.yaml"
    config_file.write_text("env: InvertedPendulum-v5\nsteps: 10000\nbatch_size: 8\nnum_samples: 3\n")
    out = tmp_path / "cli"
    argv = ["train", "--config", str(config_file), "--steps", "120", "--out", str(out), "--warmup-steps", "100",
            "--policy-hidden", "8", "--critic-hidden", "8", "--eval-episodes", "1", "--progress", "false",
            "--retrace", "--target-update", "hard", "--threads", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    _, meta = load_policy(out)
    assert meta["step"] == 120
    assert meta["config"]["batch_size"] == 8 and meta["config"]["retrace"] is True


def test_trains_on_a_contract_env_and_stores_its_robot_spec(tmp_path) -> None:
    pytest.importorskip("mpo_ros_sim")
    out = tmp_path / "arm"
    train(_config(out, env="mpo_ros_sim:Arm2Reach-v0", steps=150, max_episode_steps=50, warmup_steps=100))
    _, meta = load_policy(out)
    spec = json.loads(meta["robot_spec_json"])
    assert isinstance(spec, dict) and spec
    assert meta["eval/success_rate"] is not None


def test_cli_trains_with_the_categorical_critic_and_logs_its_edge_mass(tmp_path, caplog) -> None:
    out = tmp_path / "dmpo"
    argv = ["train", "--env", "InvertedPendulum-v5", "--steps", "150", "--out", str(out), "--warmup-steps", "100",
            "--policy-hidden", "8", "--critic-hidden", "8", "--batch-size", "8", "--num-samples", "3",
            "--eval-episodes", "1", "--log-every", "50", "--progress", "false", "--threads", "1",
            "--critic-type", "categorical", "--critic-atoms", "21", "--critic-vmin", "0", "--critic-vmax", "100"]  # fmt: skip
    assert cli.main(argv) == 0
    _, meta = load_policy(out)
    assert meta["config"]["critic_type"] == "categorical" and meta["config"]["critic_vmax"] == 100.0
    with (out / "metrics.csv").open() as fh:
        edge = [float(row["q/target_edge_mass"]) for row in csv.DictReader(fh) if row["q/target_edge_mass"]]
    assert edge and all(0.0 <= v <= 1.0 for v in edge)
    # Resuming without the critic flags takes the run's own (categorical) critic ...
    assert cli.main(["train", "--out", str(out), "--steps", "200", "--resume", "--progress", "false"]) == 0
    _, meta = load_policy(out)
    assert meta["step"] == 200 and meta["config"]["critic_type"] == "categorical"
    # ... and asking for another one would reinterpret the logits: refused, naming the option.
    assert (
        cli.main(["train", "--out", str(out), "--steps", "250", "--resume", "--critic-type", "scalar"]) == 2
    )
    assert "critic_type: run 'categorical', now 'scalar'" in caplog.text
