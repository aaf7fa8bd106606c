"""`mpo-ros eval` on real policies: a checkpoint from a short real training run and its ONNX export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from mpo_ros.errors import ConfigError, ContractError  # noqa: E402
from mpo_ros.training.evaluate import evaluate_policy, load_eval_policy  # noqa: E402

ARM2 = "mpo_ros_sim:Arm2Reach-v0"


@pytest.fixture(scope="module")
def arm2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (barely trained) arm2 checkpoint: a few hundred steps, small networks."""
    from mpo_ros.training.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "arm2"
    config = TrainConfig(
        env=ARM2,
        steps=300,
        warmup_steps=200,
        batch_size=32,
        eval_every=0,
        eval_episodes=1,
        checkpoint_every=10_000,
        policy_hidden=[32, 32],
        critic_hidden=[32, 32],
        num_samples=4,
        threads=1,
        progress=False,
        out=str(out),
    )
    train(config)
    return out


def test_checkpoint_policy_knows_its_robot(arm2_run: Path) -> None:
    policy = load_eval_policy(arm2_run, "cpu")
    assert policy.robot_spec is not None and policy.robot_spec.name == "arm2"
    assert (policy.obs_dim, policy.act_dim) == (8, 2)
    action = policy(np.zeros(8, dtype=np.float32))
    assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)


def test_evaluation_is_deterministic_and_complete(arm2_run: Path) -> None:
    policy = load_eval_policy(arm2_run / "checkpoints" / "latest.pt", "cpu")
    first = evaluate_policy(policy, ARM2, episodes=3, randomize="heldout", seed=10)
    again = evaluate_policy(policy, ARM2, episodes=3, randomize="heldout", seed=10)
    assert first.returns == again.returns
    assert first.lengths == [policy.robot_spec.episode_steps] * 3
    assert first.successes is not None and first.final_distances is not None
    summary = first.summary()
    assert summary["return_mean"] == pytest.approx(np.mean(first.returns))
    assert summary["action_smoothness_mean"] >= 0.0
    other = evaluate_policy(policy, ARM2, episodes=3, randomize="heldout", seed=11)
    assert other.returns != first.returns


def test_onnx_export_evaluates_like_its_checkpoint(arm2_run: Path, tmp_path: Path) -> None:
    from mpo_ros.training.export import export_checkpoint

    onnx_path = tmp_path / "policy.onnx"
    export_checkpoint(arm2_run, onnx_path, parity_count=1000)
    from_onnx = load_eval_policy(onnx_path, "cpu")
    from_checkpoint = load_eval_policy(arm2_run, "cpu")
    assert from_onnx.robot_spec == from_checkpoint.robot_spec
    a = evaluate_policy(from_onnx, ARM2, episodes=2, seed=0)
    b = evaluate_policy(from_checkpoint, ARM2, episodes=2, seed=0)
    np.testing.assert_allclose(a.returns, b.returns, rtol=1e-3)


def test_cli_writes_table_json_and_video(arm2_run: Path, tmp_path: Path) -> None:
    report, video = tmp_path / "eval.json", tmp_path / "eval.mp4"
    completed = subprocess.run(
        [sys.executable, "-m", "mpo_ros.cli", "eval", "--policy", str(arm2_run), "--episodes", "2",
         "--randomize", "train", "--json", str(report), "--video", str(video)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "MUJOCO_GL": "osmesa"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    # The env is built from the policy's own contract (not looked up by robot name).
    assert "success rate" in completed.stdout and "mpo_ros_sim:Reach-v0" in completed.stdout
    data = json.loads(report.read_text())
    assert data["env"] == "mpo_ros_sim:Reach-v0" and data["randomize"] == "train" and data["episodes"] == 2
    assert len(data["per_episode"]["return"]) == 2
    assert data["return_mean"] == pytest.approx(np.mean(data["per_episode"]["return"]))
    assert video.is_file() and video.stat().st_size > 1000


def test_wrong_env_and_bad_options_are_refused(arm2_run: Path) -> None:
    policy = load_eval_policy(arm2_run, "cpu")
    with pytest.raises(ContractError, match="pass the --env it was trained on"):
        evaluate_policy(policy, "mpo_ros_sim:Arm6Reach-v0", episodes=1)
    with pytest.raises(ConfigError, match="needs a robot env"):
        evaluate_policy(policy, "Pendulum-v1", episodes=1, randomize="train")
    completed = subprocess.run(
        [sys.executable, "-m", "mpo_ros.cli", "eval", "--policy", str(arm2_run / "nope.pt")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2 and "no checkpoint" in completed.stderr


def test_plain_gym_env_actions_are_rescaled() -> None:
    seen: list[np.ndarray] = []

    def full_torque(observation: np.ndarray) -> np.ndarray:
        seen.append(observation)
        return np.ones(1)

    result = evaluate_policy(full_torque, "Pendulum-v1", episodes=1, seed=0)
    assert result.successes is None and result.final_distances is None
    assert result.lengths == [200] and result.smoothness == [0.0]
    # Pendulum's torque bound is 2: a policy output of 1 must arrive as +2 (it spins the pendulum up).
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    total = sum(env.step(np.array([2.0], dtype=np.float32))[1] for _ in range(200))
    env.close()
    assert result.returns[0] == pytest.approx(total, rel=1e-5)


def test_command_figures_against_closed_forms(tmp_path: Path) -> None:
    """A still policy sends one constant command; a policy flipping between +-1 pins every command change
    at the slew limit (max_delta 0.2 rad, a 0.26-0.31 rad jump per flip for arm2's action scales)."""
    still = evaluate_policy(lambda obs: np.zeros(2), ARM2, episodes=2, seed=0)
    summary = still.summary()
    assert summary["command_rate_mean"] == 0.0 and summary["slew_limited_fraction_mean"] == 0.0
    assert summary["high_frequency_share_mean"] == 0.0
    flips = iter(np.tile([1.0, -1.0], 1000))
    chatter = evaluate_policy(lambda obs: np.full(2, next(flips)), ARM2, episodes=2, seed=0)
    figures = chatter.summary()
    assert figures["slew_limited_fraction_mean"] > 0.95 and figures["command_rate_mean"] == pytest.approx(
        0.2, abs=0.01
    )
    # Nyquist chatter, less the genuine low-frequency part: the first steps slew from the default pose to
    # the chatter's centre (with the end-point line removed, ~86 % above 5 Hz; a smooth reach is < 15 %).
    assert figures["high_frequency_share_mean"] > 0.8
    from mpo_ros.training.evaluate import plot_commands

    path = plot_commands(chatter, tmp_path / "commands.png", ["shoulder", "elbow"], 50.0)
    assert path.stat().st_size > 10_000
    assert np.array(chatter.first_commands).shape == (76, 2)  # reset + 75 steps
