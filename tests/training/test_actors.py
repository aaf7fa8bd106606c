"""`mpo-ros train --actors N`: real Ray actors on a local Ray (num_cpus=2, no dashboard).

Checked: the update:step ratio is the config's whatever N is; both actors' experience reaches the replay
without n-step sequences crossing from one actor's episode into another's; an actor killed with SIGKILL is
restarted by Ray and the run finishes, counting the restart; a distributed run resumes learner + replay.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mpo_ros.training.loop import TrainConfig, train
from mpo_ros.training.replay import ReplayBuffer
from mpo_ros.training.state import load_checkpoint

pytest.importorskip("ray")
torch.set_num_threads(1)
# One local Ray at a time: with `pytest -n 2` these run in the same worker, one after the other.
pytestmark = pytest.mark.xdist_group("ray")
REPO = Path(__file__).resolve().parents[2]
TINY = dict(
    env="mpo_ros_sim:Arm2Reach-v0", policy_hidden=[16], critic_hidden=[16], batch_size=16, num_samples=4,
    eval_episodes=1, progress=False, threads=1, actors=2, actor_chunk_steps=25, actor_sync_every=20,
)  # fmt: skip


def _replay(run: Path) -> ReplayBuffer:
    checkpoint = load_checkpoint(run)
    learner = checkpoint["learner"]
    replay = ReplayBuffer(10_000, int(learner["obs_dim"]), int(learner["act_dim"]))
    replay.load(run / "checkpoints" / checkpoint["replay_file"])
    return replay


@pytest.mark.slow
def test_two_actors_hold_the_ratio_and_resume(tmp_path: Path, local_ray) -> None:
    """400 steps from two actors, then --resume to 600: exactly updates_per_step per step past warm-up."""
    out = tmp_path / "run"
    common = dict(TINY, out=str(out), warmup_steps=100, eval_every=0, log_every=100, checkpoint_every=0)
    first = train(TrainConfig(**common, steps=400, updates_per_step=2))  # type: ignore[arg-type]
    assert first["step"] == 400 and first["updates"] == 2 * (400 - 100 + 1)
    assert (
        first["actor_restarts"] == 0 and first["episodes"] >= 400 // 75 - 2
    )  # 75-step episodes; each actor may end one unfinished

    replay = _replay(out)
    assert len(replay) == 400
    ids = replay.episode_ids[:400]
    # Two actors, 25-step chunks: each chunk is one contiguous run of one episode id, and no episode id
    # covers more than 75 steps (one arm2 episode), so no sequence joins two actors' episodes.
    _, counts = np.unique(ids, return_counts=True)
    assert counts.max() <= 75 and len(counts) > 400 // 75
    batch = replay.sample(512, 5)
    rows = np.arange(512)[:, None]
    assert np.all(batch.mask[rows, 1:] <= batch.mask[rows, :-1])
    assert np.all(np.isfinite(replay.log_probs[:400]))  # the actors' behaviour log-densities are stored

    header = next(csv.reader((out / "metrics.csv").open()))
    assert {"actors/restarts", "actors/policy_lag"} <= set(header)

    resumed = train(TrainConfig(**common, steps=600, updates_per_step=2, resume=True))  # type: ignore[arg-type]
    assert resumed["step"] == 600 and resumed["updates"] == 2 * (600 - 100 + 1)
    assert len(_replay(out)) == 600  # the first 400 transitions came back from the checkpoint


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_actor_is_replaced_and_the_run_finishes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "mpo_ros.cli", "train", "--env", "mpo_ros_sim:Arm2Reach-v0", "--actors", "2",
        "--steps", "800", "--warmup-steps", "100", "--out", str(out), "--policy-hidden", "16",
        "--critic-hidden", "16", "--batch-size", "16", "--num-samples", "4", "--eval-every", "0",
        "--eval-episodes", "1", "--log-every", "100", "--progress", "false", "--threads", "1",
        "--actor-chunk-steps", "25",
    ]  # fmt: skip
    log_path = tmp_path / "train.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            pid = _wait_for(lambda: re.search(r"actor 0: pid (\d+)", log_path.read_text()), 120)
            _wait_for(
                lambda: (
                    (out / "metrics.csv").is_file()
                    and len((out / "metrics.csv").read_text().splitlines()) > 3
                ),
                120,
            )
            os.kill(int(pid.group(1)), signal.SIGKILL)
            assert process.wait(timeout=240) == 0, log_path.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()
    text = log_path.read_text()
    assert re.search(r"actor 0 died \(\w+\); Ray restarts it", text), text[-3000:]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    restarts = [float(r["actors/restarts"]) for r in rows if r.get("actors/restarts")]
    assert restarts[-1] >= 1.0
    meta = load_checkpoint(out)["metadata"]
    assert meta["step"] == 800 and meta["updates"] == 800 - 100 + 1


def _wait_for(condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout} s")
