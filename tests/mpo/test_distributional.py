"""The categorical (DMPO) critic: projection closed forms, n-step distributional targets, the learner under
every flag, checkpoints, and a return distribution it must learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mpo_fixtures import random_replay, seeded_learner

from mpo_ros.errors import CheckpointError, ConfigError
from mpo_ros.mpo import learner as learner_module
from mpo_ros.mpo import losses
from mpo_ros.mpo.abm import ABMPrior
from mpo_ros.mpo.learner import MPOConfig, MPOLearner, metrics_to_floats
from mpo_ros.mpo.networks import CategoricalCritic
from mpo_ros.training.replay import ReplayBuffer

torch.set_num_threads(1)
OBS, ACT = 5, 2
SUPPORT = torch.linspace(-2.0, 2.0, 5)  # atoms -2, -1, 0, 1, 2
CATEGORICAL = dict(
    policy_hidden=[16, 16],
    critic_hidden=[16, 16],
    num_samples=4,
    n_step=3,
    critic_type="categorical",
    critic_atoms=11,
    critic_vmin=-10.0,
    critic_vmax=10.0,
)


def _project(values: list[float], probs: list[float] | None = None) -> torch.Tensor:
    v = torch.tensor([values])
    p = torch.full_like(v, 1.0 / v.shape[1]) if probs is None else torch.tensor([probs])
    return losses.categorical_projection(v, p, SUPPORT)[0]


# --- projection -----------------------------------------------------------------------------------------


def test_a_value_on_an_atom_keeps_all_its_mass_there() -> None:
    torch.testing.assert_close(_project([1.0]), torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(_project([-2.0]), torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]))


def test_a_value_between_two_atoms_splits_by_distance() -> None:
    torch.testing.assert_close(_project([0.5]), torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0]))
    torch.testing.assert_close(_project([-1.75]), torch.tensor([0.75, 0.25, 0.0, 0.0, 0.0]))


def test_out_of_range_values_land_on_the_edge_atoms() -> None:
    torch.testing.assert_close(_project([7.0, -30.0], [0.25, 0.75]), torch.tensor([0.75, 0, 0, 0, 0.25]))


def test_projection_conserves_mass_and_preserves_the_mean_in_range() -> None:
    gen = torch.Generator().manual_seed(0)
    support = torch.linspace(-3.0, 5.0, 17, dtype=torch.float64)
    values = torch.rand(64, 9, generator=gen, dtype=torch.float64) * 8.0 - 3.0
    probs = torch.softmax(torch.randn(64, 9, generator=gen, dtype=torch.float64), -1)
    projected = losses.categorical_projection(values, probs, support)
    assert (projected >= 0).all()
    torch.testing.assert_close(projected.sum(-1), torch.ones(64, dtype=torch.float64))
    torch.testing.assert_close(projected @ support, (probs * values).sum(-1))


# --- n-step distributional target ------------------------------------------------------------------------


def _sequence(rewards: list[float], valid: int, terminal: bool) -> tuple[torch.Tensor, ...]:
    r = torch.tensor([rewards])
    mask = (torch.arange(r.shape[1]) < valid).float().unsqueeze(0)
    terminated = torch.zeros_like(r)
    if terminal:
        terminated[0, valid - 1] = 1.0
    return r, mask, terminated


def test_after_a_terminal_all_target_mass_sits_at_the_discounted_reward_sum() -> None:
    r, mask, terminated = _sequence([1.0, -0.5, 9.0], valid=2, terminal=True)
    bootstrap = torch.softmax(torch.randn(1, 5), -1)
    target = losses.categorical_n_step_target(r, mask, terminated, bootstrap, SUPPORT, discount=0.5)
    # 1 + 0.5 * -0.5 = 0.75: three quarters on atom 1, one quarter on atom 0; the reward after the end is ignored
    torch.testing.assert_close(target[0], torch.tensor([0.0, 0.0, 0.25, 0.75, 0.0]))


def test_after_a_truncation_the_bootstrap_distribution_is_shifted_and_scaled() -> None:
    r, mask, terminated = _sequence([1.0, 0.0, 0.0], valid=1, terminal=False)
    bootstrap = torch.tensor([[0.0, 0.0, 0.5, 0.0, 0.5]])  # returns 0 or 2, half each
    target = losses.categorical_n_step_target(r, mask, terminated, bootstrap, SUPPORT, discount=0.5)
    # 1 + 0.5 * {0, 2} = {1, 2}
    torch.testing.assert_close(target[0], torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5]))


def test_target_mean_equals_the_scalar_n_step_return_of_the_bootstrap_mean() -> None:
    gen = torch.Generator().manual_seed(1)
    support = torch.linspace(-40.0, 40.0, 81, dtype=torch.float64)
    rewards = torch.rand(32, 4, generator=gen, dtype=torch.float64) * 2 - 1
    mask = (torch.arange(4) < torch.randint(1, 5, (32, 1), generator=gen)).double()
    terminated = (torch.rand(32, 4, generator=gen) < 0.3).double()
    bootstrap = torch.softmax(torch.randn(32, 81, generator=gen, dtype=torch.float64) * 0.1, -1)
    target = losses.categorical_n_step_target(rewards, mask, terminated, bootstrap, support, 0.9)
    scalar = losses.n_step_return(rewards, mask, terminated, bootstrap @ support, 0.9)
    torch.testing.assert_close(target @ support, scalar)
    torch.testing.assert_close(target.sum(-1), torch.ones(32, dtype=torch.float64))


# --- critic loss and network ----------------------------------------------------------------------------


def test_cross_entropy_gradient_is_softmax_minus_target_and_stats_report_edge_mass() -> None:
    logits = torch.randn(3, 5, requires_grad=True)
    target = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0], [0, 0, 0, 0.5, 0.5]])
    loss, stats = losses.categorical_critic_loss(logits, target, SUPPORT)
    loss.backward()
    torch.testing.assert_close(logits.grad, (torch.softmax(logits, -1) - target).detach() / 3)
    torch.testing.assert_close(stats.target_edge_mass, torch.tensor(0.5))  # (1 + 0 + 0.5) / 3
    torch.testing.assert_close(stats.target_mean, torch.tensor((-2.0 + 0.0 + 1.5) / 3))
    q = torch.softmax(logits.detach(), -1) @ SUPPORT
    torch.testing.assert_close(torch.stack([stats.q_mean, stats.q_min, stats.q_max]),
                               torch.stack([q.mean(), q.min(), q.max()]))  # fmt: skip


@pytest.mark.parametrize("torso", ["layernorm", "relu"])
def test_categorical_critic_sampled_logits_match_the_expanded_pass(torso: str) -> None:
    critic = CategoricalCritic(4, 3, hidden=[16, 16], torso=torso, atoms=7, vmin=-3.0, vmax=3.0)
    obs, actions = torch.randn(6, 4), torch.randn(5, 6, 3) * 2
    expanded = critic.logits(obs.expand(5, 6, 4), actions)
    torch.testing.assert_close(critic.sampled_logits(obs, actions), expanded)
    expected_q = (torch.softmax(expanded, -1) * torch.linspace(-3.0, 3.0, 7)).sum(-1)
    torch.testing.assert_close(critic.sampled(obs, actions), expected_q)
    torch.testing.assert_close(critic(obs, actions[0]), expected_q[0])


def test_critic_loss_gradient_reaches_only_the_critic() -> None:
    learner = _learner()
    batch = learner._to_device(_replay().sample(16, 3))
    obs = learner.normalize(batch.observations[:, 0])
    with torch.no_grad():
        target = learner._n_step_targets(batch, obs).critic_target
    loss, _ = learner._critic_loss(obs, batch.actions[:, 0], target)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.critic.parameters())
    for module in (learner.policy, learner.duals, learner.target_critic, learner.target_policy):
        assert all(p.grad is None for p in module.parameters())


# --- learner --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy_states", ["sequence_start", "bootstrap"])
def test_bootstrap_is_the_mixture_of_the_target_critic_over_the_policy_samples(policy_states: str) -> None:
    """Zero rewards, no terminals, gamma 1: the target is then the bootstrap distribution itself, which must
    be the mean over the N target-policy samples of the target critic's probabilities at s'."""
    rng = np.random.default_rng(2)
    replay = ReplayBuffer(100, OBS, ACT, seed=0)
    replay.add_episode(
        rng.normal(size=(41, OBS)), rng.uniform(-1, 1, (40, ACT)), np.zeros(40), terminated=False
    )
    learner = _learner(n_step=1, discount=1.0, num_samples=6, policy_states=policy_states)
    batch = learner._to_device(replay.sequences(np.array([0, 3, 7, 11, 19, 23, 30, 38]), 1))
    obs = learner.normalize(batch.observations[:, 0])
    boot_obs = learner.normalize(batch.next_observations[:, 0])
    # sequence_start: one target-policy pass over [starts; bootstrap states], the bootstrap samples last;
    # bootstrap: the pass over [bootstrap states; the near-start state (slot 0)], the bootstrap samples first
    states = (
        torch.cat([obs, boot_obs]) if policy_states == "sequence_start" else torch.cat([boot_obs, obs[:1]])
    )
    rows = slice(8, None) if policy_states == "sequence_start" else slice(0, 8)
    with torch.no_grad():
        torch.manual_seed(3)
        target = learner._n_step_targets(batch, obs).critic_target
        torch.manual_seed(3)
        actions = learner_module._sample(learner.target_policy(states), 6)[:, rows]
        per_sample = torch.softmax(learner.target_critic.sampled_logits(boot_obs, actions), -1)  # [N, B, A]
    torch.testing.assert_close(target, per_sample.mean(0))
    assert not torch.allclose(per_sample[0], per_sample[-1])  # the samples differ, so the mean matters


def _replay(seed: int = 0) -> ReplayBuffer:
    return random_replay(OBS, ACT, seed)


def _learner(**overrides: object) -> MPOLearner:
    return seeded_learner(OBS, ACT, **{**CATEGORICAL, **overrides})


FLAGS = [
    {},
    {"per_dim_constraining": False},
    {"action_penalization": False},
    {"full_covariance": True, "per_dim_constraining": False},
    {"target_update": "hard", "target_update_period": 2},
    {"torso": "relu", "normalize_observations": False, "grad_norm_clip": 0.0},
    {"abm_prior": True},
    {"policy_states": "bootstrap"},
    {"policy_states": "bootstrap", "abm_prior": True},
]


@pytest.mark.parametrize(
    "flags", FLAGS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "default"
)
def test_categorical_update_runs_and_reports_every_metric(flags: dict[str, object]) -> None:
    flags = dict(flags)
    use_prior = bool(flags.pop("abm_prior", False))
    learner = _learner(**flags)
    replay = _replay()
    prior = ABMPrior(learner).attach() if use_prior else None
    before = [p.detach().clone() for p in learner.critic.parameters()]
    for _ in range(3):
        batch = replay.sample(16, learner.config.n_step)
        if prior is not None:
            prior.update(batch)
        metrics = learner.update(batch)
    values = metrics_to_floats(metrics)
    assert list(values) == learner.metric_names()
    assert all(math.isfinite(v) for v in values.values()), values
    assert 0.0 <= values["q/target_edge_mass"] <= 1.0
    assert -10.0 <= values["q/min"] <= values["q/mean"] <= values["q/max"] <= 10.0
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.critic.parameters(), strict=True))
    assert "q/target_edge_mass" not in MPOLearner(OBS, ACT, MPOConfig()).metric_names()


def test_retrace_with_the_categorical_critic_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="retrace=True needs critic_type='scalar'"):
        MPOConfig(critic_type="categorical", retrace=True)
    assert MPOConfig(critic_type="scalar", retrace=True).retrace


def test_bad_support_is_rejected_naming_the_values() -> None:
    with pytest.raises(ConfigError, match=r"critic_atoms=1 must be >= 2"):
        MPOConfig(critic_atoms=1)
    with pytest.raises(ConfigError, match=r"critic_vmin=5.0 must be < critic_vmax=5.0"):
        MPOConfig(critic_vmin=5.0, critic_vmax=5.0)
    with pytest.raises(ConfigError, match="critic_type='quantile'"):
        MPOConfig(critic_type="quantile")


def test_categorical_checkpoint_round_trip_continues_identically(tmp_path) -> None:
    replay = _replay()
    a = _learner()
    for _ in range(4):
        a.update(replay.sample(16, 3))
    torch.save(a.state_dict(), tmp_path / "learner.pt")
    b = _learner(critic_lr=0.5)  # overwritten by the load (optimiser state holds the lr)
    b.load_state_dict(torch.load(tmp_path / "learner.pt", weights_only=True))
    batch = replay.sample(16, 3)
    torch.manual_seed(7)
    ma = metrics_to_floats(a.update(batch))
    torch.manual_seed(7)
    mb = metrics_to_floats(b.update(batch))
    assert ma == mb
    for pa, pb in zip(a.critic.parameters(), b.critic.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize(
    ("saved", "loading"),
    [
        ({}, {"critic_type": "scalar"}),
        ({"critic_type": "scalar"}, {}),
        ({}, {"critic_vmax": 20.0}),
        ({}, {"critic_atoms": 21}),
    ],
    ids=["categorical-into-scalar", "scalar-into-categorical", "other-vmax", "other-atoms"],
)
def test_loading_a_checkpoint_of_another_critic_raises(saved: dict, loading: dict) -> None:
    state = _learner(**saved).state_dict()
    with pytest.raises(CheckpointError, match="critic"):
        _learner(**loading).load_state_dict(state)


def test_critic_learns_a_bimodal_return_distribution() -> None:
    """One-step episodes paying 0 or 8 at random, whatever the action: the expected value (4) is never a
    return, and only a distributional critic can show both outcomes."""
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(4000, OBS, ACT, seed=0)
    for _ in range(1000):
        replay.add_episode(rng.normal(size=(2, OBS)), rng.uniform(-1, 1, size=(1, ACT)),
                           rng.choice([0.0, 8.0], size=1), terminated=True)  # fmt: skip
    learner = _learner(n_step=1, critic_lr=3e-3)
    for _ in range(300):
        learner.update(replay.sample(64, 1))
    batch = replay.sample(256, 1)
    obs = learner.normalize(torch.as_tensor(batch.observations[:, 0]))
    with torch.no_grad():
        probs = torch.softmax(learner.critic.logits(obs, torch.as_tensor(batch.actions[:, 0])), -1).mean(0)
    atoms = learner.critic.support.tolist()  # -10, -8, ..., 10: the returns 0 and 8 are atoms 5 and 9
    assert atoms[5] == 0.0 and atoms[9] == 8.0
    assert probs[5] > 0.35 and probs[9] > 0.35, probs
    assert probs[7] < 0.1, probs  # the mean, 4, holds (almost) no mass
