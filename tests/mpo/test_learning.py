"""MPO learns: InvertedPendulum-v5 to >= 950 evaluation return (deterministic policy) in 16k steps.

About 2-3 minutes on one CPU core. Small networks and batch keep it inside that budget; every other option
is the default, so this is the check that the losses, targets and loop fit together.
"""

from __future__ import annotations

import pytest
import torch

from mpo_ros.training.loop import TrainConfig, train


@pytest.mark.slow
def test_mpo_solves_inverted_pendulum(tmp_path) -> None:
    torch.set_num_threads(1)
    config = TrainConfig(
        env="InvertedPendulum-v5",
        steps=16_000,
        seed=0,
        out=str(tmp_path / "ip"),
        warmup_steps=1_000,
        batch_size=64,
        policy_hidden=[64, 64],
        critic_hidden=[64, 64],
        eval_every=4_000,
        eval_episodes=5,
        checkpoint_every=0,
        progress=False,
        threads=1,
    )
    summary = train(config)
    assert summary["eval/return"] >= 950, summary
