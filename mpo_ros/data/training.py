"""Train MPO from converted datasets: offline (datasets alone) or mixed with online simulation.

`mpo-ros train --data data/<name>` lands in :func:`train_offline`: every episode of every dataset
goes into one replay (episode-wise, so n-step targets never cross an episode boundary), the
observation normaliser sees the whole data once, and the learner runs ``--steps`` updates with the
ABM prior (mpo/abm.py) in place of pi_old unless ``--behaviour-prior none``. Evaluation runs the
deterministic policy in the simulated robot the datasets were recorded for, so "better than the
data" is measured, not assumed.

`mpo-ros train --env ... --data ... --data-ratio 0.5` stays in train.py's loop; it calls
:func:`data_replay` here for the logged half of a MixedReplay (RLPD, Ball et al. 2023).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mpo_ros.data.dataset import Dataset, load_dataset
from mpo_ros.errors import CheckpointError, ConfigError, DatasetError
from mpo_ros.mpo.abm import ABMConfig, ABMPrior
from mpo_ros.mpo.learner import MPOConfig, MPOLearner, metrics_to_floats
from mpo_ros.replay import MixedReplay, ReplayBuffer

__all__ = [
    "data_replay",
    "dataset_env_id",
    "fill_replay",
    "load_datasets",
    "mixed_sources",
    "observe_datasets",
    "restore_prior",
    "train_offline",
]

log = logging.getLogger(__name__)
ABM_KEYS = ["abm/loss", "abm/weight_mean", "abm/advantage_mean", "abm/prior_std"]


def load_datasets(paths: list[str] | tuple[str, ...]) -> list[Dataset]:
    """Load datasets and check they share observation/action sizes and robot contract."""
    if not paths:
        raise DatasetError("give at least one dataset with --data data/<name> (made by `mpo-ros bag2data`)")
    datasets = [load_dataset(p) for p in paths]
    first = datasets[0]
    for other in datasets[1:]:
        if (other.obs_dim, other.act_dim) != (first.obs_dim, first.act_dim):
            raise DatasetError(
                f"{other.path} has obs/act dims ({other.obs_dim}, {other.act_dim}) but {first.path} has "
                f"({first.obs_dim}, {first.act_dim}); train on datasets of one robot contract"
            )
        if other.meta.get("robot_spec") != first.meta.get("robot_spec"):
            raise DatasetError(f"{other.path} and {first.path} were converted with different robot contracts")
    if not any(len(d) for d in datasets):
        raise DatasetError(f"datasets {list(paths)} hold no transitions")
    return datasets


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


def dataset_env_id(datasets: list[Dataset]) -> str:
    """The simulated environment of the robot the datasets were recorded on."""
    spec = datasets[0].robot_spec
    if spec is None:
        raise DatasetError(f"{datasets[0].path} carries no robot contract; pass --env to evaluate in")
    import mpo_ros_sim

    try:
        return mpo_ros_sim.env_id_for_robot(spec.name)
    except KeyError as exc:
        raise ConfigError(
            f"no simulated environment for robot '{spec.name}' to evaluate offline training: {exc}"
        ) from exc


def _use_prior(config: Any, offline: bool) -> bool:
    choice = getattr(config, "behaviour_prior", "auto")
    return choice == "abm" or (choice == "auto" and offline)


def mixed_sources(
    config: Any, learner: MPOLearner, online: ReplayBuffer
) -> tuple[MixedReplay, ABMPrior | None]:
    """The replay of `mpo-ros train --env ... --data ... --data-ratio r`: online and logged data mixed.

    Every batch takes a fraction `r` from the datasets and `1 - r` from online rollouts (symmetric
    sampling, RLPD: r = 0.5), so the logged data keep their weight however much online data piles up.
    Before the first online step the whole batch comes from the data (MixedReplay's empty-buffer rule).
    """
    if not 0.0 < config.data_ratio < 1.0:
        raise ConfigError(
            f"--data-ratio {config.data_ratio} must lie in (0, 1) to mix data with --env rollouts"
        )
    datasets = load_datasets(config.data)
    if (datasets[0].obs_dim, datasets[0].act_dim) != (learner.obs_dim, learner.act_dim):
        raise DatasetError(
            f"{config.env} has obs/act dims ({learner.obs_dim}, {learner.act_dim}) but the datasets "
            f"({datasets[0].obs_dim}, {datasets[0].act_dim}); mix data recorded on the robot of --env"
        )
    observe_datasets(learner, datasets)
    logged = data_replay(datasets, config.seed)
    prior = (
        ABMPrior(learner, ABMConfig.from_any(config)).attach() if _use_prior(config, offline=False) else None
    )
    log.info(
        "mixing %d logged transitions at ratio %.2f with online rollouts", len(logged), config.data_ratio
    )
    return MixedReplay([online, logged], [1.0 - config.data_ratio, config.data_ratio]), prior


def restore_prior(prior: ABMPrior, checkpoint: dict[str, Any]) -> None:
    """Load the ABM prior saved in a checkpoint; refuse a checkpoint written without one.

    Resuming with a fresh prior would silently restart the E-step's proposal from scratch while the
    policy and critic continue, so a checkpoint of a run without the prior is an error, not a warning.
    """
    if "abm_prior" not in checkpoint:
        raise CheckpointError(
            "cannot resume with the ABM prior: the checkpoint holds no prior state (the run was started "
            "with --behaviour-prior none, or by an older mpo_ros); resume with the run's own --behaviour-prior"
        )
    prior.load_state_dict(checkpoint["abm_prior"])


def train_offline(config: Any) -> dict[str, Any]:
    """`mpo-ros train --data ...` without online steps: `config.steps` learner updates on the datasets.

    `config` is train.TrainConfig; its env is replaced by the datasets' robot environment. With
    `--resume` the run continues from checkpoints/latest.pt up to `config.steps` updates: learner,
    ABM prior, replay sampling state and RNGs are restored, so a resumed run matches an uninterrupted one.
    """
    from mpo_ros import train as training_loop

    datasets = load_datasets(config.data)
    env_id = dataset_env_id(datasets)
    if config.env != env_id:
        log.info("offline training: evaluating in %s, the environment of the datasets' robot", env_id)
    config = dataclasses.replace(config, env=env_id)
    out = Path(config.out)
    ckpt_dir = out / "checkpoints"
    checkpoint = training_loop._load_for_resume(config, ckpt_dir)  # also refuses to overwrite a run
    if checkpoint is not None and checkpoint["metadata"].get("config", {}).get("data") != list(config.data):
        raise ConfigError(
            f"cannot resume {out}: it was trained on {checkpoint['metadata']['config'].get('data')}, "
            f"not {list(config.data)}; resume with the same --data"
        )
    if config.threads:
        torch.set_num_threads(config.threads)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    eval_env = training_loop.make_env(env_id, config.max_episode_steps, getattr(config, "env_kwargs", None))
    eval_env.reset(seed=config.seed)
    obs_dim, act_dim = eval_env.observation_space.shape[0], eval_env.action_space.shape[0]
    if (obs_dim, act_dim) != (datasets[0].obs_dim, datasets[0].act_dim):
        raise DatasetError(
            f"{env_id} has obs/act dims ({obs_dim}, {act_dim}) but the datasets ({datasets[0].obs_dim}, "
            f"{datasets[0].act_dim}); re-convert the bags with this robot's contract"
        )
    learner = MPOLearner(obs_dim, act_dim, MPOConfig.from_any(config))
    replay = data_replay(datasets, config.seed)
    prior = (
        ABMPrior(learner, ABMConfig.from_any(config)).attach() if _use_prior(config, offline=True) else None
    )
    loop = training_loop._Loop(
        next_eval=config.eval_every, next_checkpoint=config.checkpoint_every, next_log=config.log_every
    )
    if checkpoint is None:
        observe_datasets(learner, datasets)
    else:
        learner.load_state_dict(checkpoint["learner"])  # the normaliser included
        replay.load(ckpt_dir / checkpoint["replay_file"])  # the same transitions, and the sampling RNG
        if prior is not None:
            restore_prior(prior, checkpoint)
        loop = training_loop._Loop(**checkpoint["loop"])
        training_loop._set_rng_state(checkpoint["rng"], eval_env)
        log.info("resumed offline run %s at update %d", out, loop.step)
    log.info(
        "offline MPO%s on %d transitions from %d dataset(s), %d updates",
        " with ABM prior" if prior else "",
        len(replay),
        len(datasets),
        config.steps,
    )
    out.mkdir(parents=True, exist_ok=True)
    training_loop.save_yaml(config, out / "config.yaml")
    keys = learner.metric_names() + (ABM_KEYS if prior else [])
    sink = training_loop._MetricsSink(out, keys, loop.step if checkpoint is not None else None)
    try:
        _offline_loop(config, learner, prior, replay, eval_env, loop, sink, ckpt_dir)
        training_loop._save_checkpoint(ckpt_dir, config, learner, replay, loop, eval_env, prior)
    except KeyboardInterrupt:
        log.warning("interrupted at update %d: writing a checkpoint (resume with --resume)", loop.step)
        training_loop._save_checkpoint(ckpt_dir, config, learner, replay, loop, eval_env, prior)
        raise
    finally:
        sink.close()
        eval_env.close()
    return {**loop.last_eval, "step": loop.step, "updates": learner.num_updates, "episodes": 0}


def _offline_loop(
    config: Any,
    learner: MPOLearner,
    prior: ABMPrior | None,
    replay: ReplayBuffer,
    eval_env: Any,
    loop: Any,
    sink: Any,
    ckpt_dir: Path,
) -> None:
    from tqdm import tqdm

    from mpo_ros import train as training_loop

    started, elapsed_before, steps_at_start = time.perf_counter(), loop.elapsed_s, loop.step
    bar = tqdm(
        total=config.steps, initial=loop.step, disable=not config.progress, unit="update", smoothing=0.05
    )
    metrics: dict[str, torch.Tensor] = {}
    while loop.step < config.steps:
        batch = replay.sample(config.batch_size, config.n_step)
        if prior is not None:
            metrics = prior.update(batch)
        metrics.update(learner.update(batch))
        loop.step += 1
        bar.update(1)
        if loop.step >= loop.next_log:
            loop.next_log += config.log_every
            row = metrics_to_floats(metrics)
            row["train/steps_per_s"] = (loop.step - steps_at_start) / max(time.perf_counter() - started, 1e-9)
            wall_s = elapsed_before + time.perf_counter() - started
            sink.write(loop.step, {"updates": learner.num_updates, "wall_s": wall_s, **row})
        if (config.eval_every and loop.step >= loop.next_eval) or loop.step == config.steps:
            loop.next_eval += config.eval_every
            training_loop._evaluate_and_log(config, learner, eval_env, loop, sink, bar)
        if config.checkpoint_every and loop.step >= loop.next_checkpoint and loop.step < config.steps:
            loop.next_checkpoint = loop.step + config.checkpoint_every
            loop.elapsed_s = elapsed_before + time.perf_counter() - started
            training_loop._save_checkpoint(ckpt_dir, config, learner, replay, loop, eval_env, prior)
    bar.close()
    loop.elapsed_s = elapsed_before + time.perf_counter() - started
