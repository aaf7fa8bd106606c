"""Where experience comes from: an environment in this process, or datasets converted from rosbag2 files.

(Ray actors, the third source, live in :mod:`mpo_ros.training.actors`: they need ``ray``.)

Datasets go into one replay episode by episode, so n-step targets never cross an episode boundary; their
contract is compared with every other dataset's (and, by the loop, with the environment's and a resumed
checkpoint's), field by field. Mixed runs draw a fixed fraction of every batch from them (RLPD, Ball et al.
2023: 50 % online, 50 % logged).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mpo_ros.contract.spec import RobotSpec, contract_differences
from mpo_ros.data.dataset import Dataset, load_dataset
from mpo_ros.errors import DatasetError
from mpo_ros.mpo.learner import MPOLearner
from mpo_ros.training.replay import ReplayBuffer

__all__ = [
    "InProcessSource",
    "data_replay",
    "datasets_contract",
    "fill_replay",
    "load_datasets",
    "observe_datasets",
]

log = logging.getLogger(__name__)


# --- datasets ---------------------------------------------------------------------------------------------


def load_datasets(paths: list[str] | tuple[str, ...]) -> list[Dataset]:
    """Load datasets; refuse mixed sizes or contracts (listing the differing fields) and non-finite values."""
    if not paths:
        raise DatasetError("give at least one dataset with --data data/<name> (made by `mpo-ros bag2data`)")
    datasets = [load_dataset(p) for p in paths]
    first = datasets[0]
    for dataset in datasets:
        _check_finite(dataset)
    for other in datasets[1:]:
        if (other.obs_dim, other.act_dim) != (first.obs_dim, first.act_dim):
            raise DatasetError(
                f"{other.path} has obs/act dims ({other.obs_dim}, {other.act_dim}) but {first.path} has "
                f"({first.obs_dim}, {first.act_dim}); train on datasets of one robot contract"
            )
        a, b = first.robot_spec, other.robot_spec
        if (a is None) != (b is None):
            raise DatasetError(f"{first.path} and {other.path}: one carries a robot contract, the other none")
        differences = [] if a is None or b is None else contract_differences(a, b, ("first", "other"))
        if differences:
            raise DatasetError(
                f"{other.path} and {first.path} were converted with different robot contracts:\n  "
                + "\n  ".join(differences)
                + "\nconvert every bag of one run with the same --robot spec"
            )
    if not any(len(d) for d in datasets):
        raise DatasetError(f"datasets {list(paths)} hold no transitions")
    return datasets


def _check_finite(dataset: Dataset, chunk: int = 65536) -> None:
    """A NaN reward or observation poisons every target it reaches: refuse it at load, naming the field."""
    for name in ("observations", "actions", "rewards", "next_observations"):
        array = getattr(dataset, name)
        for start in range(0, len(array), chunk):
            part = np.asarray(array[start : start + chunk])
            bad = ~np.isfinite(part)
            if bad.any():
                row = start + int(np.argwhere(bad)[0][0])
                raise DatasetError(
                    f"{dataset.path}: {name} holds {int(bad.sum())}+ non-finite value(s) (first at row {row}); "
                    "re-convert the bags (bag2data drops non-finite samples) or remove the dataset"
                )


def datasets_contract(datasets: list[Dataset]) -> RobotSpec | None:
    """The contract the datasets were converted with (checked equal across them by load_datasets), its
    MJCF located where bag2data found it (or in models/), so the run can simulate the same robot."""
    from mpo_ros.contract.resolve import locate_mjcf

    spec = datasets[0].robot_spec
    if spec is None:
        return None
    recorded = datasets[0].meta.get("mjcf_path")
    return locate_mjcf(spec, near=[Path(recorded).parent] if recorded else [])


def fill_replay(replay: ReplayBuffer, dataset: Dataset) -> int:
    """Add every episode of `dataset` to `replay` (episode-wise: [T+1] observations). Returns episodes."""
    observations = np.asarray(dataset.observations)
    next_observations = np.asarray(dataset.next_observations)
    for start, end in dataset.episode_bounds():
        replay.add_episode(
            np.concatenate([observations[start:end], next_observations[end - 1 : end]]),
            np.asarray(dataset.actions[start:end]),
            np.asarray(dataset.rewards[start:end]),
            terminated=bool(dataset.terminated[end - 1]),
            truncated=bool(dataset.truncated[end - 1]),
        )
    return dataset.num_episodes


def data_replay(datasets: list[Dataset], seed: int) -> ReplayBuffer:
    """One replay holding every transition of `datasets`, sized to fit them exactly."""
    total = sum(len(d) for d in datasets)
    replay = ReplayBuffer(max(total, 1), datasets[0].obs_dim, datasets[0].act_dim, seed=seed + 1)
    for dataset in datasets:
        fill_replay(replay, dataset)
    return replay


def observe_datasets(learner: MPOLearner, datasets: list[Dataset], chunk: int = 65536) -> None:
    """Feed the observations of the data to the learner's normaliser (in chunks: datasets may be mmapped)."""
    for dataset in datasets:
        for start in range(0, len(dataset), chunk):
            learner.observe(np.array(dataset.observations[start : start + chunk]))  # writable copy for torch


# --- the in-process environment ---------------------------------------------------------------------------


class InProcessSource:
    """One environment stepped in the training process, one step per call: exact resume.

    Acts uniformly at random during warm-up (diverse actions before the critic has any signal), then samples
    the learner's policy; the replay stores the unclipped sample and its log-density (for Retrace).
    """

    def __init__(self, env: Any, learner: MPOLearner, replay: ReplayBuffer, warmup_steps: int) -> None:
        self.env = env
        self.learner = learner
        self.replay = replay
        self.warmup_steps = warmup_steps
        self.observation: np.ndarray | None = None
        self._uniform_log_prob = -learner.act_dim * float(np.log(2.0))

    def step(self, counters: Any, finished: list[tuple[float, int]]) -> int:
        """One environment step into the replay; appends (return, length) of an episode that ended."""
        learner = self.learner
        if self.observation is None:
            obs, _ = self.env.reset()
            self.observation = np.asarray(obs, np.float32)
            learner.observe(self.observation)
            counters.at_boundary = False
        obs = self.observation
        if counters.step < self.warmup_steps:
            action = np.random.uniform(-1.0, 1.0, learner.act_dim).astype(np.float32)
            log_prob = self._uniform_log_prob
        else:
            action, log_prob_np = learner.act(obs)
            log_prob = float(log_prob_np)
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        next_obs = np.asarray(next_obs, np.float32)
        self.replay.add(obs, action, float(reward), next_obs, terminated, truncated, log_prob)
        learner.observe(next_obs)
        counters.step += 1
        counters.episode_return += float(reward)
        counters.episode_length += 1
        self.observation = next_obs
        if terminated or truncated:
            finished.append((counters.episode_return, counters.episode_length))
            counters.episodes += 1
            counters.episode_return, counters.episode_length = 0.0, 0
            counters.at_boundary = True
            self.observation = None
        return 1

    def close(self) -> None:
        self.env.close()
