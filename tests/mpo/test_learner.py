"""The learner's update under every flag, target updates, state round trips, and the prior seam."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from mpo_fixtures import random_replay, seeded_learner
from torch import nn

from mpo_ros.errors import ConfigError
from mpo_ros.mpo.batch import SequenceBatch
from mpo_ros.mpo.learner import MPOConfig, MPOLearner, metrics_to_floats
from mpo_ros.mpo.networks import GaussianParams, GaussianPolicy
from mpo_ros.training.replay import ReplayBuffer

torch.set_num_threads(1)
OBS, ACT = 5, 2
SMALL = dict(policy_hidden=[16, 16], critic_hidden=[16, 16], num_samples=4, n_step=3)


def _replay(seed: int = 0) -> ReplayBuffer:
    return random_replay(OBS, ACT, seed)


def _learner(**overrides: object) -> MPOLearner:
    return seeded_learner(OBS, ACT, **{**SMALL, **overrides})


FLAGS = [
    {},
    {"per_dim_constraining": False},
    {"action_penalization": False},
    {"full_covariance": True, "per_dim_constraining": False},
    {"retrace": True},
    {"target_update": "hard", "target_update_period": 2},
    {"torso": "relu", "normalize_observations": False, "grad_norm_clip": 0.0},
    {"policy_states": "bootstrap"},
    {"policy_states": "bootstrap", "full_covariance": True, "per_dim_constraining": False},
]


def _max_step(before: list[torch.Tensor], module: torch.nn.Module) -> float:
    return max((b - a).abs().max().item() for b, a in zip(before, module.parameters(), strict=True))


@pytest.mark.filterwarnings("ignore:retrace=True but:UserWarning")  # the fixture mixes logged episodes in
@pytest.mark.parametrize(
    "flags", FLAGS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "default"
)
def test_first_update_steps_every_part_by_its_learning_rate_from_a_zero_trust_region_kl(
    flags: dict[str, object],
) -> None:
    """Known truths of the first update under every flag:
    - the online policy equals pi_old (the target policy), so both M-step KLs are exactly 0;
    - Adam's first step moves each parameter by lr * |g| / (|g| + 1e-8), so the largest move in each part is
      its own learning rate (distinct here): a part whose loss is cut from the graph, or stepped by the
      wrong optimiser, fails;
    - the metrics are the advertised names in the advertised order, all finite."""
    rates = {"policy_lr": 1e-3, "critic_lr": 2e-3, "dual_lr": 5e-3}
    learner = _learner(**{**rates, **flags})
    parts = {"policy_lr": learner.policy, "critic_lr": learner.critic, "dual_lr": learner.duals}
    before = {name: [p.detach().clone() for p in part.parameters()] for name, part in parts.items()}
    values = metrics_to_floats(learner.update(_replay().sample(16, learner.config.n_step)))
    assert list(values) == learner.metric_names()
    assert all(math.isfinite(v) for v in values.values()), values
    assert values["kl_rel/mean"] == pytest.approx(0.0, abs=1e-6)
    assert values["kl_rel/stddev"] == pytest.approx(0.0, abs=1e-6)
    for name, part in parts.items():
        assert _max_step(before[name], part) == pytest.approx(rates[name], rel=1e-2), name
    assert learner.num_updates == 1


def test_full_covariance_with_per_dim_kl_is_rejected_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="per_dim_constraining=False"):
        MPOConfig(full_covariance=True)


def test_hard_target_copies_every_period_and_polyak_moves_by_tau() -> None:
    replay = _replay()
    hard = _learner(target_update="hard", target_update_period=3)
    hard.update(replay.sample(8, 3))
    assert not torch.equal(hard.target_critic.head.weight, hard.critic.head.weight)
    hard.update(replay.sample(8, 3))
    hard.update(replay.sample(8, 3))
    assert torch.equal(hard.target_critic.head.weight, hard.critic.head.weight)
    assert torch.equal(hard.target_policy.mean_head.weight, hard.policy.mean_head.weight)

    polyak = _learner(target_update="polyak", target_tau=0.25)
    old_target = polyak.target_critic.head.weight.clone()
    polyak.update(replay.sample(8, 3))
    expected = old_target + 0.25 * (polyak.critic.head.weight - old_target)
    torch.testing.assert_close(polyak.target_critic.head.weight, expected)


def test_duals_are_clamped_to_their_floor_and_only_there() -> None:
    """At the first update the M-step KLs are 0 (online == pi_old), so the mean multiplier's dual gradient is
    positive and Adam's first step lowers its parameter by exactly dual_lr: 1 - 5 = -4, below the floor -2,
    so it must read -2. The scale multiplier goes 10 -> ~5, above the floor, and must keep its value."""
    learner = _learner(min_log_dual=-2.0, dual_lr=5.0, init_log_alpha_mean=1.0, init_log_alpha_stddev=10.0)
    learner.update(_replay().sample(16, 3))
    torch.testing.assert_close(learner.duals.log_alpha_mean.detach(), torch.full((ACT,), -2.0))
    torch.testing.assert_close(
        learner.duals.log_alpha_stddev.detach(), torch.full((ACT,), 5.0), rtol=0, atol=0.01
    )


def test_state_dict_round_trip_continues_identically() -> None:
    replay = _replay()
    a = _learner()
    for _ in range(4):
        a.update(replay.sample(16, 3))
    b = _learner(policy_lr=0.123)  # overwritten by the load (optimiser state holds the lr)
    b.load_state_dict(a.state_dict())
    batch = replay.sample(16, 3)
    torch.manual_seed(7)
    ma = metrics_to_floats(a.update(batch))
    torch.manual_seed(7)
    mb = metrics_to_floats(b.update(batch))
    assert ma == mb
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert a.num_updates == b.num_updates == 5


@pytest.mark.filterwarnings("ignore:retrace=True but:UserWarning")  # the fixture mixes logged episodes in
def test_state_dict_survives_a_weights_only_file_and_resumes_identically(tmp_path) -> None:
    """The checkpoint goes through torch.save / torch.load(weights_only=True) (what the loop does) and the
    resumed learner's next update equals the original's, bit for bit."""
    replay = _replay()
    a = _learner(retrace=True)
    for _ in range(2):
        a.update(replay.sample(8, 3))
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = _learner(retrace=True, critic_lr=0.5)
    b.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    batch = replay.sample(8, 3)
    torch.manual_seed(11)
    ma = metrics_to_floats(a.update(batch))
    torch.manual_seed(11)
    mb = metrics_to_floats(b.update(batch))
    assert ma == mb
    for pa, pb in zip(a.critic.parameters(), b.critic.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert b.num_updates == 3


class _FixedGaussian(nn.Module):
    """A state-independent N(mean, stddev^2) per action dimension: a prior we can reason about in closed form."""

    def __init__(self, mean: float, stddev: float, act_dim: int = 1) -> None:
        super().__init__()
        self.mean, self.stddev, self.act_dim = mean, stddev, act_dim

    def forward(self, obs: torch.Tensor) -> GaussianParams:
        shape = (obs.shape[0], self.act_dim)
        return GaussianParams(torch.full(shape, self.mean), torch.full(shape, self.stddev))


def test_abm_samples_the_prior_but_takes_the_m_step_trust_region_around_pi_old() -> None:
    """Siegel et al. 2020 (ABM+MPO): the E-step reweights samples of the prior, KL(q || pi_prior) <= epsilon;
    the M-step fits pi to q inside KL(pi_old || pi) <= epsilon_mean around the previous policy, not the prior.

    1-D bandit: prior N(0, 0.1^2), Q(a) = 10 a. The E-step's q is the prior tilted by exp(Q / eta), a Gaussian
    N(0.1^2 * 10 / eta, 0.1^2) whose KL to the prior is epsilon at mean sigma * sqrt(2 epsilon) = 0.0447. A
    policy anchored at its own lagged copy walks there; anchored at the prior it is leashed at
    sigma * sqrt(2 epsilon_mean) = 0.0141 (what the learner did before)."""
    sigma, epsilon, epsilon_mean = 0.1, 0.1, 0.01
    torch.manual_seed(0)
    config = MPOConfig(
        policy_hidden=[8], critic_hidden=[8], n_step=1, epsilon=epsilon, epsilon_mean=epsilon_mean,
        action_penalization=False, normalize_observations=False, target_update="hard", target_update_period=20,
    )  # fmt: skip
    learner = MPOLearner(1, 1, config)
    prior = _FixedGaussian(0.0, sigma)
    calls = []
    prior.register_forward_hook(lambda *_: calls.append(1))
    learner.prior = prior
    learner._target_sampled = lambda states, actions: 10.0 * actions[..., 0]  # Q(s, a) = 10 a
    replay = ReplayBuffer(100, 1, 1)
    replay.add_episode(np.zeros((51, 1)), np.zeros((50, 1)), np.zeros(50), terminated=False)
    for _ in range(1500):
        learner.update(replay.sample(32, 1))
    assert calls, "the E-step must sample the prior"
    e_step_mean = sigma * math.sqrt(2 * epsilon)
    prior_leash = sigma * math.sqrt(2 * epsilon_mean)
    policy_mean = learner.policy(torch.zeros(1, 1)).mean.item()
    assert policy_mean == pytest.approx(e_step_mean, abs=0.004), (policy_mean, e_step_mean, prior_leash)


def test_act_returns_samples_and_clamped_deterministic_actions() -> None:
    learner = _learner()
    obs = np.zeros(OBS, np.float32)
    action, logp = learner.act(obs)
    assert action.shape == (ACT,) and np.isfinite(logp)
    batch_actions, _ = learner.act(np.zeros((3, OBS)), deterministic=True)
    assert batch_actions.shape == (3, ACT) and np.abs(batch_actions).max() <= 1.0


def _boot_states(learner: MPOLearner, batch) -> torch.Tensor:
    b = learner._to_device(batch)
    last = (b.mask.sum(1).long() - 1).clamp_min(0)
    return learner.normalize(b.next_observations[torch.arange(b.mask.shape[0]), last])


def _bootstrap_layout_states(learner: MPOLearner, batch) -> torch.Tensor:
    """The bootstrap layout's policy states: every bootstrap state, then the near-start sequences' first."""
    first = learner.normalize(learner._to_device(batch).observations[:, 0])
    return torch.cat([_boot_states(learner, batch), first[torch.from_numpy(batch.near_start > 0)]])


def test_bootstrap_policy_states_share_one_sample_set_between_e_step_and_critic_target() -> None:
    """With policy_states='bootstrap' the E-step runs on s_{t+n} (plus the near-start states) and the sampled
    values of its first B rows are the critic's bootstrap."""
    from mpo_ros.mpo import losses

    learner = _learner(policy_states="bootstrap")
    batch = _replay().sample(16, 3)
    extra = int(batch.near_start.sum())
    assert 0 < extra < 16, "the sample should hold some sequences near an episode start and some not"
    b = learner._to_device(batch)
    obs = learner.normalize(b.observations[:, 0])
    with torch.no_grad():
        prior, anchor, sampled, q_sampled, target, policy_obs, _ = learner._n_step_targets(b, obs)
    states = _bootstrap_layout_states(learner, batch)
    torch.testing.assert_close(anchor.mean, prior.mean)
    torch.testing.assert_close(policy_obs, states)
    torch.testing.assert_close(prior.mean, learner.target_policy(states).mean)
    assert sampled.shape == (4, 16 + extra, ACT) and q_sampled.shape == (4, 16 + extra)
    torch.testing.assert_close(q_sampled, learner.target_critic(states.expand(4, -1, -1), sampled))
    expected = losses.n_step_return(b.rewards, b.mask, b.terminated, q_sampled[:, :16].mean(0), 0.99)
    torch.testing.assert_close(target, expected)


def test_sequence_start_policy_states_fit_the_policy_on_the_replayed_state() -> None:
    learner = _learner(policy_states="sequence_start")
    batch = _replay().sample(16, 3)
    b = learner._to_device(batch)
    obs = learner.normalize(b.observations[:, 0])
    with torch.no_grad():
        prior, _, _, _, _, policy_obs, state_weights = learner._n_step_targets(b, obs)
    assert state_weights is None  # a sequence's first state is a stored state, never a terminal observation
    torch.testing.assert_close(policy_obs, obs)
    torch.testing.assert_close(prior.mean, learner.target_policy(obs).mean)


def test_policy_states_auto_is_bootstrap_for_n_step_and_sequence_start_for_retrace() -> None:
    assert MPOConfig().policy_states == "bootstrap"
    assert MPOConfig(retrace=True).policy_states == "sequence_start"
    assert MPOConfig(policy_states="sequence_start").policy_states == "sequence_start"


def _counted_states(episodes: list[tuple[int, bool]], n_step: int) -> tuple[dict[float, float], set[float]]:
    """Weighted count of each stored state among the bootstrap layout's policy states, over every possible
    sequence start of a replay holding ``episodes`` (steps, terminated); states are told apart by their first
    feature. Also returns the terminal observations (states with no future)."""
    replay = ReplayBuffer(200, OBS, ACT, seed=0)
    terminal = set()
    for k, (steps, terminated) in enumerate(episodes):
        obs = np.zeros((steps + 1, OBS), np.float32)
        obs[:, 0] = 100 * (k + 1) + np.arange(steps + 1)
        replay.add_episode(obs, np.zeros((steps, ACT)), np.zeros(steps), terminated=terminated)
        if terminated:
            terminal.add(float(obs[-1, 0]))
    learner = _learner(policy_states="bootstrap", normalize_observations=False)
    b = learner._to_device(replay.sequences(np.arange(len(replay)), n_step))
    last = (b.mask.sum(1).long() - 1).clamp_min(0)
    boot_obs = b.next_observations[torch.arange(len(replay)), last]
    states, weights = learner._bootstrap_policy_states(b, b.observations[:, 0], boot_obs)
    counts: dict[float, float] = {}
    for state, weight in zip(states[:, 0].tolist(), weights.tolist(), strict=True):
        counts[state] = counts.get(state, 0.0) + weight
    return counts, terminal


def test_bootstrap_policy_states_fit_every_stored_state_exactly_once() -> None:
    """Over all sequence starts, each non-terminal state of an episode (its first n_step states and its final
    observation included) is a policy state with total weight 1, and a terminal observation with weight 0:
    the policy sees the replay's state distribution. Bootstrap states alone never reach the first n_step
    states and count an episode's last state n_step times."""
    n_step = 3
    counts, terminal = _counted_states([(9, True), (6, False), (4, False), (12, True)], n_step)
    for k, steps in enumerate((9, 6, 4, 12)):
        for i in range(steps + 1):
            state = 100.0 * (k + 1) + i
            expected = 0.0 if state in terminal else 1.0
            assert counts.get(state, 0.0) == expected, f"episode {k}, state {i}: {counts.get(state, 0.0)}"
    assert set(counts) <= {
        100.0 * (k + 1) + i for k, steps in enumerate((9, 6, 4, 12)) for i in range(steps + 1)
    }


def test_bootstrap_policy_states_with_a_prior_sample_the_prior_at_the_bootstrap_states() -> None:
    learner = _learner(policy_states="bootstrap")
    prior = GaussianPolicy(OBS, ACT, hidden=[8], init_scale=0.05)
    seen: list[torch.Tensor] = []
    prior.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach().clone()))
    learner.prior = prior
    batch = _replay().sample(16, 3)
    metrics = metrics_to_floats(learner.update(batch))
    assert all(math.isfinite(v) for v in metrics.values())
    torch.testing.assert_close(seen[0], _bootstrap_layout_states(learner, batch))


def test_bootstrap_policy_states_refuse_retrace_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="policy_states='sequence_start'"):
        MPOConfig(policy_states="bootstrap", retrace=True)


def _with_terminal_observations_replaced(batch: SequenceBatch, seed: int) -> tuple[SequenceBatch, int]:
    """The batch with the observation after each true terminal replaced by noise, and how many were replaced."""
    last = (batch.mask.sum(1).astype(int) - 1).clip(min=0)
    rows = np.flatnonzero(batch.terminated[np.arange(len(last)), last] * batch.mask[:, 0])
    next_observations = batch.next_observations.copy()
    noise = np.random.default_rng(seed).normal(0.0, 3.0, size=(len(rows), next_observations.shape[-1]))
    next_observations[rows, last[rows]] = noise
    return batch._replace(next_observations=next_observations), len(rows)


@pytest.mark.parametrize("critic_type", ["scalar", "categorical"])
def test_bootstrap_policy_states_never_fit_the_policy_on_terminal_observations(critic_type: str) -> None:
    """A true terminal's observation has no future: the critic target ignores its value, and the E-step and
    M-step must ignore the state too (masked), so an update cannot depend on what that observation holds."""
    batch = _replay().sample(32, 3)
    changed, terminal_rows = _with_terminal_observations_replaced(batch, seed=1)
    assert terminal_rows > 0, "the sample must contain sequences that end in a terminal"
    params = []
    for b in (batch, changed):
        learner = _learner(policy_states="bootstrap", critic_type=critic_type)
        torch.manual_seed(3)
        learner.update(b)
        params.append(
            [*learner.policy.parameters(), *learner.critic.parameters(), *learner.duals.parameters()]
        )
    for before, after in zip(*params, strict=True):
        torch.testing.assert_close(before, after)


def test_retrace_without_behaviour_densities_falls_back_to_n_step_targets_with_a_warning() -> None:
    """Logged data has no log mu(a|s): Retrace cannot weigh its traces, and the old c = lambda (Q(lambda)) is
    not safe off-policy. Such sequences get the n-step target instead, and the learner says so once."""
    from mpo_ros.mpo import losses

    replay = ReplayBuffer(200, OBS, ACT, seed=0)
    rng = np.random.default_rng(0)
    for terminated in (True, False):
        replay.add_episode(rng.normal(size=(21, OBS)), rng.uniform(-1, 1, (20, ACT)), rng.normal(size=20),
                           terminated=terminated)  # fmt: skip
    batch = replay.sample(16, 3)
    assert np.isnan(batch.behaviour_log_probs).all()
    learner = _learner(retrace=True)
    with pytest.warns(UserWarning, match="behaviour log-probabilities"):
        learner.update(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner.update(batch)  # said once per learner, not every update
    # V(s) = sum of the (normalised) state's features, whatever actions are sampled: a value we can recompute.
    learner._target_sampled = lambda states, actions: states.sum(-1).expand(actions.shape[0], -1)
    b = learner._to_device(batch)
    with torch.no_grad():
        target = learner._retrace_targets(b, learner.normalize(b.observations[:, 0])).critic_target
    last = (b.mask.sum(1).long() - 1).clamp_min(0)
    bootstrap = learner.normalize(b.next_observations[torch.arange(16), last]).sum(-1)
    expected = losses.n_step_return(b.rewards, b.mask, b.terminated, bootstrap, learner.config.discount)
    torch.testing.assert_close(target, expected)


def _global_norm(params) -> float:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()


def test_one_global_norm_clips_policy_and_critic_together_and_the_duals_separately() -> None:
    """Acme (agents/jax/mpo/learning.py) clips one global gradient norm over all network parameters, and the
    duals' gradients by their own norm. The clipped global norm is the bound: sqrt(2) x bound with a bound per
    network, and unclipped duals, would fail."""
    bound = 1e-3
    learner = _learner(grad_norm_clip=bound)
    metrics = metrics_to_floats(learner.update(_replay().sample(16, 3)))
    networks = [*learner.policy.parameters(), *learner.critic.parameters()]
    assert metrics["opt/grad_norm"] > bound and metrics["opt/dual_grad_norm"] > bound  # both clips are active
    assert _global_norm(networks) == pytest.approx(bound, rel=1e-4)
    assert _global_norm(learner.duals.parameters()) == pytest.approx(bound, rel=1e-4)


@pytest.mark.parametrize("policy_states", ["sequence_start", "bootstrap"])
def test_with_a_prior_the_m_step_kl_is_measured_from_pi_old(policy_states: str) -> None:
    """At the first update the online policy equals pi_old, so the M-step KLs are exactly 0 however far the
    prior is (mean 0.8, stddev 0.05 here; measured from the prior the mean KL would be ~ 0.8^2 / (2 0.05^2))."""
    learner = _learner(policy_states=policy_states)
    learner.prior = _FixedGaussian(0.8, 0.05, ACT)
    values = metrics_to_floats(learner.update(_replay().sample(16, 3)))
    assert values["kl_rel/mean"] == pytest.approx(0.0, abs=1e-6)
    assert values["kl_rel/stddev"] == pytest.approx(0.0, abs=1e-6)
