"""MPO losses as pure functions of tensors, each returning ``(loss, stats)``.

Shape letters: B batch, N action samples per state, D action dimensions, L sequence length, A atoms of a
categorical critic's support (K atoms of a distribution before projection onto that support).

Symbols follow Abdolmaleki et al. (2018a, "Maximum a Posteriori Policy Optimisation"; 2018b, "Relative Entropy
Regularized Policy Iteration") and Abdolmaleki et al. (2020, "A Distributional View on Multi-Objective Policy
Optimization", MO-MPO):

- ``eta`` / temperature: Lagrange multiplier of the E-step KL(q || prior) <= epsilon.
- ``alpha_mean``, ``alpha_stddev``: multipliers of the decoupled M-step trust regions.
- ``pi_old``: the previous (target) policy, around which the M-step trust regions are taken.
- ``prior``: the distribution the E-step samples and bounds KL(q || prior) against: pi_old itself in plain
  MPO, a behaviour prior in ABM (Siegel et al. 2020), whose M-step still stays near pi_old.

``state_weights`` [B] (optional everywhere it appears): 1 for a state the policy is fitted on, 0 for one it
must ignore (e.g. an observation after a true terminal). Batch means become weighted means over the kept
states; ``None`` is the plain mean.

Nothing here owns an optimiser: the learner sums the returned losses and steps. Every dual loss is written so
that its gradient touches only the dual variable (KLs and Q-values enter through ``detach``), and every policy
loss so that its gradient touches only the policy (duals enter through ``detach``).

Why action penalisation instead of a tanh squash: the M-step trust regions are closed-form Gaussian KLs between
the old and new policies; with a squash the KL in action space no longer has a closed form and log-likelihoods
need Jacobian terms that blow up near the bounds. MO-MPO instead adds a second objective,
``Q_penalty(a) = -||a - clip(a, -1, 1)||_2``, with its own temperature and epsilon: the E-step weights then
prefer in-bound samples by an amount that is scale-invariant to the task reward, and the policy stays a plain
Gaussian whose mean can be clamped at deployment.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from mpo_ros.mpo.networks import GaussianParams

__all__ = [
    "MIN_DUAL",
    "CategoricalCriticStats",
    "CriticStats",
    "CrossEntropyStats",
    "TemperatureStats",
    "TrustRegionStats",
    "action_penalty",
    "batch_mean",
    "categorical_critic_loss",
    "categorical_n_step_target",
    "categorical_projection",
    "critic_loss",
    "decoupled_kl",
    "dual_value",
    "ended_in_terminal",
    "gaussian_kl_diag",
    "gaussian_kl_full",
    "log_prob",
    "n_step_return",
    "retrace_targets",
    "temperature_loss",
    "trust_region_loss",
    "weighted_cross_entropy",
]

MIN_DUAL = 1e-8  # added to softplus(param): duals are strictly positive (Acme's _MPO_FLOAT_EPSILON)


def dual_value(param: torch.Tensor) -> torch.Tensor:
    """Positive dual variable from its unconstrained parameter: ``softplus(param) + 1e-8``."""
    return torch.nn.functional.softplus(param) + MIN_DUAL


def batch_mean(values: torch.Tensor, state_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch axis 0 of ``values`` [B, ...]; with ``state_weights`` [B] the weighted mean
    sum_b w_b x_b / max(sum_b w_b, 1e-8), so masked states (w = 0) contribute nothing and a batch with no
    kept state gives 0 instead of NaN."""
    if state_weights is None:
        return values.mean(0)
    weights = state_weights.reshape(-1, *([1] * (values.dim() - 1)))
    return (values * weights).sum(0) / state_weights.sum().clamp_min(1e-8)


# --- Gaussian helpers -----------------------------------------------------------------------------------


def gaussian_kl_diag(
    mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor
) -> torch.Tensor:
    """Per-dimension KL(N(mean_p, std_p^2) || N(mean_q, std_q^2)) [..., D] in closed form."""
    var_ratio = (std_p / std_q).square()
    mahalanobis = ((mean_q - mean_p) / std_q).square()
    return 0.5 * (var_ratio + mahalanobis - 1.0 - torch.log(var_ratio))


def gaussian_kl_full(
    mean_p: torch.Tensor, chol_p: torch.Tensor, mean_q: torch.Tensor, chol_q: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean_p, L_p L_p^T) || N(mean_q, L_q L_q^T)) [...] for Cholesky factors [..., D, D].

    0.5 * (tr(S_q^-1 S_p) + (m_q - m_p)^T S_q^-1 (m_q - m_p) - D + log det S_q - log det S_p).
    """
    dim = mean_p.shape[-1]
    chol_q = chol_q.expand_as(chol_p) if chol_q.dim() < chol_p.dim() else chol_q
    chol_p = chol_p.expand_as(chol_q)
    # M = L_q^-1 L_p  =>  tr(S_q^-1 S_p) = ||M||_F^2
    m = torch.linalg.solve_triangular(chol_q, chol_p, upper=False)
    trace = m.square().sum((-2, -1))
    diff = (mean_q - mean_p).unsqueeze(-1)
    y = torch.linalg.solve_triangular(chol_q, diff.expand(*chol_q.shape[:-1], 1), upper=False)
    mahalanobis = y.square().sum((-2, -1))
    logdet_q = torch.diagonal(chol_q, dim1=-2, dim2=-1).log().sum(-1)
    logdet_p = torch.diagonal(chol_p, dim1=-2, dim2=-1).log().sum(-1)
    return 0.5 * (trace + mahalanobis - dim) + logdet_q - logdet_p


def decoupled_kl(
    old: GaussianParams, new: GaussianParams, per_dim: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two halves of KL(pi_old || pi_new) used by the decoupled M-step (MPO 2018a, Sec. 4.2.1).

    ``kl_mean`` = KL(old || N(new.mean, old.scale)) (only the mean moved), ``kl_stddev`` =
    KL(old || N(old.mean, new.scale)) (only the scale moved). Shapes [B, D] when ``per_dim`` (diagonal only),
    else [B]. Gradients flow into ``new`` only when it is not detached by the caller.
    """
    if old.full_covariance != new.full_covariance:
        raise ValueError("old and new policies must both be diagonal or both be full-covariance")
    if old.full_covariance:
        if per_dim:
            raise ValueError("a per-dimension KL is undefined for a full-covariance Gaussian")
        kl_mean = gaussian_kl_full(old.mean, old.scale, new.mean, old.scale)
        kl_stddev = gaussian_kl_full(old.mean, old.scale, old.mean, new.scale)
        return kl_mean, kl_stddev
    kl_mean = gaussian_kl_diag(old.mean, old.scale, new.mean, old.scale)
    kl_stddev = gaussian_kl_diag(old.mean, old.scale, old.mean, new.scale)
    if per_dim:
        return kl_mean, kl_stddev
    return kl_mean.sum(-1), kl_stddev.sum(-1)


def log_prob(dist: GaussianParams, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) for ``actions`` [N, B, D] under ``dist`` with parameters [B, ...] -> [N, B]."""
    dim = dist.mean.shape[-1]
    diff = actions - dist.mean
    if dist.full_covariance:
        chol = dist.scale.expand(*diff.shape[:-1], dim, dim)
        z = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False).squeeze(-1)
        log_det = torch.diagonal(dist.scale, dim1=-2, dim2=-1).log().sum(-1)
    else:
        z = diff / dist.scale
        log_det = dist.scale.log().sum(-1)
    return -0.5 * z.square().sum(-1) - log_det - 0.5 * dim * math.log(2.0 * math.pi)


# --- E-step ---------------------------------------------------------------------------------------------


class TemperatureStats(NamedTuple):
    temperature: torch.Tensor  # the dual variable eta
    kl_q_pi: torch.Tensor  # KL(q || pi_old) of the sample-based non-parametric q, averaged over B
    q_spread: torch.Tensor  # mean over B of max_N Q - min_N Q, to read eta against


def temperature_loss(
    q_values: torch.Tensor,
    temperature_param: torch.Tensor,
    epsilon: float,
    state_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, TemperatureStats]:
    """E-step: the temperature dual and the sample weights of q(a|s) proportional to prior(a|s) exp(Q/eta).

    ``q_values`` [N, B] for N actions sampled from the prior at each state. The dual
    g(eta) = eta * epsilon + eta * mean_B log mean_N exp(Q / eta) is convex in eta; its minimiser makes
    KL(q || prior) = epsilon. ``state_weights`` [B] restrict the batch mean to the kept states. Returns
    ``(loss, weights [N, B] (detached, sum to 1 over N), stats)``.
    """
    temperature = dual_value(temperature_param)
    tempered = q_values.detach() / temperature
    weights = torch.softmax(tempered, dim=0).detach()
    log_mean_exp = torch.logsumexp(tempered, dim=0) - math.log(q_values.shape[0])
    loss = temperature * (epsilon + batch_mean(log_mean_exp, state_weights))
    num = q_values.shape[0]
    kl = batch_mean((weights * torch.log(weights * num + 1e-30)).sum(0), state_weights)
    spread = batch_mean(q_values.amax(0) - q_values.amin(0), state_weights).detach()
    return loss, weights, TemperatureStats(temperature.detach(), kl.detach(), spread)


def action_penalty(actions: torch.Tensor) -> torch.Tensor:
    """MO-MPO's action-bound objective Q_penalty = -||a - clip(a, -1, 1)||_2 over D: [..., D] -> [...]."""
    return -(actions - actions.clamp(-1.0, 1.0)).norm(dim=-1)


# --- M-step ---------------------------------------------------------------------------------------------


class CrossEntropyStats(NamedTuple):
    loss_mean: torch.Tensor
    loss_stddev: torch.Tensor


def weighted_cross_entropy(
    actions: torch.Tensor,
    weights: torch.Tensor,
    old: GaussianParams,
    new: GaussianParams,
    state_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, CrossEntropyStats]:
    """Weighted maximum likelihood of the E-step samples, decoupled into mean and scale parts.

    ``actions`` [N, B, D], ``weights`` [N, B] summing to 1 over N (summed across objectives). The mean is
    fitted with the scale fixed to ``old`` (pi_old) and the scale with the mean fixed to ``old`` (MPO 2018a,
    Sec. 4.2.1), which keeps a fast-moving mean from collapsing the variance. ``state_weights`` [B] restrict
    the batch mean to the kept states.
    """
    fixed_scale = GaussianParams(new.mean, old.scale)
    fixed_mean = GaussianParams(old.mean, new.scale)
    loss_mean = -batch_mean((weights * log_prob(fixed_scale, actions)).sum(0), state_weights)
    loss_stddev = -batch_mean((weights * log_prob(fixed_mean, actions)).sum(0), state_weights)
    stats = CrossEntropyStats(loss_mean.detach(), loss_stddev.detach())
    return loss_mean + loss_stddev, stats


class TrustRegionStats(NamedTuple):
    alpha: torch.Tensor  # dual value(s) [D] or []
    kl: torch.Tensor  # batch-mean KL, [D] or []
    kl_relative: torch.Tensor  # batch-mean KL / epsilon (summed over D first when per-dim)


def trust_region_loss(
    kl: torch.Tensor,
    alpha_param: torch.Tensor,
    epsilon: float,
    state_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, TrustRegionStats]:
    """Lagrangian of one M-step trust region KL <= epsilon, split into its policy and dual parts.

    ``kl`` [B, D] (per-dimension; ``alpha_param`` [D], each dimension bounded by epsilon / D) or [B]
    (``alpha_param`` []). Returns ``(policy_loss, dual_loss, stats)``: the policy loss is alpha * KL with
    alpha detached; the dual loss alpha * (epsilon_i - KL) with KL detached, so gradient descent raises alpha
    while the constraint is violated and lowers it otherwise. ``state_weights`` [B] restrict the batch mean
    to the kept states.
    """
    alpha = dual_value(alpha_param)
    mean_kl = batch_mean(kl, state_weights)
    eps_each = epsilon / kl.shape[-1] if kl.dim() == 2 else epsilon
    policy_loss = (alpha.detach() * mean_kl).sum()
    dual_loss = (alpha * (eps_each - mean_kl.detach())).sum()
    stats = TrustRegionStats(alpha.detach(), mean_kl.detach(), mean_kl.detach().sum() / epsilon)
    return policy_loss, dual_loss, stats


# --- Critic ---------------------------------------------------------------------------------------------


def n_step_return(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    terminated: torch.Tensor,
    bootstrap_value: torch.Tensor,
    discount: float,
) -> torch.Tensor:
    """n-step TD target for the first step of each sequence.

    ``rewards``, ``mask``, ``terminated`` [B, L]: ``mask`` is 1 for steps in the same episode as step 0 (a
    prefix), ``terminated`` marks a true terminal (the MDP ended: no bootstrap). A time-limit truncation is
    not a terminal: the target bootstraps from the value of the last observation, because the state itself
    had a future. ``bootstrap_value`` [B] is V(s') after the last valid step, ``m = sum(mask)``:
    target = sum_{k<m} gamma^k r_k + gamma^m (1 - terminated_{m-1}) V(s').
    """
    length = rewards.shape[1]
    powers = discount ** torch.arange(length, dtype=rewards.dtype, device=rewards.device)
    ret = (rewards * mask * powers).sum(1)
    return ret + (discount ** mask.sum(1)) * (1.0 - ended_in_terminal(mask, terminated)) * bootstrap_value


def ended_in_terminal(mask: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
    """1.0 [B] where a sequence's last valid step reached a true terminal: the observation after it (the
    n-step bootstrap state) has no future, so its value is not used and no policy may be fitted there."""
    last = (mask.sum(1).long() - 1).clamp_min(0).unsqueeze(1)
    return terminated.gather(1, last).squeeze(1) * mask[:, 0]


def retrace_targets(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    terminated: torch.Tensor,
    q_taken: torch.Tensor,
    next_values: torch.Tensor,
    log_ratio: torch.Tensor,
    discount: float,
    lambda_: float,
) -> torch.Tensor:
    """Retrace(lambda) target for the first step of each sequence (Munos et al. 2016).

    [B, L] inputs: ``q_taken`` Q_target(s_k, a_k); ``next_values`` V(s_{k+1}) = E_pi Q_target(s_{k+1}, .);
    ``log_ratio`` log pi(a_k|s_k) - log mu(a_k|s_k), finite or -inf (pi(a_k|s_k) = 0 cuts the trace); it must
    be known: the learner gives sequences without behaviour densities the n-step target instead (c = lambda
    there would be Q(lambda), which is not safe off-policy). Only steps 1..L-1 enter: the first action is the
    one being evaluated. Backward recursion over the valid prefix:
    G_k = r_k + gamma (1 - term_k) [V(s_{k+1}) + c_{k+1} (G_{k+1} - Q(s_{k+1}, a_{k+1}))], the bracketed
    correction only where step k+1 is valid. Traces are truncated, c = lambda * min(1, ratio).
    """
    length = rewards.shape[1]
    traces = lambda_ * log_ratio.clamp(max=0.0).exp()
    g = torch.zeros_like(rewards[:, 0])
    for k in range(length - 1, -1, -1):
        if k + 1 < length:
            valid_next = mask[:, k + 1]
            correction = valid_next * traces[:, k + 1] * (g - q_taken[:, k + 1])
        else:
            correction = torch.zeros_like(g)
        g_k = rewards[:, k] + discount * (1.0 - terminated[:, k]) * (next_values[:, k] + correction)
        g = torch.where(mask[:, k] > 0, g_k, g)
    return g


class SmoothnessStats(NamedTuple):
    temporal: torch.Tensor  # mean ||mu(s_t) - mu(s_t+1)||
    spatial: torch.Tensor  # mean ||mu(s) - mu(s + noise)||


def smoothness_loss(
    mean: torch.Tensor,
    mean_next: torch.Tensor | None,
    mean_perturbed: torch.Tensor | None,
    temporal_weight: float,
    spatial_weight: float,
) -> tuple[torch.Tensor, SmoothnessStats]:
    """CAPS (Mysore et al., ICRA 2021) temporal and spatial smoothness of the policy mean, [B, D] each.

    Temporal: consecutive states should get close actions; spatial: nearby states should. Distances are
    L2 norms as in CAPS; the terms are added to the M-step loss, so only the policy is shaped (the critic
    and the duals never see them). A term whose weight is 0 may be passed as None and costs nothing.
    """
    zero = mean.new_zeros(())
    temporal = (mean - mean_next).norm(dim=-1).mean() if mean_next is not None else zero
    spatial = (mean - mean_perturbed).norm(dim=-1).mean() if mean_perturbed is not None else zero
    loss = temporal_weight * temporal + spatial_weight * spatial
    return loss, SmoothnessStats(temporal.detach(), spatial.detach())


class CriticStats(NamedTuple):
    q_mean: torch.Tensor
    q_min: torch.Tensor
    q_max: torch.Tensor
    target_mean: torch.Tensor


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, CriticStats]:
    """Squared TD error ``0.5 * mean((Q - target)^2)``; the target enters detached. [B], [B] -> []."""
    loss = 0.5 * (q - target.detach()).square().mean()
    qd = q.detach()
    return loss, CriticStats(qd.mean(), qd.min(), qd.max(), target.detach().mean())


class CategoricalCriticStats(NamedTuple):
    """:class:`CriticStats` (from E[Z] of the online critic) plus ``target_edge_mass``, the mean target
    probability on the first and last atom. Values beyond the support are clipped onto those atoms, so a
    large edge mass says [vmin, vmax] is too narrow for the task's returns."""

    q_mean: torch.Tensor
    q_min: torch.Tensor
    q_max: torch.Tensor
    target_mean: torch.Tensor
    target_edge_mass: torch.Tensor


def categorical_projection(values: torch.Tensor, probs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Project a distribution with atoms ``values`` [..., K] and ``probs`` [..., K] onto ``support`` [A].

    C51's projection (Bellemare et al. 2017, Alg. 1), written as its equivalent triangular kernel: each
    source atom, clipped into [support[0], support[-1]], gives its mass to the two neighbouring support atoms
    in proportion to closeness, weight max(0, 1 - |v - z_j| / dz). The support must be evenly spaced. For a
    value between two atoms the weights sum to 1 (mass is conserved) and sum_j w_j z_j = v (the mean is
    preserved for in-range values); out-of-range values land wholly on the edge atom. Returns [..., A].
    """
    spacing = support[1] - support[0]
    clipped = values.clamp(support[0], support[-1])
    closeness = 1.0 - (clipped.unsqueeze(-1) - support).abs() / spacing  # [..., K, A]
    return (probs.unsqueeze(-1) * closeness.clamp_min(0.0)).sum(-2)


def categorical_n_step_target(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    terminated: torch.Tensor,
    bootstrap_probs: torch.Tensor,
    support: torch.Tensor,
    discount: float,
) -> torch.Tensor:
    """Distributional n-step target for the first step of each sequence, projected onto ``support`` [A].

    ``bootstrap_probs`` [B, A] is the return distribution after the last valid step (the learner passes the
    mixture of the target critic over the target policy's samples). Each atom z moves to
    sum_{k<m} gamma^k r_k + gamma^m (1 - terminated_{m-1}) z with the masking of :func:`n_step_return` (which
    computes it): after a true terminal every atom collapses onto the reward sum, after a truncation the
    distribution bootstraps. Returns target probabilities [B, A] (rows sum to 1).
    """
    shifted = n_step_return(rewards, mask, terminated, support.unsqueeze(1), discount)  # [A, B]
    return categorical_projection(shifted.T, bootstrap_probs, support)


def categorical_critic_loss(
    logits: torch.Tensor, target_probs: torch.Tensor, support: torch.Tensor
) -> tuple[torch.Tensor, CategoricalCriticStats]:
    """Cross-entropy of the online critic's distribution against the projected target.

    ``logits`` [B, A], ``target_probs`` [B, A] (enters detached), ``support`` [A] -> loss [] (mean over B of
    -sum_j target_j log p_j). The cross-entropy, not a squared error on the mean, is what makes the critic
    distributional; minimising it over the logits is minimising KL(target || p).
    """
    target = target_probs.detach()
    log_probs = torch.log_softmax(logits, dim=-1)
    loss = -(target * log_probs).sum(-1).mean()
    q = log_probs.detach().exp() @ support
    stats = CategoricalCriticStats(
        q.mean(),
        q.min(),
        q.max(),
        (target @ support).mean(),
        (target[:, 0] + target[:, -1]).mean(),
    )
    return loss, stats
