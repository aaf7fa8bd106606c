"""CAPS smoothness terms (Mysore et al., ICRA 2021) in the M-step: closed forms, where the gradient goes,
zero weight changes nothing, and a large weight makes the policy smoother between consecutive states."""

from __future__ import annotations

import pytest
import torch
from mpo_fixtures import random_replay, seeded_learner

from mpo_ros.errors import ConfigError
from mpo_ros.mpo import losses
from mpo_ros.mpo.learner import MPOConfig

torch.set_num_threads(1)
OBS, ACT = 5, 2
SMALL = dict(policy_hidden=[16], critic_hidden=[16], num_samples=4)


def test_the_loss_is_the_weighted_mean_l2_distance() -> None:
    mean = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    shifted = mean + torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # distances 5 and 0
    perturbed = mean + torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # distances 1 and 1
    loss, stats = losses.smoothness_loss(mean, shifted, perturbed, temporal_weight=0.5, spatial_weight=2.0)
    assert stats.temporal.item() == pytest.approx(2.5) and stats.spatial.item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(0.5 * 2.5 + 2.0 * 1.0)
    off, _ = losses.smoothness_loss(mean, None, None, 0.0, 0.0)
    assert off.item() == 0.0


def test_zero_weights_leave_the_update_unchanged_bit_for_bit() -> None:
    batch = random_replay(OBS, ACT).sample(32, 5)
    plain = seeded_learner(OBS, ACT, **SMALL)
    zero = seeded_learner(
        OBS, ACT, **SMALL, smoothness_temporal=0.0, smoothness_spatial=0.0, smoothness_sigma=0.3
    )
    torch.manual_seed(7)
    plain.update(batch)
    torch.manual_seed(7)
    zero.update(batch)
    for part in ("policy", "critic", "duals"):
        for name, tensor in plain.state_dict()[part].items():
            assert torch.equal(tensor, zero.state_dict()[part][name]), f"{part}/{name}"


def test_the_gradient_reaches_only_the_policy() -> None:
    learner = seeded_learner(OBS, ACT, **SMALL, smoothness_temporal=1.0, smoothness_spatial=1.0)
    batch = learner._to_device(random_replay(OBS, ACT).sample(32, 5))
    obs = learner.normalize(batch.observations[:, 0])
    loss, _ = learner._smoothness(obs, batch)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.policy.parameters())
    assert all(p.grad is None for p in learner.critic.parameters())
    assert all(p.grad is None for p in learner.duals.parameters())


def test_a_large_temporal_weight_makes_consecutive_actions_closer() -> None:
    replay = random_replay(OBS, ACT, episodes=20)
    probe = replay.sample(256, 1)

    def temporal_distance(**config: float) -> float:
        learner = seeded_learner(OBS, ACT, **SMALL, **config)
        torch.manual_seed(3)
        for _ in range(150):
            learner.update(replay.sample(32, 5))
        b = learner._to_device(probe)
        with torch.no_grad():
            mean = learner.policy(learner.normalize(b.observations[:, 0])).mean
            mean_next = learner.policy(learner.normalize(b.next_observations[:, 0])).mean
        return float((mean - mean_next).norm(dim=-1).mean())

    assert temporal_distance(smoothness_temporal=5.0) < 0.5 * temporal_distance()


def test_negative_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"smoothness_temporal=-1\.0 must be >= 0"):
        MPOConfig(smoothness_temporal=-1.0)
    with pytest.raises(ConfigError, match=r"smoothness_sigma=0\.0 must be > 0"):
        MPOConfig(smoothness_sigma=0.0)
