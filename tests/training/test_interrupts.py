"""Stopping a run on purpose: SIGINT/SIGTERM end it at an iteration boundary with a consistent checkpoint,
and a run folder has one writer at a time.

Consistent means: the checkpoint's learner has done exactly the updates its step count calls for, and the
replay holds exactly its steps, so no half update (actor step without critic step, a transition without
its step count) can hide in it.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mpo_ros.errors import ConfigError
from mpo_ros.training.loop import TrainConfig, train
from mpo_ros.training.replay import ReplayBuffer
from mpo_ros.training.state import load_checkpoint

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
WARMUP = 50


def _command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "mpo_ros.cli", "train", "--env", "Pendulum-v1", "--steps", "100000",
        "--warmup-steps", str(WARMUP), "--out", str(out), "--policy-hidden", "16", "--critic-hidden", "16",
        "--batch-size", "16", "--num-samples", "4", "--eval-every", "0", "--eval-episodes", "1",
        "--log-every", "20", "--checkpoint-every", "0", "--progress", "false", "--threads", "1", *extra,
    ]  # fmt: skip


def _rows(out: Path) -> int:
    path = out / "metrics.csv"
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.timeout(180)
def test_a_signal_stops_the_run_with_a_consistent_checkpoint(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "run"
    log_path = tmp_path / "train.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(_command(out), stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            deadline = time.monotonic() + 120
            while _rows(out) < 6 and time.monotonic() < deadline:  # past warm-up: updates are running
                time.sleep(0.1)
            # A second writer on the same folder is refused while the first runs.
            second = subprocess.run(
                _command(out, "--resume"), capture_output=True, text=True, timeout=120, cwd=REPO
            )
            assert second.returncode == 2 and "is being written by process" in second.stderr, second.stderr
            process.send_signal(signum)
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert code == 128 + signum, log_path.read_text()[-2000:]
    assert f"{signal.Signals(signum).name}: stopped at step" in log_path.read_text()
    checkpoint = load_checkpoint(out)
    step, updates = checkpoint["metadata"]["step"], checkpoint["metadata"]["updates"]
    assert step > WARMUP and updates == step - WARMUP + 1
    learner = checkpoint["learner"]
    replay = ReplayBuffer(100_000, int(learner["obs_dim"]), int(learner["act_dim"]))
    replay.load(out / "checkpoints" / checkpoint["replay_file"])
    assert len(replay) == step
    assert not (out / ".lock").exists()
    # The run continues from there.
    config = TrainConfig(
        env="Pendulum-v1", steps=step + 30, warmup_steps=WARMUP, out=str(out), policy_hidden=[16],
        critic_hidden=[16], batch_size=16, num_samples=4, eval_every=0, eval_episodes=1, log_every=20,
        checkpoint_every=0, progress=False, threads=1, resume=True,
    )  # fmt: skip
    assert train(config)["updates"] == step + 30 - WARMUP + 1


def test_a_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    (out / ".lock").write_text(f"{dead.pid} {socket.gethostname()}")
    config = TrainConfig(
        env="Pendulum-v1", steps=20, warmup_steps=10, out=str(out), policy_hidden=[8], critic_hidden=[8],
        batch_size=8, num_samples=2, eval_every=0, eval_episodes=1, progress=False, threads=1,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        train(config)
    assert f"taking over the lock of process {dead.pid}" in caplog.text
    assert not (out / ".lock").exists()
    # A lock held by a live process (this one, pretending to be another writer) is refused.
    (out / ".lock").write_text(f"1 {socket.gethostname()}")  # pid 1 always runs
    with pytest.raises(ConfigError, match="is being written by process 1"):
        train(TrainConfig(**{**config.__dict__, "resume": True, "steps": 30}))
