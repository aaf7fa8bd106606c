"""The ABM prior's maths: advantages, weights, the weighted likelihood, and its effect in the learner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mpo_ros.errors import ConfigError
from mpo_ros.mpo.abm import ABMConfig, ABMPrior, abm_weights, advantages, prior_loss
from mpo_ros.mpo.learner import MPOConfig, MPOLearner
from mpo_ros.mpo.networks import GaussianParams
from mpo_ros.training.replay import ReplayBuffer

torch.set_num_threads(1)


def test_advantage_is_q_minus_the_policy_value():
    q_data = torch.tensor([1.0, 0.0, -2.0])
    q_policy = torch.tensor([[0.0, 1.0, -1.0], [2.0, -1.0, -3.0]])  # [N=2, B=3]
    assert torch.allclose(advantages(q_data, q_policy), torch.tensor([0.0, 0.0, 0.0]))
    assert torch.allclose(advantages(q_data + 1, q_policy), torch.ones(3))


def test_binary_weights_are_the_unit_step_including_zero():
    adv = torch.tensor([-1.0, -1e-6, 0.0, 3.0])
    assert abm_weights(adv, "binary").tolist() == [0.0, 0.0, 1.0, 1.0]


def test_exponential_weights_are_capped_without_overflow():
    adv = torch.tensor([-2.0, 0.0, 1.0, 1e6])
    w = abm_weights(adv, "exp", temperature=0.5, max_weight=20.0)
    assert w[:3].tolist() == pytest.approx([math.exp(-4.0), 1.0, math.exp(2.0)], rel=1e-6)
    assert w[3].item() == pytest.approx(20.0) and torch.isfinite(w).all()
    with pytest.raises(ValueError):
        abm_weights(adv, "softmax")


def test_prior_loss_is_the_weighted_gaussian_negative_log_likelihood():
    mean = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    scale = torch.tensor([[1.0, 2.0], [0.5, 0.5]])
    actions = torch.tensor([[0.5, -1.0], [1.0, 0.0]])
    weights = torch.tensor([1.0, 3.0])
    normal = torch.distributions.Normal(mean, scale)
    nll = -normal.log_prob(actions).sum(-1)
    expected = (weights * nll).sum() / weights.sum()
    assert prior_loss(GaussianParams(mean, scale), actions, weights).item() == pytest.approx(
        expected.item(), rel=1e-6
    )
    # No winner in the batch: a zero loss, not a division by zero.
    assert prior_loss(GaussianParams(mean, scale), actions, torch.zeros(2)).item() == 0.0


def test_weighted_likelihood_moves_the_prior_to_the_winning_actions():
    """Minimising the loss fits the mean of the actions with positive weight only."""
    torch.manual_seed(0)
    actions = torch.cat([torch.full((50, 1), 0.6), torch.full((50, 1), -0.6)])
    weights = torch.cat([torch.ones(50), torch.zeros(50)])
    mean = torch.zeros(1, requires_grad=True)
    log_scale = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([mean, log_scale], lr=0.05)
    for _ in range(400):
        dist = GaussianParams(mean.expand(100, 1), log_scale.exp().expand(100, 1))
        loss = prior_loss(dist, actions, weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert mean.item() == pytest.approx(0.6, abs=0.02)
    assert log_scale.exp().item() < 0.05


def test_config_checks_name_the_bad_values():
    with pytest.raises(ConfigError, match="abm_weighting"):
        ABMConfig(abm_weighting="median")
    with pytest.raises(ConfigError, match="abm_temperature"):
        ABMConfig(abm_temperature=0.0)
    assert ABMConfig.from_any({"abm_weighting": "exp", "unrelated": 1}).abm_weighting == "exp"


class _SumOfActions(torch.nn.Module):
    """Q(s, a) = a_1 + ... + a_D: a critic whose ABM weights have a closed form."""

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return actions.sum(-1)


def test_prior_recovers_the_mean_of_the_actions_that_beat_the_policy():
    """Known truth: data actions uniform on [-1, 1]^2, Q = a_1 + a_2, the policy N(0, 0.3^2) has value ~0, so
    the binary weights keep the half of the data with a_1 + a_2 >= 0 (weight mean 1/2), whose mean per
    dimension is E[a_1 | a_1 + a_2 >= 0] = 1/3 (the sum of two U(-1, 1) has a triangular density; the mean of
    its positive half is 2/3, shared by the two dimensions). The prior must move from 0 to 1/3."""
    torch.manual_seed(0)
    config = MPOConfig(policy_hidden=[32], critic_hidden=[32], normalize_observations=False)
    learner = MPOLearner(1, 2, config)
    learner.target_critic = _SumOfActions()
    prior = ABMPrior(learner, ABMConfig(abm_lr=1e-3)).attach()
    assert learner.prior is prior.network
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(2000, 1, 2, seed=0)
    replay.add_episode(np.zeros((2001, 1)), rng.uniform(-1, 1, (2000, 2)), np.zeros(2000), terminated=False)
    weight_means, prior_means = [], []
    for step in range(600):
        stats = prior.update(replay.sample(256, 1))
        weight_means.append(stats["abm/weight_mean"].item())
        if step >= 300:  # average the iterates: minibatch noise moves the mean by ~0.05 per step
            prior_means.append(prior.network(torch.zeros(1, 1)).mean.detach())
    assert np.mean(weight_means) == pytest.approx(0.5, abs=0.02)
    mean = torch.cat(prior_means).mean(0)
    torch.testing.assert_close(mean, torch.full((2,), 1 / 3), rtol=0, atol=0.03)
    other = ABMPrior(learner)
    other.load_state_dict(prior.state_dict())
    assert torch.equal(other.network(torch.zeros(1, 1)).mean, prior.network(torch.zeros(1, 1)).mean)
