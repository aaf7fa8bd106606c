"""The MPO learner: networks, target networks, duals, optimisers, and one ``update(batch)``.

One update on a batch of replay sequences (see :mod:`mpo_ros.training.replay`):

1. Policy evaluation: the critic regresses onto an n-step target (or Retrace) bootstrapped with the expected
   target-critic value under the target policy, estimated from ``num_samples`` actions. With
   ``critic_type='categorical'`` (DMPO) the critic is a return distribution instead: its target is the
   mixture of the target critic's distributions over those samples, shifted by the n-step rewards and
   projected onto the fixed atoms, fitted by cross-entropy; everything else reads its expected value.
2. E-step: ``num_samples`` actions per state from the prior (the target policy unless :attr:`MPOLearner.prior`
   is set, the seam for behaviour-regularised variants such as ABM) are weighted by softmax(Q/eta); eta is
   fitted by its convex dual so that KL(q || prior) ~ epsilon. With action penalisation a second objective
   gets its own temperature (MO-MPO).
3. M-step: weighted maximum likelihood of those samples under decoupled mean / scale KL trust regions
   around pi_old (the target policy; also with a prior: Siegel et al. 2020 bound the E-step against the
   prior and the M-step against the previous policy), with Lagrange multipliers learned by dual gradient
   descent.

All three losses are summed and back-propagated once: each touches a disjoint set of parameters (critic,
policy, duals), so one backward pass equals three and saves the per-pass overhead. The network gradients
(policy and critic together) are clipped to one global norm and the duals' to another, as Acme's learner
does. Metrics stay on the device as 0-d tensors (no host sync inside the update); convert with
:func:`metrics_to_floats` when logging.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from mpo_ros.config import option
from mpo_ros.errors import CheckpointError, ConfigError
from mpo_ros.mpo import losses
from mpo_ros.mpo.batch import SequenceBatch
from mpo_ros.mpo.compilation import CompiledOrEager
from mpo_ros.mpo.networks import (
    CRITIC_TYPES,
    TORSOS,
    CategoricalCritic,
    Critic,
    GaussianParams,
    GaussianPolicy,
    ObservationNormalizer,
)

__all__ = [
    "Duals",
    "MPOConfig",
    "MPOLearner",
    "UpdateTargets",
    "build_critic",
    "build_policy",
    "metrics_to_floats",
    "tune_cpu_allocator",
]


@dataclasses.dataclass
class MPOConfig:
    """Algorithm hyperparameters. Defaults cite their source; "Acme" = acme/agents/jax/mpo (config.py,
    types.py GaussianPolicyLossConfig), "Tonic" = tonic/torch/agents/mpo.py + updaters (Pardo 2020), which
    was tuned on the same gym MuJoCo tasks we benchmark."""

    discount: float = option(0.99, "discount factor gamma (Acme, Tonic: 0.99)")
    n_step: int = option(5, "steps of the n-step TD target / Retrace sequence length (Acme, Tonic: 5)")
    num_samples: int = option(20, "actions sampled per state for the E-step and the bootstrap (Acme: 20)")
    epsilon: float = option(0.1, "E-step bound on KL(q || pi_old) (MPO paper, Acme, Tonic: 0.1)")
    epsilon_mean: float = option(
        0.01,
        "M-step bound on the mean KL for the whole action; with per-dim constraining each dimension gets "
        "epsilon_mean / D (Acme bounds each dimension by 0.0025, Tonic by 0.001: 0.01 / 6 = 0.0017 for "
        "HalfCheetah, between the two, and the bound no longer grows with D)",
    )
    epsilon_stddev: float = option(
        1e-5,
        "M-step bound on the scale KL for the whole action, split per dimension like epsilon_mean "
        "(Acme, Tonic: 1e-6 per dimension)",
    )
    epsilon_penalty: float = option(
        1e-3, "E-step KL bound of the action-penalty objective (MO-MPO; Acme, Tonic: 0.001)"
    )
    per_dim_constraining: bool = option(
        True, "one trust region (and multiplier) per action dimension (Acme, Tonic default: on)"
    )
    action_penalization: bool = option(
        True, "keep actions in [-1, 1] with MO-MPO's penalty objective instead of squashing (Acme, Tonic: on)"
    )
    init_log_temperature: float = option(1.0, "initial softplus parameter of the temperature (Tonic: 1)")
    init_log_alpha_mean: float = option(1.0, "initial softplus parameter of the mean multiplier (Tonic: 1)")
    init_log_alpha_stddev: float = option(
        10.0, "initial softplus parameter of the scale multiplier (Tonic: 10; Acme: 1000)"
    )
    min_log_dual: float = option(
        -18.0, "floor on every dual's softplus parameter, so a dual never reaches 0 (Acme, Tonic: -18)"
    )
    policy_lr: float = option(3e-4, "Adam learning rate of the policy (Tonic: 3e-4; Acme: 1e-4)")
    critic_lr: float = option(3e-4, "Adam learning rate of the critic (Tonic: 3e-4; Acme: 1e-4)")
    dual_lr: float = option(1e-2, "Adam learning rate of the dual variables (Acme, Tonic: 1e-2)")
    grad_norm_clip: float = option(
        40.0,
        "clip the gradient of policy and critic together to this global norm, and the duals' gradient to its "
        "own; 0 disables (Acme: 40, the same two clips)",
    )
    target_update: str = option(
        "polyak",
        "target networks: 'polyak' (exponential average, Tonic) or 'hard' (copy every period, Acme)",
        choices=("polyak", "hard"),
    )
    target_update_period: int = option(100, "updates between hard target copies (Acme: 100)")
    target_tau: float = option(0.005, "Polyak rate of the target networks (Tonic: 0.005)")
    torso: str = option(
        "layernorm",
        "network torso: 'layernorm' (Acme LayerNormMLP: Linear-LayerNorm-tanh, then ELU) or 'relu'",
        choices=TORSOS,
    )
    policy_hidden: list[int] = option([256, 256], "policy hidden layer sizes (Tonic: 256, 256)")  # noqa: RUF009
    critic_hidden: list[int] = option([256, 256], "critic hidden layer sizes (Tonic: 256, 256)")  # noqa: RUF009
    init_scale: float = option(0.3, "initial policy stddev in normalised action units (Acme: 0.3)")
    min_scale: float = option(1e-6, "floor on the policy stddev (Acme: 1e-6)")
    full_covariance: bool = option(
        False, "full Cholesky covariance policy (MPO 2018a); needs per_dim_constraining false"
    )
    critic_type: str = option(
        "scalar",
        "critic: 'scalar' Q regressed on its target, or 'categorical' return distribution over critic_atoms "
        "fixed atoms trained by cross-entropy (Acme's DMPO; Acme's jax default, a Gaussian mixture, is not "
        "implemented here)",
        choices=CRITIC_TYPES,
    )
    critic_atoms: int = option(
        51, "atoms of the categorical critic's support (C51; Acme's TF D4PG / DMPO examples: 51)"
    )
    critic_vmin: float = option(
        -300.0,
        "lowest atom of the categorical critic (return units). The support [critic_vmin, critic_vmax] must "
        "cover the task's discounted returns, about r_per_step / (1 - discount); a value outside is clipped "
        "to the edge atom (watch q/target_edge_mass). -300: the lower edge of Acme jax's categorical head "
        "(601 atoms on [-300, 300]), room for gym MuJoCo agents moving backwards at -3 per step at gamma 0.99",
    )
    critic_vmax: float = option(
        1500.0,
        "highest atom of the categorical critic (return units); must cover the task's discounted returns. "
        "1500: gym MuJoCo locomotion reaches ~12 reward per step (HalfCheetah), 12 / (1 - 0.99) = 1200, plus "
        "headroom (Acme's +300 is sized for Control Suite rewards <= 1 per step)",
    )
    retrace: bool = option(
        False, "Retrace(lambda) critic targets instead of n-step; scalar critic only (Acme: off)"
    )
    retrace_lambda: float = option(0.95, "Retrace trace-decay lambda (Acme: 0.95)")
    normalize_observations: bool = option(
        True, "standardise observations with running statistics (Tonic: on)"
    )
    device: str = option("cpu", "torch device for the learner: cpu or cuda", choices=("cpu", "cuda"))
    policy_states: str = option(
        "auto",
        "states the E-step and M-step fit the policy on. 'bootstrap': the n-step bootstrap states s_t+n, "
        "whose sampled target-critic values the critic target needs anyway, so one sampled pass over B states "
        "serves both (Acme shares its samples the same way); bootstrap states after a true terminal or of "
        "sequences cut short by an episode end are masked out and the sequences starting within an episode's "
        "first n_step steps add their first state, so every stored state is fitted once. 'sequence_start': "
        "each sequence's first state, with a second sampled pass over the bootstrap states (2B rows, about "
        "1.4x the update time). 'auto': bootstrap with n-step targets, sequence_start with Retrace (which has "
        "no shared bootstrap pass)",
        choices=("auto", "sequence_start", "bootstrap"),
    )
    smoothness_temporal: float = option(
        0.0,
        "weight of CAPS' temporal smoothness term ||mu(s_t) - mu(s_t+1)|| in the M-step (Mysore et al. 2021; "
        "0: off, and the update is unchanged bit for bit)",
    )
    smoothness_spatial: float = option(
        0.0, "weight of CAPS' spatial smoothness term ||mu(s) - mu(s + noise)|| in the M-step (0: off)"
    )
    smoothness_sigma: float = option(
        0.05, "std of the spatial term's state noise, in normalised observation units"
    )
    compile: bool = option(
        False,
        "torch.compile the sampled target-critic pass (N x 2B rows, most of an update's time): fuses the "
        "LayerNorm/tanh/ELU passes; costs ~10-20 s of compilation at the first update and needs a C++ "
        "compiler on CPU (falls back to eager, with a warning, when compilation fails)",
    )

    def __post_init__(self) -> None:
        self.policy_hidden = [int(h) for h in self.policy_hidden]
        self.critic_hidden = [int(h) for h in self.critic_hidden]
        if self.policy_states == "auto":
            self.policy_states = "sequence_start" if self.retrace else "bootstrap"
        problems = []
        for name in ("smoothness_temporal", "smoothness_spatial"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0 (0 turns the term off)")
        if not self.smoothness_sigma > 0:
            problems.append(f"smoothness_sigma={self.smoothness_sigma} must be > 0")
        if self.full_covariance and self.per_dim_constraining:
            problems.append(
                "full_covariance=True needs per_dim_constraining=False (a per-dimension KL is undefined for a "
                "correlated Gaussian)"
            )
        for name in ("epsilon", "epsilon_mean", "epsilon_stddev", "epsilon_penalty"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        if not 0.0 <= self.discount <= 1.0:
            problems.append(f"discount={self.discount} must lie in [0, 1]")
        if self.n_step < 1 or self.num_samples < 1:
            problems.append(f"n_step={self.n_step} and num_samples={self.num_samples} must be >= 1")
        if not 0.0 < self.target_tau <= 1.0:
            problems.append(f"target_tau={self.target_tau} must lie in (0, 1]")
        if self.target_update_period < 1:
            problems.append(f"target_update_period={self.target_update_period} must be >= 1")
        if self.policy_states == "bootstrap" and self.retrace:
            problems.append(
                "policy_states='bootstrap' shares the n-step bootstrap pass, which Retrace does not have; use "
                "policy_states='sequence_start' with retrace=True"
            )
        if not self.policy_hidden or not self.critic_hidden:
            problems.append("policy_hidden and critic_hidden need at least one layer size each")
        problems += self._critic_problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _critic_problems(self) -> list[str]:
        problems = []
        if self.critic_type not in CRITIC_TYPES:
            problems.append(f"critic_type={self.critic_type!r} must be one of {CRITIC_TYPES}")
        if self.critic_atoms < 2:
            problems.append(f"critic_atoms={self.critic_atoms} must be >= 2")
        if not self.critic_vmin < self.critic_vmax:
            problems.append(f"critic_vmin={self.critic_vmin} must be < critic_vmax={self.critic_vmax}")
        if self.retrace and self.critic_type == "categorical":
            # Retrace adds trace-weighted differences (G - Q) of returns; for distributions those are signed
            # measures, not distributions, so the C51 projection does not apply. A distributional Retrace is a
            # different operator (Tang et al. 2022); Acme refuses this combination too.
            problems.append(
                "retrace=True needs critic_type='scalar': Retrace's corrections are not distributions and have "
                "no categorical projection; use n-step targets (retrace false) with the categorical critic"
            )
        return problems

    @classmethod
    def from_any(cls, config: Any) -> MPOConfig:
        """Pick this class's fields out of a larger config (e.g. ``TrainConfig``) or a dict."""
        get = config.get if isinstance(config, dict) else lambda k, d: getattr(config, k, d)
        values = {}
        for f in dataclasses.fields(cls):
            value = get(f.name, dataclasses.MISSING)
            if value is not dataclasses.MISSING:
                values[f.name] = list(value) if isinstance(value, tuple) else value
        return cls(**values)


def build_policy(obs_dim: int, act_dim: int, config: MPOConfig) -> GaussianPolicy:
    return GaussianPolicy(
        obs_dim,
        act_dim,
        hidden=config.policy_hidden,
        torso=config.torso,
        init_scale=config.init_scale,
        min_scale=config.min_scale,
        full_covariance=config.full_covariance,
    )


def build_critic(obs_dim: int, act_dim: int, config: MPOConfig) -> Critic | CategoricalCritic:
    if config.critic_type == "categorical":
        return CategoricalCritic(
            obs_dim,
            act_dim,
            config.critic_hidden,
            config.torso,
            atoms=config.critic_atoms,
            vmin=config.critic_vmin,
            vmax=config.critic_vmax,
        )
    return Critic(obs_dim, act_dim, config.critic_hidden, config.torso)


class UpdateTargets(NamedTuple):
    """What one update takes from the target networks (computed under ``no_grad``).

    ``prior`` is what the E-step samples and bounds KL(q || prior) against; ``anchor`` is pi_old, the centre
    of the M-step trust regions. Both are the target policy in plain MPO; with a prior (ABM) they differ.
    ``state_weights`` [B] is 0 for policy states the E-step and M-step must ignore, or None (keep all)."""

    prior: GaussianParams  # at policy_obs
    anchor: GaussianParams  # at policy_obs
    sampled: torch.Tensor  # [N, B, D] actions from the prior
    q_sampled: torch.Tensor  # [N, B] their target-critic values
    critic_target: torch.Tensor  # [B] (scalar critic) or [B, A] probabilities (categorical)
    policy_obs: torch.Tensor  # [B, O] the states the policy is fitted on
    state_weights: torch.Tensor | None  # [B]


class Duals(nn.Module):
    """The Lagrange multipliers, stored as softplus parameters (see :func:`losses.dual_value`)."""

    def __init__(self, act_dim: int, config: MPOConfig) -> None:
        super().__init__()
        per_dim = (act_dim,) if config.per_dim_constraining else ()
        self.log_temperature = nn.Parameter(torch.tensor(config.init_log_temperature))
        self.log_penalty_temperature = nn.Parameter(torch.tensor(config.init_log_temperature))
        self.log_alpha_mean = nn.Parameter(torch.full(per_dim, config.init_log_alpha_mean))
        self.log_alpha_stddev = nn.Parameter(torch.full(per_dim, config.init_log_alpha_stddev))

    @torch.no_grad()
    def clamp_(self, floor: float) -> None:
        for p in self.parameters():
            p.clamp_(min=floor)


def tune_cpu_allocator(threshold_bytes: int = 1 << 30) -> bool:
    """Keep large CPU tensors in glibc's heap instead of fresh ``mmap`` pages; returns whether it applied.

    Why: one update allocates several ~10 MB activations ([N * 2B, 256] floats for the sampled target-critic
    pass). glibc serves blocks above its mmap threshold with new mappings, so every update page-faults and
    zero-fills ~100 MB and gives it back; profiling showed this doubling the update time. Raising the mmap and
    trim thresholds (``mallopt``) lets freed blocks be reused. Process-wide and one-way (the heap does not
    shrink below its peak), so the training command opts in, not the library import. No-op off glibc.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, threshold_bytes)) and bool(
            libc.mallopt(m_trim_threshold, threshold_bytes)
        )
    except (OSError, AttributeError):
        return False


def metrics_to_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """One host transfer for all metrics (call only when logging)."""
    if not metrics:
        return {}
    values = torch.stack([v.float().reshape(()) for v in metrics.values()]).cpu().tolist()
    return dict(zip(metrics.keys(), values, strict=True))


class MPOLearner:
    """Networks + targets + duals + optimisers; :meth:`state_dict` is the whole training state.

    ``prior``: optional module mapping normalised observations [B, O] to :class:`GaussianParams`; when set,
    the E-step samples from it and bounds KL(q || prior) instead of KL(q || target policy), while the M-step
    trust regions stay around pi_old, the target policy (ABM+MPO, Siegel et al. 2020: the prior decides which
    actions are considered, the trust region how far one update may move the policy). Anchoring the M-step
    at the prior instead leashes the policy to it at sqrt(epsilon_mean / epsilon) of the E-step's own step.
    Its parameters are not trained here.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: MPOConfig) -> None:
        self.config = config
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device=cuda but torch sees no CUDA device; use --device cpu")
        dev = self.device
        self.policy = build_policy(obs_dim, act_dim, config).to(dev)
        self.critic = build_critic(obs_dim, act_dim, config).to(dev)
        self.target_policy = copy.deepcopy(self.policy).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.normalizer = ObservationNormalizer(obs_dim).to(dev)
        self.duals = Duals(act_dim, config).to(dev)
        self.prior: nn.Module | None = None
        # Three optimisers, so no dual ever shares Adam moments or a learning rate with a network; each is
        # `fused` (one kernel per step instead of one per parameter tensor).
        self.actor_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.policy_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr, fused=True)
        self.dual_optimizer = torch.optim.Adam(self.duals.parameters(), lr=config.dual_lr, fused=True)
        self.num_updates = 0
        self._warned_unknown_behaviour = False
        self._online_params = [*self.policy.parameters(), *self.critic.parameters()]
        self._target_params = [*self.target_policy.parameters(), *self.target_critic.parameters()]
        # Target-critic outputs for N sampled actions per state (values, or logits for the categorical
        # critic): the update's hot path.
        sampled_pass = (
            self.target_critic.sampled_logits
            if isinstance(self.target_critic, CategoricalCritic)
            else self.target_critic.sampled
        )
        self._target_sampled = CompiledOrEager(sampled_pass, "the sampled target-critic pass", config.compile)

    # --- acting --------------------------------------------------------------------------------------

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return self.normalizer(obs) if self.config.normalize_observations else obs

    def observe(self, observations: np.ndarray) -> None:
        """Update the observation statistics with new environment observations [O] or [B, O]."""
        if self.config.normalize_observations:
            self.normalizer.update(torch.as_tensor(observations, dtype=torch.float32, device=self.device))

    @torch.no_grad()
    def act(self, observation: np.ndarray, deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Action(s) for raw observation(s) [O] or [B, O]: a sample from pi (or clamp(mean) when
        ``deterministic``) and its log-density (for Retrace; 0 when deterministic). Samples are not clipped:
        the environment wrapper clips, the replay stores what the policy drew."""
        obs = torch.as_tensor(observation, dtype=torch.float32, device=self.device)
        single = obs.dim() == 1
        dist = self.policy(self.normalize(obs.reshape(-1, self.obs_dim)))
        if deterministic:
            action = dist.mean.clamp(-1.0, 1.0)
            logp = torch.zeros(action.shape[0], device=self.device)
        else:
            action = _sample(dist, 1)[0]
            logp = losses.log_prob(dist, action.unsqueeze(0))[0]
        action_np, logp_np = action.cpu().numpy(), logp.cpu().numpy()
        return (action_np[0], logp_np[0]) if single else (action_np, logp_np)

    # --- learning ------------------------------------------------------------------------------------

    def _prior(self, obs: torch.Tensor) -> GaussianParams:
        module = self.prior if self.prior is not None else self.target_policy
        return module(obs)

    def _to_device(self, batch: SequenceBatch) -> SequenceBatch:
        return SequenceBatch(
            *(torch.from_numpy(np.ascontiguousarray(x)).to(self.device, non_blocking=True) for x in batch)
        )

    def update(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        """One gradient step of critic, policy and duals on ``batch``; returns 0-d metric tensors."""
        cfg = self.config
        if cfg.retrace:
            self._warn_if_behaviour_unknown(batch)
        total, metrics = self._loss(self._to_device(batch))
        self.actor_optimizer.zero_grad(set_to_none=True)
        self.critic_optimizer.zero_grad(set_to_none=True)
        self.dual_optimizer.zero_grad(set_to_none=True)
        total.backward()
        metrics["opt/grad_norm"] = self._clip(self._online_params)
        metrics["opt/dual_grad_norm"] = self._clip(self.duals.parameters())
        self.actor_optimizer.step()
        self.critic_optimizer.step()
        self.dual_optimizer.step()
        self.duals.clamp_(cfg.min_log_dual)
        self.num_updates += 1
        self._update_targets()
        return metrics

    def _loss(self, b: SequenceBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The summed critic, policy and dual losses of one update (device tensors in, no optimiser state
        touched) and the update's metrics: a function of the networks, the duals and ``b`` only, so the
        step around it (backward, clipping, optimisers, targets) stays separate and can be timed apart."""
        cfg = self.config
        obs = self.normalize(b.observations[:, 0])
        action = b.actions[:, 0]

        with torch.no_grad():
            t = self._retrace_targets(b, obs) if cfg.retrace else self._n_step_targets(b, obs)

        # Policy evaluation.
        loss_critic, critic_stats = self._critic_loss(obs, action, t.critic_target)

        # E-step.
        loss_dual, weights, temp_stats, metrics = self._e_step(t)

        # M-step: fit the E-step's samples inside trust regions around pi_old.
        online = self.policy(t.policy_obs)
        loss_ce, ce_stats = losses.weighted_cross_entropy(
            t.sampled, weights, t.anchor, online, t.state_weights
        )
        kl_mean, kl_stddev = losses.decoupled_kl(t.anchor, online, cfg.per_dim_constraining)
        loss_kl_mean, loss_alpha_mean, mean_stats = losses.trust_region_loss(
            kl_mean, self.duals.log_alpha_mean, cfg.epsilon_mean, t.state_weights
        )
        loss_kl_std, loss_alpha_std, std_stats = losses.trust_region_loss(
            kl_stddev, self.duals.log_alpha_stddev, cfg.epsilon_stddev, t.state_weights
        )
        loss_policy = loss_ce + loss_kl_mean + loss_kl_std
        loss_dual = loss_dual + loss_alpha_mean + loss_alpha_std
        if cfg.smoothness_temporal > 0 or cfg.smoothness_spatial > 0:
            loss_smooth, smooth_stats = self._smoothness(obs, b)
            loss_policy = loss_policy + loss_smooth
            metrics["loss/smoothness_temporal"] = smooth_stats.temporal
            metrics["loss/smoothness_spatial"] = smooth_stats.spatial

        std = online.stddev().detach()
        metrics.update(
            {
                "loss/critic": loss_critic.detach(),
                "loss/policy": loss_policy.detach(),
                "loss/policy_mean": ce_stats.loss_mean,
                "loss/policy_stddev": ce_stats.loss_stddev,
                "loss/dual": loss_dual.detach(),
                "dual/temperature": temp_stats.temperature,
                "kl_rel/temperature": temp_stats.kl_q_pi / cfg.epsilon,
                "kl_rel/mean": mean_stats.kl_relative,
                "kl_rel/stddev": std_stats.kl_relative,
                "q/mean": critic_stats.q_mean,
                "q/min": critic_stats.q_min,
                "q/max": critic_stats.q_max,
                "q/target_mean": critic_stats.target_mean,
                "policy/std_min": std.min(),
                "policy/std_max": std.max(),
            }
        )
        if isinstance(critic_stats, losses.CategoricalCriticStats):
            metrics["q/target_edge_mass"] = critic_stats.target_edge_mass
        for name, stats in (("alpha_mean", mean_stats), ("alpha_stddev", std_stats)):
            if stats.alpha.dim() == 0:
                metrics[f"dual/{name}"] = stats.alpha
            else:
                for i in range(stats.alpha.shape[0]):
                    metrics[f"dual/{name}_{i}"] = stats.alpha[i]
        return loss_critic + loss_policy + loss_dual, metrics

    def _e_step(
        self, t: UpdateTargets
    ) -> tuple[torch.Tensor, torch.Tensor, losses.TemperatureStats, dict[str, torch.Tensor]]:
        """The temperature dual(s) and the sample weights of q: one objective (the critic's Q), plus MO-MPO's
        action-penalty objective with its own temperature when ``action_penalization`` is on; the weights of
        the objectives add up. Returns (dual loss, weights [N, R], the Q objective's stats, metrics)."""
        cfg = self.config
        loss_dual, weights, temp_stats = losses.temperature_loss(
            t.q_sampled, self.duals.log_temperature, cfg.epsilon, t.state_weights
        )
        metrics: dict[str, torch.Tensor] = {}
        if cfg.action_penalization:
            loss_pen, pen_weights, pen_stats = losses.temperature_loss(
                losses.action_penalty(t.sampled),
                self.duals.log_penalty_temperature,
                cfg.epsilon_penalty,
                t.state_weights,
            )
            weights = weights + pen_weights
            loss_dual = loss_dual + loss_pen
            metrics["dual/penalty_temperature"] = pen_stats.temperature
            metrics["kl_rel/penalty"] = pen_stats.kl_q_pi / cfg.epsilon_penalty
        return loss_dual, weights, temp_stats, metrics

    def _smoothness(self, obs: torch.Tensor, b: SequenceBatch) -> tuple[torch.Tensor, losses.SmoothnessStats]:
        """CAPS terms on the sequences' first states: s_t+1 from the replay, s + noise drawn here (only
        when its weight is set, so a zero weight draws no random numbers)."""
        cfg = self.config
        mean = self.policy(obs).mean
        mean_next = mean_perturbed = None
        if cfg.smoothness_temporal > 0:
            mean_next = self.policy(self.normalize(b.next_observations[:, 0])).mean
        if cfg.smoothness_spatial > 0:
            mean_perturbed = self.policy(obs + cfg.smoothness_sigma * torch.randn_like(obs)).mean
        return losses.smoothness_loss(
            mean, mean_next, mean_perturbed, cfg.smoothness_temporal, cfg.smoothness_spatial
        )

    def _critic_loss(
        self, obs: torch.Tensor, action: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, losses.CriticStats | losses.CategoricalCriticStats]:
        if isinstance(self.critic, CategoricalCritic):
            return losses.categorical_critic_loss(
                self.critic.logits(obs, action), target, self.critic.support
            )
        return losses.critic_loss(self.critic(obs, action), target)

    def metric_names(self) -> list[str]:
        """The keys :meth:`update` returns (fixed by the config), e.g. for a CSV header."""
        names = [
            "loss/critic", "loss/policy", "loss/policy_mean", "loss/policy_stddev", "loss/dual",
            "dual/temperature", "kl_rel/temperature", "kl_rel/mean", "kl_rel/stddev",
            "q/mean", "q/min", "q/max", "q/target_mean", "policy/std_min", "policy/std_max",
        ]  # fmt: skip
        if self.config.critic_type == "categorical":
            names.append("q/target_edge_mass")
        if self.config.smoothness_temporal > 0 or self.config.smoothness_spatial > 0:
            names = ["loss/smoothness_temporal", "loss/smoothness_spatial", *names]
        if self.config.action_penalization:
            names = ["dual/penalty_temperature", "kl_rel/penalty", *names]
        for name in ("alpha_mean", "alpha_stddev"):
            if self.config.per_dim_constraining:
                names += [f"dual/{name}_{i}" for i in range(self.act_dim)]
            else:
                names.append(f"dual/{name}")
        return [*names, "opt/grad_norm", "opt/dual_grad_norm"]

    def _n_step_targets(self, b: SequenceBatch, obs: torch.Tensor) -> UpdateTargets:
        """Targets with the n-step critic target ([B] for the scalar critic, probabilities [B, A] for the
        categorical one); the policy states are those of ``policy_states``.

        Every state that needs sampled values goes through the target critic in one pass: [policy states;
        bootstrap states] (2B), or for 'bootstrap' without a prior the policy states alone, whose first B
        rows are the bootstrap states: one set of target-policy samples serves both the E-step and the
        critic's bootstrap. See :meth:`_bootstrap_policy_states` for which states that layout fits."""
        cfg = self.config
        batch_size = obs.shape[0]
        last = (b.mask.sum(1).long() - 1).clamp_min(0)
        boot_obs = self.normalize(b.next_observations[torch.arange(batch_size, device=obs.device), last])
        at_bootstrap = cfg.policy_states == "bootstrap"
        state_weights = None
        policy_obs = obs
        if at_bootstrap:
            policy_obs, state_weights = self._bootstrap_policy_states(b, obs, boot_obs)
        rows = policy_obs.shape[0]
        if self.prior is None and at_bootstrap:
            prior = anchor = self.target_policy(policy_obs)
            sampled = _sample(prior, cfg.num_samples)  # [N, B + k, D]
            states, actions = policy_obs, sampled
            first, rest = slice(None), slice(0, batch_size)
        elif self.prior is None:
            states = torch.cat([obs, boot_obs])
            both = self.target_policy(states)
            actions = _sample(both, cfg.num_samples)  # [N, 2B, D]
            prior = anchor = GaussianParams(both.mean[:batch_size], both.scale[:batch_size])
            sampled = actions[:, :batch_size]
            first, rest = slice(0, batch_size), slice(batch_size, None)
        else:
            prior = self.prior(policy_obs)
            sampled = _sample(prior, cfg.num_samples)
            if at_bootstrap:
                anchor = self.target_policy(policy_obs)
                boot_policy = GaussianParams(anchor.mean[:batch_size], anchor.scale[:batch_size])
            else:
                both = self.target_policy(torch.cat([obs, boot_obs]))
                anchor = GaussianParams(both.mean[:batch_size], both.scale[:batch_size])
                boot_policy = GaussianParams(both.mean[batch_size:], both.scale[batch_size:])
            boot_actions = _sample(boot_policy, cfg.num_samples)
            states, actions = torch.cat([policy_obs, boot_obs]), torch.cat([sampled, boot_actions], dim=1)
            first, rest = slice(0, rows), slice(rows, None)
        q_sampled, bootstrap = self._sampled_values(states, actions, first, rest)
        critic_target = self._n_step_target(b, bootstrap)
        return UpdateTargets(prior, anchor, sampled, q_sampled, critic_target, policy_obs, state_weights)

    @staticmethod
    def _bootstrap_policy_states(
        b: SequenceBatch, obs: torch.Tensor, boot_obs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The 'bootstrap' layout's policy states [B + k, O] and their weights [B + k].

        A sequence starting at t bootstraps from s_{t+n}. Fitting the policy on those states alone would
        never visit the first n states of an episode and would visit an episode's last state n times (every
        sequence cut short by the episode's end bootstraps from it). So a bootstrap state counts (weight 1)
        only when its sequence has full length and did not end in a true terminal, and the k sequences that
        start within the first n steps of their run (``near_start``) add their first state. Over all starts,
        every non-terminal stored state is then fitted exactly once: the policy sees the replay's state
        distribution, as with 'sequence_start', at 1 + k/B times the cost of one sampled pass over B."""
        full = b.mask[:, -1]
        boot_weights = full * (1.0 - losses.ended_in_terminal(b.mask, b.terminated))
        start_rows = torch.nonzero(b.near_start > 0).squeeze(1)
        policy_obs = torch.cat([boot_obs, obs[start_rows]])
        weights = torch.cat(
            [boot_weights, torch.ones(start_rows.shape[0], dtype=obs.dtype, device=obs.device)]
        )
        return policy_obs, weights

    def _sampled_values(
        self, states: torch.Tensor, actions: torch.Tensor, policy_rows: slice, bootstrap_rows: slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target-critic Q [N, B] of the samples at ``policy_rows``, and the bootstrap from the samples at
        ``bootstrap_rows`` (target-policy samples): the mean Q [B], or for the categorical critic the
        mixture (mean of the probabilities) [B, A] of the N samples' return distributions, whose mean is that
        same mean Q."""
        out = self._target_sampled(states, actions)  # [N, R] values or [N, R, A] logits
        if isinstance(self.target_critic, CategoricalCritic):
            probs = torch.softmax(out, dim=-1)
            return probs[:, policy_rows] @ self.target_critic.support, probs[:, bootstrap_rows].mean(0)
        return out[:, policy_rows], out[:, bootstrap_rows].mean(0)

    def _n_step_target(self, b: SequenceBatch, bootstrap: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if isinstance(self.target_critic, CategoricalCritic):
            return losses.categorical_n_step_target(
                b.rewards, b.mask, b.terminated, bootstrap, self.target_critic.support, cfg.discount
            )
        return losses.n_step_return(b.rewards, b.mask, b.terminated, bootstrap, cfg.discount)

    def _retrace_targets(self, b: SequenceBatch, obs: torch.Tensor) -> UpdateTargets:
        """Targets with the Retrace(lambda) critic target [B]; the policy is fitted on the sequence starts.

        A sequence whose behaviour log-probabilities are unknown (NaN: logged data, recorded without the
        acting policy's density) gets the n-step target, built from the same bootstrap values: Retrace's
        traces need pi / mu, and the former c = lambda there was Q(lambda), which is not safe off-policy
        (Munos et al. 2016, Sec. 3). :meth:`update` warns once when it happens."""
        cfg = self.config
        batch_size, length = b.rewards.shape
        prior = self._prior(obs)
        anchor = prior if self.prior is None else self.target_policy(obs)
        sampled = _sample(prior, cfg.num_samples)
        q_sampled = self._target_sampled(obs, sampled)
        seq_obs = self.normalize(b.observations.reshape(batch_size * length, -1))
        next_obs = self.normalize(b.next_observations.reshape(batch_size * length, -1))
        next_dist = self.target_policy(next_obs)
        next_actions = _sample(next_dist, cfg.num_samples)
        next_values = self._target_sampled(next_obs, next_actions).mean(0).reshape(batch_size, length)
        seq_actions = b.actions.reshape(batch_size * length, -1)
        q_taken = self.target_critic(seq_obs, seq_actions)
        log_pi = losses.log_prob(self.target_policy(seq_obs), seq_actions.unsqueeze(0))[0]
        behaviour = b.behaviour_log_probs
        unknown = torch.isnan(behaviour)
        log_ratio = torch.where(unknown, 0.0, log_pi.reshape(batch_size, length) - behaviour)
        retrace = losses.retrace_targets(
            b.rewards,
            b.mask,
            b.terminated,
            q_taken.reshape(batch_size, length),
            next_values,
            log_ratio,
            cfg.discount,
            cfg.retrace_lambda,
        )
        last = (b.mask.sum(1).long() - 1).clamp_min(0).unsqueeze(1)
        n_step = losses.n_step_return(
            b.rewards, b.mask, b.terminated, next_values.gather(1, last).squeeze(1), cfg.discount
        )
        # Only the traces c_1..c_{m-1} use a ratio (step 0 is the evaluated action).
        needs_fallback = (unknown[:, 1:] & (b.mask[:, 1:] > 0)).any(1)
        target = torch.where(needs_fallback, n_step, retrace)
        return UpdateTargets(prior, anchor, sampled, q_sampled, target, obs, None)

    def _warn_if_behaviour_unknown(self, batch: SequenceBatch) -> None:
        """Say once per learner that Retrace falls back to n-step targets (checked on the host arrays, so
        the update keeps no device sync)."""
        if self._warned_unknown_behaviour:
            return
        unknown = np.isnan(batch.behaviour_log_probs[:, 1:]) & (batch.mask[:, 1:] > 0)
        if unknown.any():
            self._warned_unknown_behaviour = True
            warnings.warn(
                f"retrace=True but {int(unknown.any(1).sum())} of {len(unknown)} sampled sequences have no "
                "behaviour log-probabilities (logged data, or recorded without the acting policy's density): "
                "those get n-step targets instead of Retrace. Record log-probabilities with the actions to "
                "use Retrace on them; this warning is shown once per learner.",
                UserWarning,
                stacklevel=3,
            )

    def _clip(self, parameters: Iterable[nn.Parameter]) -> torch.Tensor:
        """Clip the gradients of ``parameters`` to one global norm; returns the norm before clipping."""
        params = [p for p in parameters if p.grad is not None]
        if self.config.grad_norm_clip > 0:
            return torch.nn.utils.clip_grad_norm_(params, self.config.grad_norm_clip, foreach=True)
        return torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)

    @torch.no_grad()
    def _update_targets(self) -> None:
        cfg = self.config
        if cfg.target_update == "polyak":
            torch._foreach_lerp_(self._target_params, self._online_params, cfg.target_tau)
        elif self.num_updates % cfg.target_update_period == 0:
            torch._foreach_copy_(self._target_params, self._online_params)

    # --- checkpointing -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training bit-for-bit (tensors, primitives and dicts only)."""
        return {
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": _config_dict(self.config),
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "target_policy": self.target_policy.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "duals": self.duals.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "dual_optimizer": self.dual_optimizer.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["obs_dim"], state["act_dim"]) != (self.obs_dim, self.act_dim):
            raise CheckpointError(
                f"checkpoint is for obs_dim={state['obs_dim']}, act_dim={state['act_dim']}, this learner has "
                f"obs_dim={self.obs_dim}, act_dim={self.act_dim}: resume with the same environment"
            )
        self._check_critic_matches(state.get("config", {}))
        try:
            for name in ("policy", "critic", "target_policy", "target_critic", "normalizer", "duals"):
                getattr(self, name).load_state_dict(state[name])
            for name in ("actor_optimizer", "critic_optimizer", "dual_optimizer"):
                # deepcopy: torch's optimiser load keeps the given tensors, which would alias the source's state
                getattr(self, name).load_state_dict(copy.deepcopy(state[name]))
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint does not match this learner's networks ({exc}); were torso, hidden sizes, "
                "full_covariance or per_dim_constraining changed since it was written?"
            ) from exc
        self.num_updates = int(state["num_updates"])

    def _check_critic_matches(self, saved: dict[str, Any]) -> None:
        """A categorical critic's meaning lives in its support (not stored in its weights): refuse to load one
        whose critic type, atoms or support differ, instead of silently reinterpreting its logits.
        Checkpoints written before the categorical critic existed hold a scalar one."""
        fields = ("critic_type", "critic_atoms", "critic_vmin", "critic_vmax")
        defaults = {"critic_type": "scalar"}
        if saved.get("critic_type", "scalar") == "scalar" and self.config.critic_type == "scalar":
            return
        mismatched = [
            f"{name}: checkpoint {saved.get(name, defaults.get(name))!r}, learner {getattr(self.config, name)!r}"
            for name in fields
            if saved.get(name, defaults.get(name)) != getattr(self.config, name)
        ]
        if mismatched:
            raise CheckpointError(
                f"checkpoint critic does not match this learner's ({'; '.join(mismatched)}): resume with the "
                "checkpoint's critic_type, critic_atoms, critic_vmin and critic_vmax"
            )


def _config_dict(config: MPOConfig) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def _sample(dist: GaussianParams, num: int) -> torch.Tensor:
    """``num`` reparameterised samples [num, B, D] (no gradient is needed: callers run under no_grad)."""
    noise = torch.randn((num, *dist.mean.shape), dtype=dist.mean.dtype, device=dist.mean.device)
    if dist.full_covariance:
        return dist.mean + (dist.scale @ noise.unsqueeze(-1)).squeeze(-1)
    return dist.mean + dist.scale * noise
