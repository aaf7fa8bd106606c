"""Policy, critic and observation normaliser for MPO (pure torch).

Shapes: B batch, D action dimensions, O observation dimensions.

The policy is an unsquashed Gaussian: MPO's trust regions are closed-form KLs between Gaussians, which a tanh
squash would break (see ``losses.py`` for why actions are kept in bounds by penalisation instead).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "CRITIC_TYPES",
    "TORSOS",
    "CategoricalCritic",
    "Critic",
    "GaussianParams",
    "GaussianPolicy",
    "ObservationNormalizer",
    "make_torso",
    "variance_scaling_",
]

TORSOS = ("layernorm", "relu")
CRITIC_TYPES = ("scalar", "categorical")


class GaussianParams(NamedTuple):
    """A batch of Gaussians: ``mean`` [..., D]; ``scale`` [..., D] (diagonal stddev) or [..., D, D] (Cholesky)."""

    mean: torch.Tensor
    scale: torch.Tensor

    @property
    def full_covariance(self) -> bool:
        return self.scale.dim() == self.mean.dim() + 1

    def stddev(self) -> torch.Tensor:
        """Marginal standard deviations [..., D] (row norms of the Cholesky factor when full)."""
        if self.full_covariance:
            return self.scale.square().sum(-1).sqrt()
        return self.scale


class LayerNormTorso(nn.Module):
    """Acme's LayerNormMLP: Linear -> LayerNorm -> tanh, then (Linear -> ELU) for the remaining layers.

    The normalised, bounded first layer keeps the critic's input scale fixed as observations drift, which is
    why Acme uses it for every MPO network (acme/jax/networks/continuous.py ``LayerNormMLP``).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = [in_dim, *hidden]
        self.first = nn.Linear(sizes[0], sizes[1])
        self.norm = nn.LayerNorm(sizes[1])
        self.rest = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes[1:]))
        self.out_dim = sizes[-1]

    @property
    def first_linear(self) -> nn.Linear:
        return self.first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_first(self.first(x))

    def after_first(self, x: torch.Tensor) -> torch.Tensor:
        """The torso from the first layer's pre-activation on. The activations work in place on fresh
        outputs (no autograd needs those: LayerNorm and Linear save their inputs), which saves an allocation
        and a memory pass per layer on the N x B rows of the sampled pass."""
        x = self.norm(x).tanh_()
        for layer in self.rest:
            x = torch.nn.functional.elu(layer(x), inplace=True)
        return x


class ReluTorso(nn.Module):
    """Plain ReLU MLP (Tonic's and most gym baselines' choice)."""

    def __init__(self, in_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = [in_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.out_dim = sizes[-1]

    @property
    def first_linear(self) -> nn.Linear:
        return self.layers[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_first(self.layers[0](x))

    def after_first(self, x: torch.Tensor) -> torch.Tensor:
        """The torso from the first layer's pre-activation on (activations in place, see
        :meth:`LayerNormTorso.after_first`; the caller's pre-activation is consumed)."""
        x = torch.relu_(x)
        for layer in self.layers[1:]:
            x = torch.relu_(layer(x))
        return x


def make_torso(kind: str, in_dim: int, hidden: Sequence[int]) -> nn.Module:
    """Build a torso by name (``layernorm`` or ``relu``); ``hidden`` must hold at least one size."""
    if not hidden:
        raise ValueError("hidden sizes must hold at least one layer size")
    if kind == "layernorm":
        return LayerNormTorso(in_dim, hidden)
    if kind == "relu":
        return ReluTorso(in_dim, hidden)
    raise ValueError(f"unknown torso {kind!r}; choose one of {TORSOS}")


# Standard deviation of a unit normal truncated to [-2, 2] (scipy.stats.truncnorm(-2, 2).std()).
_TRUNCATED_UNIT_STD = 0.87962566103423978


@torch.no_grad()
def variance_scaling_(weight: torch.Tensor, scale: float) -> torch.Tensor:
    """haiku's ``VarianceScaling(scale)`` (fan-in mode, truncated normal) in place on a Linear ``weight``
    [out, in]: a normal truncated at two of its standard deviations, widened by 1 / 0.8796 so that the
    weights' standard deviation after truncation is sqrt(scale / fan_in)."""
    fan_in = max(1, weight.shape[1])
    std = math.sqrt(scale / fan_in) / _TRUNCATED_UNIT_STD
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


class GaussianPolicy(nn.Module):
    """State-dependent Gaussian pi(a|s) over actions in the normalised space [-1, 1]^D (unsquashed).

    The scale is ``softplus(x) * init_scale / softplus(0) + min_scale`` so that a freshly initialised head
    (small weights) starts at ``init_scale`` (Acme ``MultivariateNormalDiagHead``: init 0.3, min 1e-6). With
    ``full_covariance`` the head also outputs the strictly lower triangle of a Cholesky factor (MPO paper,
    Abdolmaleki et al. 2018a, uses a full covariance).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        torso: str = "layernorm",
        init_scale: float = 0.3,
        min_scale: float = 1e-6,
        full_covariance: bool = False,
    ) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.full_covariance = full_covariance
        self.min_scale = min_scale
        self.scale_factor = init_scale / math.log(2.0)  # softplus(0) = log 2
        self.torso = make_torso(torso, obs_dim, hidden)
        width = self.torso.out_dim
        self.mean_head = nn.Linear(width, act_dim)
        self.scale_head = nn.Linear(width, act_dim)
        # Off-diagonal Cholesky entries: a D*D output masked to the strict lower triangle (simple, traceable).
        self.offdiag_head = nn.Linear(width, act_dim * act_dim) if full_covariance and act_dim > 1 else None
        self.register_buffer("_strict_lower", torch.ones(act_dim, act_dim).tril(-1), persistent=False)
        # Small head weights so the initial policy is ~N(0, init_scale^2) nearly everywhere, independent of
        # the observation: Acme's MultivariateNormalDiagHead uses haiku's VarianceScaling(1e-4), see
        # :func:`variance_scaling_`.
        for head in (self.mean_head, self.scale_head, self.offdiag_head):
            if head is not None:
                variance_scaling_(head.weight, 1e-4)
                nn.init.zeros_(head.bias)

    def forward(self, obs: torch.Tensor) -> GaussianParams:
        """``obs`` [B, O] (already normalised) -> Gaussian over actions."""
        h = self.torso(obs)
        mean = self.mean_head(h)
        std = torch.nn.functional.softplus(self.scale_head(h)) * self.scale_factor + self.min_scale
        if not self.full_covariance:
            return GaussianParams(mean, std)
        chol = torch.diag_embed(std)
        if self.offdiag_head is not None:
            offdiag = self.offdiag_head(h).unflatten(-1, (self.act_dim, self.act_dim))
            chol = chol + offdiag * self._strict_lower * self.scale_factor
        return GaussianParams(mean, chol)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """The action used for evaluation and deployment: the mean, clamped into the action bounds."""
        return self.forward(obs).mean.clamp(-1.0, 1.0)


def _state_action_features(torso: nn.Module, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Torso output for (observation, clipped action) pairs: ``obs`` [..., O], ``action`` [..., D]."""
    return torso(torch.cat([obs, action.clamp(-1.0, 1.0)], dim=-1))


def _sampled_features(torso: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Torso output for N actions per state: ``obs`` [B, O], ``actions`` [N, B, D] -> [N, B, H].

    Equal to ``_state_action_features(torso, obs.expand(N, B, O), actions)``, but the observation's share of
    the first layer is computed once per state instead of once per sample (the first layer is linear in the
    concatenation).
    """
    first = torso.first_linear
    obs_dim = obs.shape[-1]
    per_state = torch.nn.functional.linear(obs, first.weight[:, :obs_dim], first.bias)  # [B, H]
    num = actions.shape[0]
    action_weight = first.weight[:, obs_dim:].T.expand(num, -1, -1)  # [N, D, H]
    # per_state + actions @ W_a in one kernel (no separate [N, B, H] sum pass)
    pre = torch.baddbmm(per_state.expand(num, -1, -1), actions.clamp(-1.0, 1.0), action_weight)
    return torso.after_first(pre)


class Critic(nn.Module):
    """Q(s, a): MLP over the concatenated (normalised observation, action).

    Actions are clamped to [-1, 1] before entering the network (Acme's ``ClipToSpec`` in the critic
    multiplexer): the environment only ever executes clipped actions, so out-of-bound samples share the value
    of their clipped version and the action-penalty objective alone pulls the policy back into bounds.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256), torso: str = "layernorm"
    ) -> None:
        super().__init__()
        self.torso = make_torso(torso, obs_dim + act_dim, hidden)
        self.head = nn.Linear(self.torso.out_dim, 1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``obs`` [..., O], ``action`` [..., D] -> Q [...]."""
        return self.head(_state_action_features(self.torso, obs, action)).squeeze(-1)

    def sampled(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q for N actions per state: ``obs`` [B, O], ``actions`` [N, B, D] -> [N, B] (first layer once per
        state, see :func:`_sampled_features`)."""
        return self.head(_sampled_features(self.torso, obs, actions)).squeeze(-1)


class CategoricalCritic(nn.Module):
    """Z(s, a): a categorical distribution over ``atoms`` fixed returns evenly spaced in [vmin, vmax].

    The distributional critic of Acme's DMPO (Hoffman et al. 2020, after C51, Bellemare et al. 2017): the
    head outputs one logit per atom and is trained by cross-entropy against a projected distributional
    target. Learning the whole return distribution gives a richer, scale-free training signal than a
    squared error on its mean. Everything outside the critic loss only needs Q, so :meth:`forward` and
    :meth:`sampled` return the expected value sum_i p_i z_i with the same signatures as :class:`Critic`;
    :meth:`logits` and :meth:`sampled_logits` give the distribution. Torso, action clipping and the
    first-layer-once-per-state trick are those of :class:`Critic`.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        torso: str = "layernorm",
        atoms: int = 51,
        vmin: float = -150.0,
        vmax: float = 150.0,
    ) -> None:
        super().__init__()
        if atoms < 2 or not vmin < vmax:
            raise ValueError(f"need atoms >= 2 and vmin < vmax, got atoms={atoms}, vmin={vmin}, vmax={vmax}")
        self.torso = make_torso(torso, obs_dim + act_dim, hidden)
        self.head = nn.Linear(self.torso.out_dim, atoms)
        # Not persistent: the support is a function of the config, which the checkpoint carries and the
        # learner checks on load, so two sources of truth cannot disagree.
        self.register_buffer("support", torch.linspace(vmin, vmax, atoms), persistent=False)

    def logits(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``obs`` [..., O], ``action`` [..., D] -> logits [..., A] over :attr:`support`."""
        return self.head(_state_action_features(self.torso, obs, action))

    def sampled_logits(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Logits for N actions per state: ``obs`` [B, O], ``actions`` [N, B, D] -> [N, B, A]."""
        return self.head(_sampled_features(self.torso, obs, actions))

    def expected(self, logits: torch.Tensor) -> torch.Tensor:
        """Q = E[Z] from logits [..., A] -> [...]."""
        return torch.softmax(logits, dim=-1) @ self.support

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Expected Q [...] (drop-in for :meth:`Critic.forward`)."""
        return self.expected(self.logits(obs, action))

    def sampled(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Expected Q [N, B] for N actions per state (drop-in for :meth:`Critic.sampled`)."""
        return self.expected(self.sampled_logits(obs, actions))


class ObservationNormalizer(nn.Module):
    """Running mean / std of observations; ``forward`` standardises and clips.

    Statistics live in buffers so they are saved in ``state_dict`` and travel into the exported ONNX policy.
    They change only through :meth:`update` (called by the training loop on new environment observations), so
    evaluation, export and target computation all see frozen statistics.
    """

    def __init__(self, obs_dim: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        """Merge a batch [B, O] (or one observation [O]) into the running moments (Chan et al. parallel form)."""
        x = obs.reshape(-1, self.mean.shape[0]).to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total)
        m2 = self.var * self.count + batch_var * n + delta.square() * (self.count * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(obs.dtype)
        std = (self.var.to(obs.dtype) + self.eps).sqrt()
        return ((obs - mean) / std).clamp(-self.clip, self.clip)
