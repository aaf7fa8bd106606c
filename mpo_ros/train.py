"""`mpo-ros train`: MPO on a gymnasium environment, with evaluation, checkpoints and exact resume.

The loop, top to bottom: act (uniform random during warm-up, then a sample of the policy) -> step the
environment -> store the transition -> update the observation statistics -> ``updates_per_step`` learner
updates -> log / evaluate / checkpoint on schedule.

Actions: every environment is wrapped with ``RescaleAction`` to [-1, 1], so a checkpoint knows nothing about
the robot's units (the robot contract maps [-1, 1] to commands). Sampled actions are clipped by the wrapper
``ClipAction``; the replay stores the unclipped sample (see ``mpo.networks.Critic``).

Checkpoints (``<out>/checkpoints/latest.pt`` + ``replay-<step>.npz``) are written atomically and read with
``torch.load(weights_only=True)``. Periodic checkpoints are taken at the first episode boundary after
``checkpoint_every`` steps: at a boundary the whole training state is learner + replay + counters + RNG states
(python, numpy, torch, the environment's generator), so ``--resume`` continues bit-for-bit as if never stopped
(CPU, same thread count). The checkpoint at the end of ``--steps`` (or on Ctrl-C) may fall mid-episode; resuming
from it starts a fresh episode, which is the only difference from an uninterrupted run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mpo_ros.config import add_arguments as _add_config_arguments
from mpo_ros.config import from_args, option, save_yaml, to_dict
from mpo_ros.errors import CheckpointError, ConfigError
from mpo_ros.mpo.abm import ABMConfig
from mpo_ros.mpo.learner import MPOConfig, MPOLearner, metrics_to_floats, tune_cpu_allocator
from mpo_ros.mpo.policy import CHECKPOINT_NAME, load_checkpoint
from mpo_ros.replay import ReplayBuffer

__all__ = ["TrainConfig", "add_arguments", "evaluate", "make_env", "run", "train"]

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1


@dataclasses.dataclass
class TrainConfig(MPOConfig, ABMConfig):
    """Training-loop options (the algorithm's options are inherited from :class:`MPOConfig`)."""

    env: str = option("Hopper-v5", "gymnasium environment id (e.g. Hopper-v5, mpo_ros_sim:Arm2Reach-v0)")
    steps: int = option(300_000, "total environment steps of the run (a resumed run continues up to it)")
    seed: int = option(0, "seed of python, numpy, torch, the environment and the replay")
    out: str = option("runs/default", "run directory: config.yaml, metrics.csv, tb/, checkpoints/, plots")
    config: str | None = option(None, "YAML file of option values (flags given on the command line win)")
    resume: bool = option(False, "continue the run in --out from checkpoints/latest.pt (replay included)")
    batch_size: int = option(256, "sequences per learner update (Acme: 256)")
    warmup_steps: int = option(
        5_000, "uniformly random steps before the first update (CleanRL SAC learning_starts: 5000)"
    )
    updates_per_step: int = option(
        1, "learner updates per environment step (Acme: samples_per_insert 256 / batch 256 = 1)"
    )
    replay_capacity: int = option(1_000_000, "transitions kept in replay (Acme max_replay_size: 1e6)")
    eval_every: int = option(10_000, "environment steps between evaluations (0: only at the end)")
    eval_episodes: int = option(10, "episodes per evaluation, deterministic policy clamp(mean)")
    checkpoint_every: int = option(
        10_000,
        "steps between checkpoints (taken at the next episode boundary; one is always written at the end)",
    )
    log_every: int = option(1_000, "environment steps between metrics.csv / TensorBoard rows")
    env_kwargs: str = option(
        "", "keyword arguments for gym.make as a YAML/JSON mapping, e.g. '{randomize: train}'"
    )
    max_episode_steps: int | None = option(None, "override the environment's time limit (None: keep it)")
    threads: int = option(0, "torch intra-op threads (0: leave torch's default)")
    progress: bool = option(True, "show a tqdm progress bar")
    # Logged data (mpo_ros/data/training.py): datasets from `mpo-ros bag2data`, alone or mixed with --env.
    data: list[str] = option([], "datasets from `mpo-ros bag2data` to train from (data/<name> ...)")  # noqa: RUF009
    data_ratio: float = option(
        1.0,
        "fraction of each batch drawn from --data: 1 trains offline from the datasets alone (--steps then "
        "counts learner updates; evaluation in the datasets' robot env); below 1 mixes with --env rollouts "
        "(RLPD: 0.5)",
    )
    behaviour_prior: str = option(
        "auto",
        "E-step prior: 'abm' (advantage-weighted behaviour model, mpo/abm.py), 'none' (pi_old, plain MPO), "
        "'auto' (abm when training offline, none otherwise)",
        choices=("auto", "abm", "none"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        for name in ("steps", "batch_size", "eval_episodes", "log_every", "replay_capacity"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("warmup_steps", "updates_per_step", "eval_every", "checkpoint_every", "threads"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if self.warmup_steps < 1 and self.updates_per_step > 0:
            problems.append("warmup_steps must be >= 1 so the replay holds data before the first update")
        if problems:
            raise ConfigError("; ".join(problems))


# --- environments -------------------------------------------------------------------------------------


def make_env(env_id: str, max_episode_steps: int | None = None, env_kwargs: str | dict | None = None) -> Any:
    """``gym.make`` + actions rescaled to [-1, 1] and clipped; checks the spaces are flat boxes."""
    import gymnasium as gym
    import yaml
    from gymnasium.wrappers import ClipAction, RescaleAction

    kwargs = yaml.safe_load(env_kwargs) if isinstance(env_kwargs, str) else env_kwargs
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ConfigError(f"env_kwargs must be a mapping like '{{randomize: train}}', got {env_kwargs!r}")
    try:
        env = gym.make(env_id, max_episode_steps=max_episode_steps, **(kwargs or {}))
    except gym.error.Error as exc:
        raise ConfigError(
            f"cannot make environment {env_id!r}: {exc}. Registered ids include Hopper-v5, HalfCheetah-v5; "
            "mpo_ros environments are named like mpo_ros_sim:Arm2Reach-v0 (module prefix imports them)"
        ) from exc
    act_space, obs_space = env.action_space, env.observation_space
    if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
        raise ConfigError(f"{env_id}: MPO here needs a 1-D Box action space, got {act_space}")
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        raise ConfigError(
            f"{env_id}: action bounds must be finite to rescale them to [-1, 1], got {act_space}"
        )
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ConfigError(
            f"{env_id}: needs a flat 1-D Box observation space, got {obs_space}; wrap the environment with "
            "gymnasium.wrappers.FlattenObservation when registering it"
        )
    bound = np.ones(act_space.shape, np.float32)
    return ClipAction(RescaleAction(env, -bound, bound))


def evaluate(learner: MPOLearner, env: Any, episodes: int, seed: int) -> dict[str, float]:
    """Deterministic-policy episodes, each reset with its own fixed seed (the same starts at every eval)."""
    returns, lengths, successes = [], [], []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        total, length, done = 0.0, 0, False
        while not done:
            action, _ = learner.act(obs, deterministic=True)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            length += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
        if "is_success" in info:
            successes.append(float(info["is_success"]))
    result = {
        "eval/return": float(np.mean(returns)),
        "eval/return_std": float(np.std(returns)),
        "eval/length": float(np.mean(lengths)),
    }
    if successes:
        result["eval/success_rate"] = float(np.mean(successes))
    return result


# --- RNG state (weights_only-loadable: tensors, ints, lists, dicts) ----------------------------------------


def _rng_state(env: Any) -> dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
        "torch": torch.get_rng_state(),
        "env": env.unwrapped.np_random.bit_generator.state,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _set_rng_state(state: dict[str, Any], env: Any) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    env.unwrapped.np_random.bit_generator.state = state["env"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- checkpoints --------------------------------------------------------------------------------------


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclasses.dataclass
class _Loop:
    """Counters of the training loop (saved in the checkpoint)."""

    step: int = 0
    episodes: int = 0
    episode_return: float = 0.0
    episode_length: int = 0
    at_boundary: bool = True  # no episode in progress
    next_eval: int = 0
    next_checkpoint: int = 0
    next_log: int = 0
    elapsed_s: float = 0.0
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)


def _robot_spec_json(env: Any) -> str | None:
    spec = getattr(env.unwrapped, "robot_spec", None)
    return None if spec is None else str(spec.to_json())


def _save_checkpoint(
    ckpt_dir: Path,
    config: TrainConfig,
    learner: MPOLearner,
    replay: ReplayBuffer,
    loop: _Loop,
    env: Any,
    prior: Any = None,
    sampler: Any = None,
) -> None:
    """Write checkpoints/latest.pt atomically; ``prior``: the ABMPrior of --data runs, saved whole;
    ``sampler``: their MixedReplay, whose per-buffer RNG states are saved."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    replay_name = f"replay-{loop.step}.npz"
    replay.save(ckpt_dir / replay_name)
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "env_id": config.env,
        "obs_dim": learner.obs_dim,
        "act_dim": learner.act_dim,
        "action_space": "[-1, 1] (RescaleAction); deterministic action = clamp(mean, -1, 1)",
        "step": loop.step,
        "updates": learner.num_updates,
        "config": _yaml_safe(to_dict(config)),
        "robot_spec_json": _robot_spec_json(env),
        "eval/return": loop.last_eval.get("eval/return"),
        "eval/success_rate": loop.last_eval.get("eval/success_rate"),
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-loadable
        "written_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    state = {
        "metadata": metadata,
        "learner": learner.state_dict(),
        "loop": dataclasses.asdict(loop),
        "replay_file": replay_name,
        "rng": _rng_state(env),
    }
    if prior is not None:
        state["abm_prior"] = prior.state_dict()
    if sampler is not None:
        state["sampler_rng"] = sampler.rng_states()
    _atomic_torch_save(state, ckpt_dir / CHECKPOINT_NAME)
    for old in ckpt_dir.glob("replay-*.npz"):
        if old.name != replay_name:
            old.unlink(missing_ok=True)


def _yaml_safe(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


# --- metrics ------------------------------------------------------------------------------------------

_EVAL_KEYS = ["eval/return", "eval/return_std", "eval/length", "eval/success_rate"]
_TRAIN_KEYS = ["train/episode_return", "train/episode_length", "train/episodes", "train/steps_per_s"]


class _MetricsSink:
    """metrics.csv (fixed header, appended across resumes) + TensorBoard."""

    def __init__(self, out: Path, learner_keys: list[str], resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.header = ["step", "updates", "wall_s", *_TRAIN_KEYS, *learner_keys, *_EVAL_KEYS]
        self.path = out / "metrics.csv"
        fresh = resume_step is None or not self.path.is_file()
        if not fresh:
            self._truncate_after(resume_step or 0)
        self.file = self.path.open("w" if fresh else "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.header, extrasaction="ignore")
        if fresh:
            self.writer.writeheader()
        self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
        with self.path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
            header = rows and list(rows[0].keys())
        with self.path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header or self.header)
            writer.writeheader()
            writer.writerows(r for r in rows if int(float(r["step"])) <= step)

    def write(self, step: int, values: dict[str, float]) -> None:
        self.writer.writerow({"step": step, **values})
        self.file.flush()
        for key, value in values.items():
            if "/" in key:
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        self.file.close()
        self.tb.close()


# --- the loop -----------------------------------------------------------------------------------------


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training; returns the final evaluation and counters."""
    out = Path(config.out)
    ckpt_dir = out / "checkpoints"
    if config.data and config.data_ratio >= 1.0:
        from mpo_ros.data.training import train_offline

        return train_offline(config)
    checkpoint = _load_for_resume(config, ckpt_dir)
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.device == "cpu":
        tune_cpu_allocator()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)

    env = make_env(config.env, config.max_episode_steps, config.env_kwargs)
    eval_env = make_env(config.env, config.max_episode_steps, config.env_kwargs)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    learner = MPOLearner(obs_dim, act_dim, MPOConfig.from_any(config))
    replay = ReplayBuffer(config.replay_capacity, obs_dim, act_dim, seed=config.seed)
    sampler, prior = None, None
    if config.data:
        from mpo_ros.data.training import mixed_sources, restore_prior

        sampler, prior = mixed_sources(config, learner, replay)
        if checkpoint is not None and prior is not None:
            restore_prior(prior, checkpoint)
    loop = _Loop(
        next_eval=config.eval_every, next_checkpoint=config.checkpoint_every, next_log=config.log_every
    )
    env.reset(seed=config.seed)  # seeds the environment's generator; the first episode starts below
    if checkpoint is not None:
        learner.load_state_dict(checkpoint["learner"])
        replay.load(ckpt_dir / checkpoint["replay_file"])
        loop = _Loop(**checkpoint["loop"])
        _set_rng_state(checkpoint["rng"], env)
        if sampler is not None and "sampler_rng" in checkpoint:
            sampler.set_rng_states(checkpoint["sampler_rng"])
        elif sampler is not None:
            log.warning("checkpoint has no logged-data sampler state (older mpo_ros): resume is not exact")
        if not loop.at_boundary:
            log.warning("checkpoint was written mid-episode at step %d: starting a new episode", loop.step)
            replay.end_episode()
            loop.at_boundary, loop.episode_return, loop.episode_length = True, 0.0, 0
        log.info("resumed %s at step %d (%d updates, %d transitions)", out, loop.step, learner.num_updates,
                 len(replay))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(config, out / "config.yaml")
    sink = _MetricsSink(out, learner.metric_names(), loop.step if checkpoint is not None else None)
    try:
        _run_loop(config, env, eval_env, learner, replay, loop, sink, ckpt_dir, sampler, prior)
    except KeyboardInterrupt:
        log.warning("interrupted at step %d: writing a checkpoint (resume with --resume)", loop.step)
        _save_checkpoint(ckpt_dir, config, learner, replay, loop, env, prior, sampler)
        raise
    finally:
        sink.close()
        env.close()
        eval_env.close()
    return {**loop.last_eval, "step": loop.step, "updates": learner.num_updates, "episodes": loop.episodes}


def _load_for_resume(config: TrainConfig, ckpt_dir: Path) -> dict[str, Any] | None:
    latest = ckpt_dir / CHECKPOINT_NAME
    if not config.resume:
        if latest.is_file():
            raise ConfigError(f"{latest} exists: pass --resume to continue that run, or choose another --out")
        return None
    if not latest.is_file():
        raise CheckpointError(f"--resume given but {latest} does not exist; start the run without --resume")
    checkpoint = load_checkpoint(latest)
    saved = checkpoint["metadata"]
    if saved["env_id"] != config.env:
        raise ConfigError(f"cannot resume: the run used env {saved['env_id']!r}, not {config.env!r}")
    return checkpoint


def _run_loop(
    config: TrainConfig,
    env: Any,
    eval_env: Any,
    learner: MPOLearner,
    replay: ReplayBuffer,
    loop: _Loop,
    sink: _MetricsSink,
    ckpt_dir: Path,
    sampler: Any = None,
    prior: Any = None,
) -> None:
    """``sampler``: a MixedReplay over ``replay`` and logged data (--data); ``prior``: an ABMPrior to update."""
    from tqdm import tqdm

    act_dim = learner.act_dim
    uniform_log_prob = -act_dim * float(np.log(2.0))
    out = Path(config.out)
    obs: np.ndarray | None = None
    metrics: dict[str, torch.Tensor] = {}
    recent_returns: list[float] = []
    recent_lengths: list[int] = []
    started, steps_at_start = time.perf_counter(), loop.step
    elapsed_before = loop.elapsed_s
    bar = tqdm(
        total=config.steps, initial=loop.step, disable=not config.progress, unit="step", smoothing=0.05
    )

    while loop.step < config.steps:
        if obs is None:
            obs, _ = env.reset()
            obs = np.asarray(obs, np.float32)
            learner.observe(obs)
            loop.at_boundary = False
        if loop.step < config.warmup_steps:
            # Uniform exploration fills the replay with diverse actions before the critic has any signal.
            action = np.random.uniform(-1.0, 1.0, act_dim).astype(np.float32)
            log_prob = uniform_log_prob
        else:
            action, log_prob_np = learner.act(obs)
            log_prob = float(log_prob_np)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        next_obs = np.asarray(next_obs, np.float32)
        replay.add(obs, action, float(reward), next_obs, terminated, truncated, log_prob)
        learner.observe(next_obs)
        loop.step += 1
        loop.episode_return += float(reward)
        loop.episode_length += 1
        obs = next_obs
        if terminated or truncated:
            recent_returns.append(loop.episode_return)
            recent_lengths.append(loop.episode_length)
            loop.episodes += 1
            loop.episode_return, loop.episode_length = 0.0, 0
            loop.at_boundary = True
            obs = None

        if loop.step >= config.warmup_steps:
            for _ in range(config.updates_per_step):
                batch = (sampler or replay).sample(config.batch_size, config.n_step)
                if prior is not None:
                    prior.update(batch)
                metrics = learner.update(batch)
        bar.update(1)

        if loop.step >= loop.next_log:
            loop.next_log += config.log_every
            loop.elapsed_s = elapsed_before + time.perf_counter() - started
            row = metrics_to_floats(metrics)
            row["train/steps_per_s"] = (loop.step - steps_at_start) / max(time.perf_counter() - started, 1e-9)
            row["train/episodes"] = float(loop.episodes)
            if recent_returns:
                row["train/episode_return"] = float(np.mean(recent_returns))
                row["train/episode_length"] = float(np.mean(recent_lengths))
                recent_returns.clear()
                recent_lengths.clear()
            sink.write(loop.step, {"updates": learner.num_updates, "wall_s": loop.elapsed_s, **row})
        if config.eval_every and loop.step >= loop.next_eval:
            loop.next_eval += config.eval_every
            _evaluate_and_log(config, learner, eval_env, loop, sink, bar)
        if config.checkpoint_every and loop.step >= loop.next_checkpoint and loop.at_boundary:
            loop.next_checkpoint = loop.step + config.checkpoint_every
            loop.elapsed_s = elapsed_before + time.perf_counter() - started
            _save_checkpoint(ckpt_dir, config, learner, replay, loop, env, prior, sampler)

    bar.close()
    if not loop.last_eval or loop.last_eval.get("step") != loop.step:
        _evaluate_and_log(config, learner, eval_env, loop, sink, None)
    loop.elapsed_s = elapsed_before + time.perf_counter() - started
    _save_checkpoint(ckpt_dir, config, learner, replay, loop, env, prior, sampler)
    log.info("finished %s at step %d: eval return %.1f", out, loop.step, loop.last_eval["eval/return"])


def _evaluate_and_log(
    config: TrainConfig, learner: MPOLearner, eval_env: Any, loop: _Loop, sink: _MetricsSink, bar: Any
) -> None:
    from mpo_ros.plots import plot_learning_curve

    result = evaluate(learner, eval_env, config.eval_episodes, seed=config.seed + 1_000_000)
    loop.last_eval = {**result, "step": float(loop.step)}
    sink.write(loop.step, {"updates": learner.num_updates, **result})
    out = Path(config.out)
    plot_learning_curve(out / "metrics.csv", out / "learning_curve.png", title=f"MPO {config.env}")
    if bar is not None:
        bar.set_postfix(eval_return=f"{result['eval/return']:.1f}")
    log.debug("step %d eval %s", loop.step, result)


# --- CLI ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    config = from_args(TrainConfig, args, getattr(args, "config", None))
    summary = train(config)
    print(
        f"step {summary['step']}  updates {summary['updates']}  "
        f"eval return {summary.get('eval/return', float('nan')):.1f}  -> {config.out}"
    )
    return 0
