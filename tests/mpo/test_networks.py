from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mpo_ros.mpo.networks import Critic, GaussianPolicy, ObservationNormalizer, make_torso

torch.set_num_threads(1)


@pytest.mark.parametrize("torso", ["layernorm", "relu"])
def test_diag_policy_starts_at_init_scale_and_respects_min_scale(torso: str) -> None:
    torch.manual_seed(0)
    policy = GaussianPolicy(5, 3, hidden=[32, 32], torso=torso, init_scale=0.3, min_scale=1e-3)
    dist = policy(torch.randn(10, 5))
    assert dist.mean.shape == (10, 3) and dist.scale.shape == (10, 3)
    # Small head init (weights ~ sqrt(1e-4 / fan_in)): pre-activations ~ 0.01 * rms(torso output), so the
    # first policy barely depends on the state: stddev within 2 % of init_scale, |mean| well under 0.1.
    torch.testing.assert_close(dist.scale, torch.full((10, 3), 0.3 + 1e-3), atol=0.006, rtol=0)
    assert dist.mean.abs().max() < 0.05
    with torch.no_grad():
        policy.scale_head.bias.fill_(-50.0)
    assert policy(torch.randn(4, 5)).scale.min() >= 1e-3


def test_full_covariance_policy_outputs_a_valid_cholesky_factor() -> None:
    torch.manual_seed(0)
    policy = GaussianPolicy(4, 3, hidden=[16], full_covariance=True)
    with torch.no_grad():
        policy.offdiag_head.bias.normal_()
    dist = policy(torch.randn(6, 4))
    assert dist.full_covariance and dist.scale.shape == (6, 3, 3)
    assert torch.equal(dist.scale, dist.scale.tril())
    assert (dist.scale.diagonal(dim1=-2, dim2=-1) > 0).all()
    assert (dist.scale.tril(-1) != 0).any()
    assert dist.stddev().shape == (6, 3)


def test_deterministic_action_is_clamped_mean() -> None:
    policy = GaussianPolicy(2, 2, hidden=[8])
    with torch.no_grad():
        policy.mean_head.weight.zero_()
        policy.mean_head.bias.copy_(torch.tensor([3.0, -0.25]))
    action = policy.deterministic(torch.zeros(1, 2))
    torch.testing.assert_close(action, torch.tensor([[1.0, -0.25]]), atol=1e-3, rtol=0)


def test_critic_values_out_of_bound_actions_as_their_clipped_version() -> None:
    critic = Critic(3, 2, hidden=[16])
    obs = torch.randn(5, 3)
    torch.testing.assert_close(critic(obs, torch.full((5, 2), 4.0)), critic(obs, torch.ones(5, 2)))
    assert critic(obs.expand(7, 5, 3), torch.zeros(7, 5, 2)).shape == (7, 5)


def test_normalizer_running_moments_match_numpy_and_live_in_state_dict() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(500, 4)).astype(np.float32)
    norm = ObservationNormalizer(4)
    for chunk in np.array_split(data, 7):
        norm.update(torch.from_numpy(chunk))
    norm.update(torch.from_numpy(data[0]))  # a single observation
    full = np.concatenate([data, data[:1]])
    np.testing.assert_allclose(norm.mean.numpy(), full.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.var.numpy(), full.var(0), rtol=1e-5)
    assert {"mean", "var", "count"} <= set(norm.state_dict())
    before = norm.state_dict()["count"].clone()
    out = norm(torch.from_numpy(data))  # forward never changes the statistics
    assert norm.count == before
    assert abs(out.mean().item()) < 0.05 and out.abs().max() <= norm.clip


def test_make_torso_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown torso"):
        make_torso("tanh", 3, [8])


@pytest.mark.parametrize("torso", ["layernorm", "relu"])
def test_critic_sampled_matches_the_expanded_forward(torso: str) -> None:
    critic = Critic(4, 3, hidden=[16, 16], torso=torso)
    obs, actions = torch.randn(6, 4), torch.randn(5, 6, 3) * 1.5
    torch.testing.assert_close(critic.sampled(obs, actions), critic(obs.expand(5, 6, 4), actions))


@pytest.mark.parametrize("width", [64, 256])
def test_policy_heads_start_as_acme_variance_scaling_1e_4(width: int) -> None:
    """Acme's MultivariateNormalDiagHead initialises both heads with haiku VarianceScaling(1e-4): fan-in mode,
    a normal truncated at two of its standard deviations and rescaled (by 1 / 0.8796, the stddev of a unit
    normal truncated to [-2, 2]) so that the weights' standard deviation after truncation is
    sqrt(1e-4 / fan_in). Biases start at zero."""
    torch.manual_seed(0)
    policy = GaussianPolicy(3, 40, hidden=[width], full_covariance=True, torso="relu")
    target_std = math.sqrt(1e-4 / width)
    pre_truncation_std = target_std / 0.87962566103423978
    for head in (policy.mean_head, policy.scale_head, policy.offdiag_head):
        weight = head.weight.detach()
        samples = weight.numel()
        # the sample stddev of n draws has relative standard error ~ 1 / sqrt(2 n); allow 5 of them
        assert weight.std().item() == pytest.approx(target_std, rel=5 / math.sqrt(2 * samples))
        assert weight.abs().max().item() <= 2 * pre_truncation_std
        assert weight.abs().max().item() > 1.9 * pre_truncation_std  # the tails reach the truncation
        assert torch.equal(head.bias, torch.zeros_like(head.bias))
