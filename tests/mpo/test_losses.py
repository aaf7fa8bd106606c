"""The MPO maths against closed forms and toy problems with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from mpo_ros.mpo import losses
from mpo_ros.mpo.networks import GaussianParams, GaussianPolicy

torch.set_num_threads(1)


def _random_chol(batch: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(batch, dim, dim, generator=gen, dtype=torch.float64)
    cov = a @ a.transpose(-1, -2) + 0.5 * torch.eye(dim, dtype=torch.float64)
    return torch.linalg.cholesky(cov)


def test_diag_kl_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(0)
    m_p, m_q = torch.randn(8, 3, generator=gen), torch.randn(8, 3, generator=gen)
    s_p, s_q = torch.rand(8, 3, generator=gen) + 0.1, torch.rand(8, 3, generator=gen) + 0.1
    expected = kl_divergence(Normal(m_p, s_p), Normal(m_q, s_q))
    torch.testing.assert_close(losses.gaussian_kl_diag(m_p, s_p, m_q, s_q), expected, rtol=1e-5, atol=1e-6)


def test_full_kl_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(1)
    m_p, m_q = torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    l_p, l_q = _random_chol(5, 4, gen), _random_chol(5, 4, gen)
    expected = kl_divergence(MultivariateNormal(m_p, scale_tril=l_p), MultivariateNormal(m_q, scale_tril=l_q))
    torch.testing.assert_close(losses.gaussian_kl_full(m_p, l_p, m_q, l_q), expected)


def test_decoupled_kl_parts_have_closed_forms() -> None:
    gen = torch.Generator().manual_seed(2)
    old = GaussianParams(torch.randn(6, 3, dtype=torch.float64), _random_chol(6, 3, gen))
    new = GaussianParams(torch.randn(6, 3, dtype=torch.float64), _random_chol(6, 3, gen))
    kl_mean, kl_cov = losses.decoupled_kl(old, new, per_dim=False)
    # Mean part: only the mean moved -> 0.5 * Mahalanobis distance under the OLD covariance.
    cov_old = old.scale @ old.scale.transpose(-1, -2)
    diff = (new.mean - old.mean).unsqueeze(-1)
    mahalanobis = (diff.transpose(-1, -2) @ torch.linalg.solve(cov_old, diff)).squeeze(-1).squeeze(-1)
    torch.testing.assert_close(kl_mean, 0.5 * mahalanobis)
    # Covariance part: 0.5 * (tr(S_new^-1 S_old) - D + log det S_new - log det S_old).
    cov_new = new.scale @ new.scale.transpose(-1, -2)
    trace = torch.linalg.solve(cov_new, cov_old).diagonal(dim1=-2, dim2=-1).sum(-1)
    expected = 0.5 * (trace - 3 + torch.logdet(cov_new) - torch.logdet(cov_old))
    torch.testing.assert_close(kl_cov, expected)

    diag_old = GaussianParams(old.mean, torch.rand(6, 3, dtype=torch.float64) + 0.2)
    diag_new = GaussianParams(new.mean, torch.rand(6, 3, dtype=torch.float64) + 0.2)
    per_dim_mean, per_dim_std = losses.decoupled_kl(diag_old, diag_new, per_dim=True)
    assert per_dim_mean.shape == (6, 3)
    torch.testing.assert_close(per_dim_mean, 0.5 * ((diag_new.mean - diag_old.mean) / diag_old.scale) ** 2)
    ratio = (diag_old.scale / diag_new.scale) ** 2
    torch.testing.assert_close(per_dim_std, 0.5 * (ratio - 1 - torch.log(ratio)))
    total_mean, _ = losses.decoupled_kl(diag_old, diag_new, per_dim=False)
    torch.testing.assert_close(total_mean, per_dim_mean.sum(-1))
    with pytest.raises(ValueError, match="per-dimension"):
        losses.decoupled_kl(old, new, per_dim=True)


def test_log_prob_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(3)
    mean, chol = torch.randn(4, 3, dtype=torch.float64), _random_chol(4, 3, gen)
    actions = torch.randn(7, 4, 3, dtype=torch.float64)
    expected = MultivariateNormal(mean, scale_tril=chol).log_prob(actions)
    torch.testing.assert_close(losses.log_prob(GaussianParams(mean, chol), actions), expected)
    std = torch.rand(4, 3, dtype=torch.float64) + 0.1
    expected = Normal(mean, std).log_prob(actions).sum(-1)
    torch.testing.assert_close(losses.log_prob(GaussianParams(mean, std), actions), expected)


def test_temperature_at_its_dual_optimum_gives_kl_epsilon() -> None:
    """Minimising the convex dual over eta makes KL(q || pi_old) of the sample-based q equal epsilon."""
    gen = torch.Generator().manual_seed(4)
    q_values = torch.randn(200, 32, generator=gen, dtype=torch.float64) * 3.0  # [N, B]
    epsilon = 0.1
    param = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([param], lr=0.05)
    for _ in range(1500):
        loss, _, _ = losses.temperature_loss(q_values, param, epsilon)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, weights, stats = losses.temperature_loss(q_values, param, epsilon)
    assert stats.kl_q_pi.item() == pytest.approx(epsilon, rel=0.05)
    torch.testing.assert_close(weights.sum(0), torch.ones(32, dtype=torch.float64))


def test_m_step_respects_kl_bounds_on_a_toy_problem() -> None:
    """Q rewards pushing every action dimension up; the policy improves but within its trust regions."""
    torch.manual_seed(0)
    dim, batch, eps_mean, eps_std = 2, 64, 0.02, 1e-3
    policy = GaussianPolicy(3, dim, hidden=[32], torso="relu", init_scale=0.5)
    obs = torch.randn(batch, 3)
    with torch.no_grad():
        old = policy(obs)
    log_alpha_mean = torch.full((dim,), 1.0, requires_grad=True)
    log_alpha_std = torch.full((dim,), 10.0, requires_grad=True)  # the default init (Tonic)
    log_temperature = torch.tensor(1.0, requires_grad=True)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    dual_opt = torch.optim.Adam([log_alpha_mean, log_alpha_std, log_temperature], lr=3e-2)
    for _ in range(400):
        actions = old.mean + old.scale * torch.randn(20, batch, dim)
        q_values = 10.0 * actions.sum(-1)
        loss_t, weights, _ = losses.temperature_loss(q_values, log_temperature, 0.1)
        new = policy(obs)
        loss_ce, _ = losses.weighted_cross_entropy(actions, weights, old, new)
        kl_mean, kl_std = losses.decoupled_kl(old, new, per_dim=True)
        pl_m, dl_m, _ = losses.trust_region_loss(kl_mean, log_alpha_mean, eps_mean)
        pl_s, dl_s, _ = losses.trust_region_loss(kl_std, log_alpha_std, eps_std)
        opt.zero_grad()
        dual_opt.zero_grad()
        (loss_ce + pl_m + pl_s + loss_t + dl_m + dl_s).backward()
        opt.step()
        dual_opt.step()
    with torch.no_grad():
        new = policy(obs)
        kl_mean, kl_std = losses.decoupled_kl(old, new, per_dim=True)
    per_dim_bound = eps_mean / dim
    assert (new.mean - old.mean).mean().item() > 0.5 * math.sqrt(2 * per_dim_bound) * 0.5  # it improved
    assert (kl_mean.mean(0) < 1.5 * per_dim_bound).all(), kl_mean.mean(0)
    assert (kl_std.mean(0) < 1.5 * eps_std / dim).all(), kl_std.mean(0)


def test_dual_losses_touch_only_duals_and_policy_losses_only_the_policy() -> None:
    torch.manual_seed(1)
    policy = GaussianPolicy(3, 2, hidden=[16], torso="layernorm")
    obs = torch.randn(8, 3)
    q_net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        old = policy(obs)
    actions = old.mean + old.scale * torch.randn(5, 8, 2)
    q_values = q_net(actions).squeeze(-1)  # carries a graph into q_net: the E-step must not use it
    log_t = torch.tensor(0.5, requires_grad=True)
    log_alpha = torch.zeros(2, requires_grad=True)

    loss_t, weights, _ = losses.temperature_loss(q_values, log_t, 0.1)
    assert not weights.requires_grad
    loss_t.backward()
    assert log_t.grad is not None and q_net.weight.grad is None

    new = policy(obs)
    kl_mean, _ = losses.decoupled_kl(old, new, per_dim=True)
    policy_part, dual_part, stats = losses.trust_region_loss(kl_mean, log_alpha, 0.01)
    dual_part.backward(retain_graph=True)
    assert log_alpha.grad is not None
    assert all(p.grad is None for p in policy.parameters())
    log_alpha.grad = None
    policy_part.backward()
    assert log_alpha.grad is None
    assert policy.mean_head.weight.grad is not None
    assert stats.alpha.shape == (2,) and stats.kl.shape == (2,)


def test_critic_loss_gives_no_policy_gradient() -> None:
    policy = GaussianPolicy(3, 2, hidden=[16])
    critic = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    obs = torch.randn(4, 3)
    target_actions = policy(obs).mean  # a target computed through the policy must not train it
    q = critic(torch.cat([obs, torch.zeros(4, 2)], -1)).squeeze(-1)
    loss, stats = losses.critic_loss(q, target_actions.sum(-1))
    loss.backward()
    assert all(p.grad is None for p in policy.parameters())
    assert critic[0].weight.grad is not None
    assert stats.q_min <= stats.q_mean <= stats.q_max


def test_action_penalty_is_zero_inside_bounds_and_the_distance_outside() -> None:
    actions = torch.tensor([[0.5, -0.9], [1.5, 0.0], [2.0, -3.0]])
    expected = torch.tensor([0.0, -0.5, -math.hypot(1.0, 2.0)])
    torch.testing.assert_close(losses.action_penalty(actions), expected)


def test_n_step_return_termination_truncation_and_short_episodes() -> None:
    gamma = 0.9
    rewards = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 0]])
    terminated = torch.tensor([[0.0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]])
    v = torch.tensor([10.0, 10.0, 10.0, 10.0])
    got = losses.n_step_return(rewards, mask, terminated, v, gamma)
    full = 1 + gamma * 2 + gamma**2 * 3
    expected = torch.tensor(
        [
            full + gamma**3 * 10,  # 3 steps, bootstrap
            full,  # terminal after the 3rd step: no bootstrap
            1 + gamma * 2,  # episode terminated after 2 steps
            1 + gamma * 2 + gamma**2 * 10,  # episode truncated after 2 steps: bootstrap from the last obs
        ]
    )
    torch.testing.assert_close(got, expected)


def test_retrace_reduces_to_closed_forms() -> None:
    gen = torch.Generator().manual_seed(5)
    gamma, batch, length = 0.95, 6, 4
    rewards = torch.randn(batch, length, generator=gen)
    mask = torch.ones(batch, length)
    mask[0, 2:] = 0
    terminated = torch.zeros(batch, length)
    terminated[1, 3] = 1.0
    q_taken = torch.randn(batch, length, generator=gen)
    next_values = torch.randn(batch, length, generator=gen)
    # lambda = 0: one-step expected-SARSA target.
    got = losses.retrace_targets(
        rewards, mask, terminated, q_taken, next_values, torch.zeros(batch, length), gamma, 0.0
    )
    torch.testing.assert_close(got, rewards[:, 0] + gamma * next_values[:, 0])
    # Full traces with V(s_{k+1}) == Q(s_{k+1}, a_{k+1}): the n-step return bootstrapped at the end.
    next_values = torch.cat([q_taken[:, 1:], torch.randn(batch, 1, generator=gen)], 1)
    next_values[0, 1] = 7.0  # the last valid step of sequence 0 bootstraps from here
    got = losses.retrace_targets(
        rewards, mask, terminated, q_taken, next_values, torch.zeros(batch, length), gamma, 1.0
    )
    last = (mask.sum(1).long() - 1).unsqueeze(1)
    expected = losses.n_step_return(rewards, mask, terminated, next_values.gather(1, last).squeeze(1), gamma)
    torch.testing.assert_close(got, expected)


def test_retrace_cuts_the_trace_where_the_target_policy_would_never_take_the_action() -> None:
    """lambda = 1 and V(s_k) = Q(s_k, a_k): with ratio 1 everywhere Retrace is the full n-step return; a
    log-ratio of -inf at step 1 (pi(a_1) = 0) sets c_1 = 0, so the target is the 1-step target r_0 + gamma V(s_1).
    Catches a trace read at the wrong step (c_0 instead of c_1) and a flipped ratio (mu / pi: c_1 = 1)."""
    gen = torch.Generator().manual_seed(6)
    gamma, batch, length = 0.9, 4, 4
    rewards = torch.randn(batch, length, generator=gen)
    mask, terminated = torch.ones(batch, length), torch.zeros(batch, length)
    q_taken = torch.randn(batch, length, generator=gen)
    next_values = torch.cat([q_taken[:, 1:], torch.randn(batch, 1, generator=gen)], 1)
    log_ratio = torch.zeros(batch, length)
    log_ratio[:, 1] = -math.inf
    got = losses.retrace_targets(rewards, mask, terminated, q_taken, next_values, log_ratio, gamma, 1.0)
    torch.testing.assert_close(got, rewards[:, 0] + gamma * next_values[:, 0])
    # The same cut one step later keeps exactly two rewards.
    log_ratio = torch.zeros(batch, length)
    log_ratio[:, 2] = -math.inf
    got = losses.retrace_targets(rewards, mask, terminated, q_taken, next_values, log_ratio, gamma, 1.0)
    torch.testing.assert_close(got, rewards[:, 0] + gamma * rewards[:, 1] + gamma**2 * next_values[:, 1])


def test_retrace_matches_a_hand_computed_three_step_case() -> None:
    """c_k = lambda * min(1, pi / mu): ratio 0.5 at step 1 halves the trace, ratio 3 at step 2 is truncated to
    1 (without the min the trace would triple). Worked by hand with gamma 0.5, lambda 0.8:
      G_2 = r_2 + gamma V_2                    = 1 + 0.5 * 4                       = 3
      G_1 = r_1 + gamma (V_1 + c_2 (G_2 - Q_2)) = -1 + 0.5 * (2 + 0.8 * (3 - 1))    = 0.8
      G_0 = r_0 + gamma (V_0 + c_1 (G_1 - Q_1)) = 2 + 0.5 * (1 + 0.4 * (0.8 - 3))   = 2.06
    (step 0's own ratio, here 10, never enters: Retrace corrects the actions after the first.)"""
    rewards = torch.tensor([[2.0, -1.0, 1.0]])
    q_taken = torch.tensor([[5.0, 3.0, 1.0]])
    next_values = torch.tensor([[1.0, 2.0, 4.0]])
    log_ratio = torch.log(torch.tensor([[10.0, 0.5, 3.0]]))
    ones, zeros = torch.ones(1, 3), torch.zeros(1, 3)
    got = losses.retrace_targets(rewards, ones, zeros, q_taken, next_values, log_ratio, 0.5, 0.8)
    torch.testing.assert_close(got, torch.tensor([2.06]))


def test_state_weights_give_the_losses_of_the_kept_states_alone() -> None:
    """Masking a state (weight 0) is the same as leaving it out of the batch: every E-step and M-step loss and
    statistic with weights (1, 0, 1, 1, 0) equals the one computed on states 0, 2, 3 only, whatever the masked
    states hold (here wild values)."""
    gen = torch.Generator().manual_seed(7)
    batch, samples, dim = 5, 6, 2
    keep = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    rows = keep.bool()
    q_values = torch.randn(samples, batch, generator=gen)
    q_values[:, ~rows] = 1e4 * torch.randn(samples, 2, generator=gen)
    old = GaussianParams(torch.randn(batch, dim, generator=gen), torch.rand(batch, dim, generator=gen) + 0.2)
    new = GaussianParams(torch.randn(batch, dim, generator=gen), torch.rand(batch, dim, generator=gen) + 0.2)
    actions = old.mean + old.scale * torch.randn(samples, batch, dim, generator=gen)
    subset = lambda g: GaussianParams(g.mean[rows], g.scale[rows])  # noqa: E731
    param = torch.tensor(0.3)

    loss, weights, stats = losses.temperature_loss(q_values, param, 0.1, keep)
    loss_ref, weights_ref, stats_ref = losses.temperature_loss(q_values[:, rows], param, 0.1)
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(weights[:, rows], weights_ref)
    torch.testing.assert_close(stats.kl_q_pi, stats_ref.kl_q_pi)

    ce, _ = losses.weighted_cross_entropy(actions, weights, old, new, keep)
    ce_ref, _ = losses.weighted_cross_entropy(actions[:, rows], weights_ref, subset(old), subset(new))
    torch.testing.assert_close(ce, ce_ref)

    kl_mean, _ = losses.decoupled_kl(old, new, per_dim=True)
    policy_part, dual_part, tr_stats = losses.trust_region_loss(kl_mean, torch.zeros(dim), 0.01, keep)
    ref = losses.trust_region_loss(kl_mean[rows], torch.zeros(dim), 0.01)
    torch.testing.assert_close(policy_part, ref[0])
    torch.testing.assert_close(dual_part, ref[1])
    torch.testing.assert_close(tr_stats.kl, ref[2].kl)
    # without weights: the plain batch mean
    torch.testing.assert_close(losses.batch_mean(kl_mean), kl_mean.mean(0))
    torch.testing.assert_close(losses.batch_mean(kl_mean, torch.zeros(batch)), torch.zeros(dim))


def test_ended_in_terminal_reads_the_last_valid_step() -> None:
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0], [1, 1, 0], [1, 1, 1]])
    terminated = torch.tensor([[0.0, 0, 1], [0, 1, 0], [0, 0, 0], [0, 1, 0]])
    # row 3's "terminal" at step 1 belongs to another episode only if the mask ended there; it did not, so
    # the sequence reads step 2 (not terminal).
    torch.testing.assert_close(losses.ended_in_terminal(mask, terminated), torch.tensor([1.0, 1.0, 0.0, 0.0]))
