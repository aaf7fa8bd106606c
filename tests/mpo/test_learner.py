"""The learner's update under every flag, target updates, state round trips, and the prior seam."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mpo_fixtures import random_replay, seeded_learner

from mpo_ros.errors import ConfigError
from mpo_ros.mpo.learner import MPOConfig, MPOLearner, metrics_to_floats
from mpo_ros.mpo.networks import GaussianPolicy
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


@pytest.mark.parametrize(
    "flags", FLAGS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "default"
)
def test_update_runs_and_reports_every_metric(flags: dict[str, object]) -> None:
    learner = _learner(**flags)
    replay = _replay()
    before = [p.detach().clone() for p in learner.policy.parameters()]
    for _ in range(3):
        metrics = learner.update(replay.sample(16, learner.config.n_step))
    values = metrics_to_floats(metrics)
    assert list(values) == sorted(values, key=list(learner.metric_names()).index)
    assert set(values) == set(learner.metric_names())
    assert all(math.isfinite(v) for v in values.values()), values
    for required in ("q/min", "q/max", "q/mean", "policy/std_min", "policy/std_max", "loss/critic",
                     "opt/grad_norm_actor", "opt/grad_norm_critic", "dual/temperature", "kl_rel/mean",
                     "kl_rel/stddev", "kl_rel/temperature"):  # fmt: skip
        assert required in values
    assert ("dual/penalty_temperature" in values) == learner.config.action_penalization
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.policy.parameters(), strict=True))
    assert learner.num_updates == 3


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


def test_duals_stay_above_their_floor() -> None:
    learner = _learner(min_log_dual=-2.0, dual_lr=5.0)
    replay = _replay()
    for _ in range(5):
        learner.update(replay.sample(16, 3))
    for p in learner.duals.parameters():
        assert (p >= -2.0).all()


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


def test_state_dict_holds_only_weights_only_loadable_values(tmp_path) -> None:
    learner = _learner(retrace=True)
    learner.update(_replay().sample(8, 3))
    torch.save(learner.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert {"policy", "critic", "target_policy", "target_critic", "normalizer", "duals", "actor_optimizer",
            "critic_optimizer", "dual_optimizer", "num_updates"} <= set(state)  # fmt: skip


def test_prior_seam_samples_from_and_regularises_towards_the_prior() -> None:
    learner = _learner()
    prior = GaussianPolicy(OBS, ACT, hidden=[8], init_scale=0.05)
    with torch.no_grad():
        prior.mean_head.bias.fill_(0.8)
    calls = []
    prior.register_forward_hook(lambda *_: calls.append(1))
    learner.prior = prior
    metrics = metrics_to_floats(learner.update(_replay().sample(16, 3)))
    assert calls, "the E-step must query the prior"
    # the online policy (mean ~0, std 0.3) is far from the prior: the mean trust region is violated
    assert metrics["kl_rel/mean"] > 10


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


def test_bootstrap_policy_states_share_one_sample_set_between_e_step_and_critic_target() -> None:
    """With policy_states='bootstrap' the E-step runs on s_{t+n} and its sampled values are the bootstrap."""
    from mpo_ros.mpo import losses

    learner = _learner(policy_states="bootstrap")
    batch = _replay().sample(16, 3)
    b = learner._to_device(batch)
    obs = learner.normalize(b.observations[:, 0])
    with torch.no_grad():
        prior, sampled, q_sampled, target, policy_obs = learner._n_step_targets(b, obs)
    boot = _boot_states(learner, batch)
    torch.testing.assert_close(policy_obs, boot)
    torch.testing.assert_close(prior.mean, learner.target_policy(boot).mean)
    assert sampled.shape == (4, 16, ACT) and q_sampled.shape == (4, 16)
    torch.testing.assert_close(q_sampled, learner.target_critic(boot.expand(4, -1, -1), sampled))
    expected = losses.n_step_return(b.rewards, b.mask, b.terminated, q_sampled.mean(0), 0.99)
    torch.testing.assert_close(target, expected)


def test_sequence_start_policy_states_fit_the_policy_on_the_replayed_state() -> None:
    learner = _learner()
    batch = _replay().sample(16, 3)
    b = learner._to_device(batch)
    obs = learner.normalize(b.observations[:, 0])
    with torch.no_grad():
        prior, _, _, _, policy_obs = learner._n_step_targets(b, obs)
    torch.testing.assert_close(policy_obs, obs)
    torch.testing.assert_close(prior.mean, learner.target_policy(obs).mean)


def test_bootstrap_policy_states_with_a_prior_sample_the_prior_at_the_bootstrap_states() -> None:
    learner = _learner(policy_states="bootstrap")
    prior = GaussianPolicy(OBS, ACT, hidden=[8], init_scale=0.05)
    seen: list[torch.Tensor] = []
    prior.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach().clone()))
    learner.prior = prior
    batch = _replay().sample(16, 3)
    metrics = metrics_to_floats(learner.update(batch))
    assert all(math.isfinite(v) for v in metrics.values())
    torch.testing.assert_close(seen[0], _boot_states(learner, batch))


def test_bootstrap_policy_states_refuse_retrace_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="policy_states='sequence_start'"):
        MPOConfig(policy_states="bootstrap", retrace=True)
