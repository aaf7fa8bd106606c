"""`mpo-ros train --data`: offline from a converted bag, and mixed with simulation (short runs)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from mpo_ros import cli
from mpo_ros.data.dataset import load_dataset
from mpo_ros.errors import ConfigError, DatasetError
from mpo_ros.training.loop import TrainConfig, train
from mpo_ros.training.replay import ReplayBuffer
from mpo_ros.training.sources import data_replay, fill_replay, load_datasets
from mpo_ros.training.state import load_policy

torch.set_num_threads(1)
SMALL = ["--policy-hidden", "32", "32", "--critic-hidden", "32", "32", "--batch-size", "64", "--threads", "1"]


def test_episodes_enter_the_replay_whole(behaviour):
    dataset = load_dataset(behaviour)
    replay = ReplayBuffer(len(dataset), dataset.obs_dim, dataset.act_dim)
    assert fill_replay(replay, dataset) == dataset.num_episodes
    assert len(replay) == len(dataset)
    assert np.array_equal(replay.observations[: len(dataset)], dataset.observations)
    assert np.array_equal(replay.next_observations[: len(dataset)], dataset.next_observations)
    starts = set(dataset.episode_starts.tolist())
    ids = replay.episode_ids[: len(dataset)]
    assert all((ids[i] != ids[i - 1]) == (i in starts) for i in range(1, len(dataset)))
    # n-step sequences never cross an episode boundary.
    batch = data_replay([dataset], seed=0).sample(256, 5)
    assert batch.mask.shape == (256, 5) and np.all(np.diff(batch.mask, axis=1) <= 0)


def test_datasets_of_different_robots_are_refused(behaviour, tmp_path):
    from mpo_ros.data.dataset import write_dataset

    with pytest.raises(DatasetError, match="at least one dataset"):
        load_datasets([])
    other = {
        "observations": np.zeros((4, 3)),
        "actions": np.zeros((4, 1)),
        "rewards": np.zeros(4),
        "next_observations": np.zeros((4, 3)),
        "terminated": np.zeros(4, bool),
        "truncated": np.array([False, False, False, True]),
        "success": np.zeros(4, bool),
        "timestamps": np.arange(4),
        "episode_starts": np.array([0]),
    }
    write_dataset(tmp_path / "other", other, {"robot_spec": None})
    with pytest.raises(DatasetError, match="obs/act dims"):
        load_datasets([str(behaviour), str(tmp_path / "other")])


@pytest.mark.slow
def test_offline_training_writes_a_loadable_policy_with_abm_metrics(behaviour, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", str(behaviour), "--steps", "60", "--out", str(out), "--eval-every", "0",
            "--eval-episodes", "2", "--log-every", "20", "--progress", "false", *SMALL]  # fmt: skip
    assert cli.main(argv) == 0
    module, metadata = load_policy(out)
    # Evaluated in the generic reach env built from the datasets' own contract, which the checkpoint carries.
    assert metadata["env_id"] == "mpo_ros_sim:Reach-v0" and metadata["contract_source"] == "datasets"
    assert metadata["robot_spec_json"] == load_dataset(behaviour).robot_spec.to_json()
    obs = torch.as_tensor(load_dataset(behaviour).observations[:5])
    actions = module(obs)
    assert actions.shape == (5, 2) and torch.all(actions.abs() <= 1.0)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert any(r.get("abm/weight_mean") for r in rows) and any(r.get("eval/return") for r in rows)
    # Plain MPO (no prior) is one flag away, and has no ABM metrics.
    plain = tmp_path / "plain"
    assert cli.main([*argv[:6], str(plain), *argv[7:], "--behaviour-prior", "none"]) == 0
    assert not any(r.get("abm/weight_mean") for r in csv.DictReader((plain / "metrics.csv").open()))


@pytest.mark.slow
def test_mixed_training_draws_half_of_each_batch_from_the_data(behaviour, tmp_path, monkeypatch):
    from mpo_ros.training.replay import MixedReplay

    seen: list[list[int]] = []
    original = MixedReplay.sample

    def spy(self, batch_size, length):
        seen.append(self.counts(batch_size))
        return original(self, batch_size, length)

    monkeypatch.setattr(MixedReplay, "sample", spy)
    config = TrainConfig(
        env="mpo_ros_sim:Arm2Reach-v0", data=[str(behaviour)], data_ratio=0.5, steps=150, warmup_steps=100,
        out=str(tmp_path / "mixed"), eval_every=0, eval_episodes=1, log_every=50, progress=False,
        policy_hidden=[32], critic_hidden=[32], batch_size=64, threads=1, checkpoint_every=0,
    )  # fmt: skip
    result = train(config)
    assert result["step"] == 150 and result["updates"] == 51  # updates from step 100 on
    assert seen and all(counts == [32, 32] for counts in seen)
    with pytest.raises(ConfigError, match="data_ratio"):
        train(TrainConfig(**{**config.__dict__, "data_ratio": 0.0, "out": str(tmp_path / "bad")}))


@pytest.mark.slow
def test_mixed_resume_continues_exactly_where_the_run_stopped(behaviour, tmp_path):
    """Online + logged data: 160 steps in one go == 120 steps, then --resume to 160 (the logged-data
    sampler's RNG is restored with the rest). 40-step episodes, so step 120 is an episode boundary."""
    common = dict(
        env="mpo_ros_sim:Arm2Reach-v0", data=[str(behaviour)], data_ratio=0.5, warmup_steps=100,
        behaviour_prior="none", max_episode_steps=40,
    )  # fmt: skip
    train(_tiny(**common, steps=160, out=str(tmp_path / "whole")))
    half = _tiny(**common, steps=120, out=str(tmp_path / "split"))
    train(half)
    train(TrainConfig(**{**half.__dict__, "steps": 160, "resume": True}))
    whole, _ = _policy_state(tmp_path / "whole")
    resumed, checkpoint = _policy_state(tmp_path / "split")
    assert len(checkpoint["sampler_rng"]) == 2
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed[name]), name


def _tiny(**overrides):
    values = dict(
        eval_every=0, eval_episodes=1, log_every=10, progress=False, policy_hidden=[16], critic_hidden=[16],
        batch_size=32, num_samples=4, abm_samples=4, threads=1, checkpoint_every=0,
    )  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def _policy_state(run_dir):
    from mpo_ros.training.state import load_checkpoint

    checkpoint = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    return checkpoint["learner"]["policy"], checkpoint


def test_offline_resume_continues_exactly_where_the_run_stopped(behaviour, tmp_path):
    """40 updates in one go == 20 updates, then --resume to 40 (learner, ABM prior, replay RNG restored)."""
    whole = _tiny(data=[str(behaviour)], steps=40, out=str(tmp_path / "whole"))
    train(whole)
    half = _tiny(data=[str(behaviour)], steps=20, out=str(tmp_path / "split"))
    train(half)
    with pytest.raises(ConfigError, match="--resume"):
        train(half)  # an existing run is never overwritten
    result = train(TrainConfig(**{**half.__dict__, "steps": 40, "resume": True}))
    assert result["updates"] == 40
    expected, _ = _policy_state(tmp_path / "whole")
    resumed, checkpoint = _policy_state(tmp_path / "split")
    assert checkpoint["abm_prior"]["num_updates"] == 40
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name
    # A run without the prior cannot be resumed with one (its E-step proposal would start from scratch).
    plain = _tiny(data=[str(behaviour)], steps=10, out=str(tmp_path / "plain"), behaviour_prior="none")
    train(plain)
    with pytest.raises(ConfigError, match="behaviour_prior: run 'none', now 'abm'"):
        train(TrainConfig(**{**plain.__dict__, "steps": 20, "resume": True, "behaviour_prior": "abm"}))


@pytest.mark.slow
def test_mixed_training_checkpoints_and_restores_the_prior(behaviour, tmp_path):
    config = _tiny(
        env="mpo_ros_sim:Arm2Reach-v0", data=[str(behaviour)], data_ratio=0.5, steps=120, warmup_steps=100,
        out=str(tmp_path / "mixed"), behaviour_prior="abm",
    )  # fmt: skip
    train(config)
    _, checkpoint = _policy_state(tmp_path / "mixed")
    assert checkpoint["abm_prior"]["num_updates"] == 21  # one prior update per learner update from step 100
    train(TrainConfig(**{**config.__dict__, "steps": 130, "resume": True}))
    _, checkpoint = _policy_state(tmp_path / "mixed")
    assert checkpoint["abm_prior"]["num_updates"] == 31


def test_a_dataset_with_non_finite_values_is_refused_at_load(behaviour, tmp_path, caplog):
    """A NaN reward used to be accepted and kill the run later with a traceback naming no dataset."""
    from mpo_ros.data.dataset import write_dataset

    data = load_dataset(behaviour, mmap=False)
    arrays = {name: np.array(getattr(data, name)) for name in ("observations", "actions", "rewards",
              "next_observations", "terminated", "truncated", "success", "timestamps", "episode_starts")}  # fmt: skip
    arrays["rewards"][7] = np.nan
    write_dataset(tmp_path / "nan", arrays, dict(data.meta))
    argv = ["train", "--data", str(tmp_path / "nan"), "--steps", "5", "--out", str(tmp_path / "run"), *SMALL]
    assert cli.main(argv) == 2
    assert f"{tmp_path / 'nan'}: rewards holds 1+ non-finite value(s) (first at row 7)" in caplog.text
