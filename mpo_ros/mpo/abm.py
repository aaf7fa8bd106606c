"""Advantage-weighted behaviour model (ABM): the behaviour-regularised prior for MPO on logged data.

Why: plain MPO takes its E-step samples from, and its M-step trust region around, its own previous
policy. Offline that policy drifts toward actions the data never tried, where the critic extrapolates
freely (the overestimation of off-policy RL without new samples). ABM (Siegel et al. 2020, "Keep
doing what worked: behavior modelling priors for offline RL", ICLR) replaces pi_old by a prior
pi_abm learned from the data itself, weighted toward the actions that did better than the current
policy, so each MPO step improves on "what worked" and stays in the support of the data:

    L_prior(theta) = - E_{(s,a)~D} [ f(A(s, a)) log pi_abm(a | s; theta) ]          (paper Eq. 4)
    A(s, a)        = Q(s, a) - E_{a'~pi}[ Q(s, a') ]    (critic-based advantage, paper Sec. 4 actor-critic)
    f(x)           = 1[x >= 0]                           ("binary": the paper's ABM choice)
                     or min(exp(x / beta), w_max)          ("exp": AWR/CRR-style weights, an option here)

then MPO's E-step draws N actions from pi_abm, re-weights them by exp(Q / eta) with KL(q || pi_abm)
< epsilon, and the M-step fits pi to them with its trust region KL(pi_old || pi) < epsilon_mean taken
around the previous policy pi_old, not around pi_abm (ABM+MPO in the paper: the prior chooses which
actions are considered, the trust region how far one step moves pi).
With f == 1 the prior is behaviour cloning (BC-regularised MPO, the paper's "BM" baseline), which is
why the weighting matters: mixed-quality data (our noisy controllers) holds many bad actions.

Shapes: B batch, N sampled actions per state, D action dimensions. The prior plugs into
:class:`mpo_ros.mpo.learner.MPOLearner` through its ``prior`` attribute (a module mapping normalised
observations to GaussianParams); the learner never trains it, :class:`ABMPrior` does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from mpo_ros.config import option
from mpo_ros.errors import ConfigError
from mpo_ros.mpo import losses
from mpo_ros.mpo.batch import SequenceBatch
from mpo_ros.mpo.learner import MPOLearner
from mpo_ros.mpo.networks import GaussianParams, GaussianPolicy

__all__ = ["WEIGHTINGS", "ABMConfig", "ABMPrior", "abm_weights", "advantages", "prior_loss"]

WEIGHTINGS = ("binary", "exp")


@dataclasses.dataclass
class ABMConfig:
    """Hyperparameters of the ABM prior (defaults: Siegel et al. 2020 where they give one)."""

    abm_weighting: str = option(
        "binary",
        "advantage weighting f of the prior: 'binary' 1[A>=0] (ABM paper) or 'exp' exp(A/beta)",
        choices=WEIGHTINGS,
    )
    abm_temperature: float = option(1.0, "beta of the 'exp' weighting (reward units)")
    abm_max_weight: float = option(
        20.0, "cap of the 'exp' weights, so one lucky sample cannot dominate (CRR: 20)"
    )
    abm_lr: float = option(3e-4, "Adam learning rate of the prior (as the policy's)")
    abm_min_scale: float = option(
        0.1,
        "floor on the prior's stddev (action units). Weighted likelihood on a few thousand logged actions "
        "shrinks the stddev toward 0; the E-step would then sample one action and the M-step trust region "
        "(KL to the prior, ~ 1/stddev^2) would pin the policy. 0.1 ~ the noise of a typical controller",
    )
    abm_samples: int = option(20, "policy actions per state estimating the value baseline E_pi[Q(s, a')]")

    def __post_init__(self) -> None:
        problems = []
        if self.abm_weighting not in WEIGHTINGS:
            problems.append(f"abm_weighting={self.abm_weighting!r} must be one of {WEIGHTINGS}")
        for name in ("abm_temperature", "abm_max_weight", "abm_lr", "abm_min_scale"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        if self.abm_samples < 1:
            problems.append(f"abm_samples={self.abm_samples} must be >= 1")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_any(cls, config: Any) -> ABMConfig:
        """This class's fields picked out of a larger config (e.g. TrainConfig) or a dict."""
        get = config.get if isinstance(config, dict) else lambda k, d: getattr(config, k, d)
        values = {
            f.name: get(f.name, dataclasses.MISSING)
            for f in dataclasses.fields(cls)
            if get(f.name, dataclasses.MISSING) is not dataclasses.MISSING
        }
        return cls(**values)


def advantages(q_data: torch.Tensor, q_policy: torch.Tensor) -> torch.Tensor:
    """A(s, a) [B] = Q(s, a) [B] - mean over N of Q(s, a'_n) [N, B], a'_n ~ pi."""
    return q_data - q_policy.mean(dim=0)


def abm_weights(
    advantage: torch.Tensor, weighting: str = "binary", temperature: float = 1.0, max_weight: float = 20.0
) -> torch.Tensor:
    """f(A) [B]: 1[A >= 0] ('binary') or min(exp(A / temperature), max_weight) ('exp')."""
    if weighting == "binary":
        return (advantage >= 0).to(advantage.dtype)
    if weighting == "exp":
        # exp of a clamped argument: the cap is applied before exp can overflow.
        return torch.exp(torch.clamp(advantage / temperature, max=float(np.log(max_weight))))
    raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")


def prior_loss(prior: GaussianParams, actions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """- sum_b w_b log pi(a_b | s_b) / max(sum_b w_b, 1): weighted maximum likelihood of data actions.

    Normalised by the weight sum (not B) so the step size does not shrink when few actions win; the
    floor of 1 keeps a batch without any winner from dividing by zero (its loss is then 0).
    """
    log_likelihood = losses.log_prob(prior, actions.unsqueeze(0))[0]  # [B]
    return -(weights * log_likelihood).sum() / weights.sum().clamp_min(1.0)


class ABMPrior:
    """The prior network, its optimiser and its update; :meth:`attach` makes the learner use it."""

    def __init__(self, learner: MPOLearner, config: ABMConfig | None = None) -> None:
        self.config = config or ABMConfig()
        self.learner = learner
        mpo = learner.config
        self.network = GaussianPolicy(
            learner.obs_dim,
            learner.act_dim,
            hidden=mpo.policy_hidden,
            torso=mpo.torso,
            init_scale=max(mpo.init_scale, self.config.abm_min_scale),
            min_scale=self.config.abm_min_scale,
            full_covariance=mpo.full_covariance,
        ).to(learner.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.config.abm_lr)
        self.num_updates = 0

    def attach(self) -> ABMPrior:
        """From now on the learner's E-step samples from, and bounds its KL against, this prior (the M-step
        trust region stays around the learner's own previous policy)."""
        self.learner.prior = self.network
        return self

    def update(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        """One gradient step of the prior on the first step of each sequence; 0-d metric tensors."""
        learner, cfg = self.learner, self.config
        obs = learner.normalize(torch.as_tensor(batch.observations[:, 0], device=learner.device))
        actions = torch.as_tensor(batch.actions[:, 0], device=learner.device)
        with torch.no_grad():
            q_data = learner.target_critic(obs, actions)
            policy = learner.target_policy(obs)
            sampled = _sample(policy, cfg.abm_samples)
            q_policy = learner.target_critic(obs.expand(cfg.abm_samples, -1, -1), sampled)
            advantage = advantages(q_data, q_policy)
            weights = abm_weights(advantage, cfg.abm_weighting, cfg.abm_temperature, cfg.abm_max_weight)
        prior = self.network(obs)
        loss = prior_loss(prior, actions, weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if learner.config.grad_norm_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), learner.config.grad_norm_clip)
        self.optimizer.step()
        self.num_updates += 1
        return {
            "abm/loss": loss.detach(),
            "abm/weight_mean": weights.mean(),
            "abm/advantage_mean": advantage.mean(),
            "abm/prior_std": prior.stddev().detach().mean(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.config),
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["num_updates"])


def _sample(dist: GaussianParams, num: int) -> torch.Tensor:
    """``num`` samples [num, B, D] of a diagonal or full-covariance Gaussian."""
    noise = torch.randn((num, *dist.mean.shape), dtype=dist.mean.dtype, device=dist.mean.device)
    if dist.full_covariance:
        return dist.mean + (dist.scale @ noise.unsqueeze(-1)).squeeze(-1)
    return dist.mean + dist.scale * noise
