"""Shared test data for the learner tests: a small replay of random episodes of mixed endings."""

from __future__ import annotations

import numpy as np
import torch

from mpo_ros.mpo.learner import MPOConfig, MPOLearner
from mpo_ros.training.replay import ReplayBuffer


def random_replay(obs_dim: int, act_dim: int, seed: int = 0, episodes: int = 8) -> ReplayBuffer:
    """Random episodes of 3-29 steps; every other one ends in a true terminal (the rest are truncated),
    actions overshoot [-1, 1] (the penalty objective must see them), and a third lack behaviour
    log-probabilities (Retrace must cope with unknown densities)."""
    rng = np.random.default_rng(seed)
    replay = ReplayBuffer(500, obs_dim, act_dim, seed=seed)
    for episode in range(episodes):
        steps = int(rng.integers(3, 30))
        replay.add_episode(
            rng.normal(size=(steps + 1, obs_dim)),
            rng.uniform(-1.5, 1.5, size=(steps, act_dim)),
            rng.normal(size=steps),
            terminated=episode % 2 == 0,
            log_probs=rng.normal(size=steps) if episode % 3 else None,
        )
    return replay


def seeded_learner(obs_dim: int, act_dim: int, **config: object) -> MPOLearner:
    """A learner built under torch seed 0 whose normaliser has seen 100 random observations."""
    torch.manual_seed(0)
    learner = MPOLearner(obs_dim, act_dim, MPOConfig(**config))  # type: ignore[arg-type]
    learner.observe(np.random.default_rng(1).normal(size=(100, obs_dim)))
    return learner
