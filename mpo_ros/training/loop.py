"""`mpo-ros train`: the one training loop, for online, mixed and offline training, in process or with Ray.

Read top to bottom, one iteration is: collect experience (one environment step in this process; whatever
chunks Ray actors have finished; nothing offline) -> the learner updates that the update:step ratio allows
-> log / evaluate / checkpoint on schedule. Offline training is the same loop with no environment steps:
``--steps`` then counts learner updates.

The ratio ``updates_per_step`` is a samples-per-insert limit (Acme/Reverb's rate limiter): after ``S``
environment steps past warm-up the learner has done exactly ``updates_per_step * (S - warmup + 1)``
updates, whether the steps came from this process or from N actors; actors may run ahead of the learner
by at most two chunks each, never further.

Checkpoints (see :mod:`mpo_ros.training.state`) are written between iterations only. SIGINT and SIGTERM
(what docker stop, SLURM and systemd send) are deferred to the end of the current iteration, which then
writes a checkpoint and stops; a second Ctrl-C stops at once, leaving the previous checkpoint. In process
(``--actors 0``), ``--resume`` from a checkpoint taken at an episode boundary (the periodic ones) continues
bit-for-bit as if never stopped (CPU, same thread count); from one taken mid-episode (the end of ``--steps``
or a signal) the unfinished episode is closed as truncated and a new one starts, the only difference.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mpo_ros.config import add_arguments as _add_config_arguments
from mpo_ros.config import from_args, save_yaml
from mpo_ros.contract.resolve import resolve_robot
from mpo_ros.errors import CheckpointError, ConfigError, DatasetError
from mpo_ros.mpo.abm import ABMConfig, ABMPrior
from mpo_ros.mpo.learner import MPOConfig, MPOLearner, metrics_to_floats, tune_cpu_allocator
from mpo_ros.training.config import RESUMABLE, TrainConfig
from mpo_ros.training.envs import GENERIC_REACH_ID, EnvFactory, parse_env_kwargs
from mpo_ros.training.metrics import ACTOR_KEYS, MetricsSink
from mpo_ros.training.replay import MixedReplay, ReplayBuffer
from mpo_ros.training.sources import (
    InProcessSource,
    data_replay,
    datasets_contract,
    load_datasets,
    observe_datasets,
)
from mpo_ros.training.state import CHECKPOINT_FORMAT, CHECKPOINT_NAME, TrainingState, load_checkpoint

__all__ = ["TrainConfig", "TrainingInterrupted", "add_arguments", "evaluate_learner", "run", "train"]

log = logging.getLogger(__name__)
ABM_KEYS = ["abm/loss", "abm/weight_mean", "abm/advantage_mean", "abm/prior_std"]


class TrainingInterrupted(Exception):  # noqa: N818 (a stop on request, not an error)
    """SIGINT/SIGTERM ended the run at an iteration boundary, after writing a checkpoint."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum = signum
        self.step = step


# --- the run ------------------------------------------------------------------------------------------


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training; returns the final evaluation and counters."""
    out = Path(config.out)
    ckpt_dir = out / "checkpoints"
    with run_lock(out):
        checkpoint = _checkpoint_to_resume(config, ckpt_dir)
        _seed_and_tune(config)
        state, factory, datasets = build_state(config)
        eval_env = factory.make()
        source: Any = None
        try:
            if not config.offline:
                source = _make_source(config, state, factory)
            if checkpoint is not None:
                state.restore(checkpoint, ckpt_dir, getattr(source, "env", None))
                _apply_resumed_changes(state, checkpoint, out)
                _after_restore(state, source)
            elif datasets:
                observe_datasets(state.learner, datasets)
            out.mkdir(parents=True, exist_ok=True)
            save_yaml(config, out / "config.yaml")
            keys = state.learner.metric_names() + (ABM_KEYS if state.prior else [])
            keys += ACTOR_KEYS if config.actors else []
            sink = MetricsSink(out, keys, state.counters.step if checkpoint is not None else None)
            try:
                with deferred_signals() as stop:
                    _loop(state, source, eval_env, sink, ckpt_dir, stop)
            finally:
                sink.close()
        finally:
            if source is not None:
                source.close()
            eval_env.close()
    counters = state.counters
    return {
        **counters.last_eval,
        "step": counters.step,
        "updates": state.learner.num_updates,
        "episodes": counters.episodes,
        "actor_restarts": counters.actor_restarts,
    }


def build_state(config: TrainConfig) -> tuple[TrainingState, EnvFactory, list[Any]]:
    """The run's contract, environment factory, learner, replays and prior, resolved from the config.

    The contract comes from the datasets when there are any (and the environment must match it), else from
    the environment; it is passed on explicitly, never rediscovered from the environment object.
    """
    datasets = load_datasets(config.data) if config.data else []
    data_contract = datasets_contract(datasets) if datasets else None
    env_id = config.env
    env_kwargs = parse_env_kwargs(config.env_kwargs)
    if config.robot:
        env_kwargs["robot"] = resolve_robot(config.robot, config.mjcf)
        env_id = env_id or GENERIC_REACH_ID
    if env_id is None:
        if not config.offline:
            raise ConfigError(
                "give --robot (a name, spec YAML or policy.onnx) or --env (e.g. Hopper-v5) to train online, or "
                "--data to train offline"
            )
        if data_contract is None:
            raise DatasetError(f"{datasets[0].path} carries no robot contract; pass --env to evaluate in")
        env_id = GENERIC_REACH_ID
    factory = EnvFactory.resolve(env_id, env_kwargs, config.max_episode_steps, contract=data_contract)
    probe = factory.make()
    obs_dim, act_dim = probe.observation_space.shape[0], probe.action_space.shape[0]
    probe.close()
    if datasets and (datasets[0].obs_dim, datasets[0].act_dim) != (obs_dim, act_dim):
        raise DatasetError(
            f"{env_id} has obs/act dims ({obs_dim}, {act_dim}) but the datasets ({datasets[0].obs_dim}, "
            f"{datasets[0].act_dim}); train on the robot the data was recorded with"
        )
    learner = MPOLearner(obs_dim, act_dim, MPOConfig.from_any(config))
    replay = (
        None if config.offline else ReplayBuffer(config.replay_capacity, obs_dim, act_dim, seed=config.seed)
    )
    logged = [data_replay(datasets, config.seed)] if datasets else []
    sampler: ReplayBuffer | MixedReplay
    if config.offline:
        sampler = logged[0]
    elif logged:
        assert replay is not None
        sampler = MixedReplay([replay, logged[0]], [1.0 - config.data_ratio, config.data_ratio])
        log.info(
            "mixing %d logged transitions at ratio %.2f with online rollouts",
            len(logged[0]),
            config.data_ratio,
        )
    else:
        assert replay is not None
        sampler = replay
    use_prior = config.behaviour_prior == "abm" or (config.behaviour_prior == "auto" and config.offline)
    prior = ABMPrior(learner, ABMConfig.from_any(config)).attach() if use_prior else None
    contract = data_contract or factory.contract
    source = "datasets" if data_contract else ("environment" if factory.contract else "none")
    state = TrainingState(
        config, learner, sampler, replay, logged, prior, contract, source, factory.describe()
    )
    state.counters.next_eval = config.eval_every
    state.counters.next_checkpoint = config.checkpoint_every
    state.counters.next_log = config.log_every
    return state, factory, datasets


def _make_source(config: TrainConfig, state: TrainingState, factory: EnvFactory) -> Any:
    assert state.replay is not None
    if config.actors:
        from mpo_ros.training.actors import ActorPool

        return ActorPool(config, factory, state.learner, state.replay)
    env = factory.make()
    env.reset(seed=config.seed)  # seeds the environment's generator; the first episode starts in the loop
    return InProcessSource(env, state.learner, state.replay, config.warmup_steps)


def _after_restore(state: TrainingState, source: Any) -> None:
    counters = state.counters
    if isinstance(source, InProcessSource) and not counters.at_boundary:
        log.warning("checkpoint was written mid-episode at step %d: starting a new episode", counters.step)
        assert state.replay is not None
        state.replay.end_episode()
        counters.at_boundary, counters.episode_return, counters.episode_length = True, 0.0, 0
    if source is not None and not isinstance(source, InProcessSource):
        source.resume(counters)
    log.info("resumed %s at step %d (%d updates)", state.config.out, counters.step, state.learner.num_updates)


def _checkpoint_to_resume(config: TrainConfig, ckpt_dir: Path) -> dict[str, Any] | None:
    latest = ckpt_dir / CHECKPOINT_NAME
    out = ckpt_dir.parent
    if not config.resume:
        if latest.is_file():
            raise ConfigError(f"{latest} exists: pass --resume to continue that run, or choose another --out")
        leftovers = sorted(
            p.name for p in (out / "metrics.csv", out / "config.yaml", out / "tb") if p.exists()
        )
        if leftovers:
            raise ConfigError(
                f"{out} already holds a run without a checkpoint ({', '.join(leftovers)}); choose another --out "
                "or delete that folder first (a new run would mix its metrics with the old ones)"
            )
        return None
    if not latest.is_file():
        raise CheckpointError(f"--resume given but {latest} does not exist; start the run without --resume")
    checkpoint = load_checkpoint(latest)
    saved = checkpoint["metadata"]
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{latest} is a format-{saved.get('format')} checkpoint from an older mpo_ros; it can still be "
            f"exported and evaluated, but training resumes only from format-{CHECKPOINT_FORMAT} checkpoints"
        )
    changes = config_changes(saved.get("config", {}), config)
    refused = {k: v for k, v in changes.items() if k not in RESUMABLE}
    if refused:
        lines = [f"{k}: run {was!r}, now {now!r}" for k, (was, now) in sorted(refused.items())]
        raise ConfigError(
            f"cannot resume {out}: {len(lines)} option(s) differ from the run's and would change the algorithm "
            "or the data:\n  " + "\n  ".join(lines) + "\nresume without them (`mpo-ros train --out "
            f"{out} --resume` takes the run's own values), or start a new run with another --out"
        )
    return checkpoint


def config_changes(saved: dict[str, Any], config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Options whose value differs from a checkpoint's config: name -> (was, now)."""
    now = dataclasses.asdict(config)

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    return {
        key: (saved.get(key), plain(value))
        for key, value in now.items()
        if key in saved and plain(saved[key]) != plain(value)
    }


def _apply_resumed_changes(state: TrainingState, checkpoint: dict[str, Any], out: Path) -> None:
    """Learning rates given at resume go into the restored optimisers (which would otherwise keep the old
    ones); every change is logged and appended to ``config_history.yaml``."""
    changes = config_changes(checkpoint["metadata"].get("config", {}), state.config)
    changes = {k: v for k, v in changes.items() if k not in ("resume", "out", "config")}
    if not changes:
        return
    learner = state.learner
    optimizers = {
        "policy_lr": [learner.actor_optimizer],
        "critic_lr": [learner.critic_optimizer],
        "dual_lr": [learner.dual_optimizer],
        "abm_lr": [state.prior.optimizer] if state.prior is not None else [],
    }
    for key, (_, value) in changes.items():
        for optimizer in optimizers.get(key, []):
            for group in optimizer.param_groups:
                group["lr"] = value
        level = logging.WARNING if key in optimizers else logging.INFO  # learning rates change the algorithm
        log.log(level, "resumed with %s changed: %r -> %r", key, changes[key][0], value)
    history = out / "config_history.yaml"
    entries = yaml.safe_load(history.read_text()) if history.is_file() else []
    entries = entries if isinstance(entries, list) else []
    entries.append(
        {
            "resumed_at_step": state.counters.step,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "changed": {k: {"was": was, "now": now} for k, (was, now) in changes.items()},
        }
    )
    history.write_text(yaml.safe_dump(entries, sort_keys=False))


def saved_run_config(out: Path) -> dict[str, Any] | None:
    """The config a run was checkpointed with (for `--resume` without repeating every option)."""
    latest = out / "checkpoints" / CHECKPOINT_NAME
    if not latest.is_file():
        return None
    saved = load_checkpoint(latest)["metadata"].get("config", {})
    known = set(TrainConfig.__dataclass_fields__)
    return {k: v for k, v in saved.items() if k in known and k not in ("resume", "out", "config")}


def _seed_and_tune(config: TrainConfig) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.device == "cpu":
        tune_cpu_allocator()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)


# --- the loop -------------------------------------------------------------------------------------------


def _loop(
    state: TrainingState, source: Any, eval_env: Any, sink: MetricsSink, ckpt_dir: Path, stop: Any
) -> None:
    from tqdm import tqdm

    config, counters, learner = state.config, state.counters, state.learner
    in_process = isinstance(source, InProcessSource)
    finished: list[tuple[float, int]] = []
    metrics: dict[str, torch.Tensor] = {}
    started, steps_at_start, elapsed_before = time.perf_counter(), counters.step, counters.elapsed_s
    unit = "update" if config.offline else "step"
    bar = tqdm(
        total=config.steps, initial=counters.step, disable=not config.progress, unit=unit, smoothing=0.05
    )

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    _skip_evaluated_step(state)  # a resumed run already evaluated its last step
    while counters.step < config.steps:
        before = counters.step
        _collect(state, source, finished)  # 1. experience
        # 2. learning, at the configured update:step ratio
        due = 1 if source is None else updates_due(config, counters.step, learner)
        for _ in range(due):
            metrics = _update(state, metrics)
        if source is not None and not in_process:
            source.sync(learner)
        bar.update(counters.step - before)
        # 3. bookkeeping (the loop boundary: every state here is consistent)
        if counters.step >= counters.next_log:
            counters.next_log += config.log_every
            counters.elapsed_s = elapsed()
            rate = (counters.step - steps_at_start) / max(time.perf_counter() - started, 1e-9)
            sink.write(counters.step, _log_row(state, source, metrics, finished, rate))
        if config.eval_every and counters.step >= counters.next_eval and counters.step < config.steps:
            counters.next_eval += config.eval_every
            counters.elapsed_s = elapsed()
            _evaluate_and_log(state, eval_env, sink, bar)
        boundary = counters.at_boundary or not in_process
        if config.checkpoint_every and counters.step >= counters.next_checkpoint and boundary:
            counters.next_checkpoint = counters.step + config.checkpoint_every
            counters.elapsed_s = elapsed()
            state.save(ckpt_dir, getattr(source, "env", None))
        if stop.signum is not None:
            counters.elapsed_s = elapsed()
            bar.close()
            _stop_with_checkpoint(state, source, ckpt_dir, stop.signum)

    bar.close()
    if source is not None and not in_process:
        for _ in range(updates_due(config, counters.step, learner)):  # the last chunks' share of updates
            metrics = _update(state, metrics)
    if counters.last_eval.get("step") != counters.step:
        counters.elapsed_s = elapsed()
        _evaluate_and_log(state, eval_env, sink, None)
    _skip_evaluated_step(state)
    counters.elapsed_s = elapsed()
    state.save(ckpt_dir, getattr(source, "env", None))
    log.info(
        "finished %s at step %d: eval return %.1f",
        config.out,
        counters.step,
        counters.last_eval["eval/return"],
    )


def _skip_evaluated_step(state: TrainingState) -> None:
    """Move the next periodic evaluation past a step that was already evaluated. A run whose last step is an
    evaluation step evaluates it once at the end (the loop's periodic one stops short of the last step);
    without this the saved ``next_eval`` stayed on that step and a ``--resume`` evaluated again one step
    later, which an uninterrupted run never does."""
    counters, every = state.counters, state.config.eval_every
    if every and counters.last_eval.get("step") == counters.step:
        while counters.next_eval <= counters.step:
            counters.next_eval += every


def _collect(state: TrainingState, source: Any, finished: list[tuple[float, int]]) -> None:
    """One iteration's experience: an env step in process, finished actor chunks, or (offline) none."""
    counters = state.counters
    if source is None:
        counters.step += 1  # offline: one iteration is one update
    elif isinstance(source, InProcessSource):
        source.step(counters, finished)
    else:
        source.collect(counters, finished, block=updates_due(state.config, counters.step, state.learner) == 0)


def _log_row(
    state: TrainingState,
    source: Any,
    metrics: dict[str, torch.Tensor],
    finished: list[tuple[float, int]],
    steps_per_s: float,
) -> dict[str, float]:
    """A metrics.csv row: the learner's last metrics, the loop's rates and the episodes ended since the last
    row (which it consumes), and the actors' figures."""
    row: dict[str, float] = {"updates": state.learner.num_updates, "wall_s": state.counters.elapsed_s}
    row.update(metrics_to_floats(metrics))
    row["train/steps_per_s"] = steps_per_s
    row["train/episodes"] = float(state.counters.episodes)
    if finished:
        row["train/episode_return"] = float(np.mean([r for r, _ in finished]))
        row["train/episode_length"] = float(np.mean([n for _, n in finished]))
        finished.clear()
    if source is not None and not isinstance(source, InProcessSource):
        row.update(source.metrics(state.learner))
    return row


def _stop_with_checkpoint(state: TrainingState, source: Any, ckpt_dir: Path, signum: int) -> None:
    state.save(ckpt_dir, getattr(source, "env", None))
    log.warning(
        "%s: stopped at step %d with a checkpoint; continue with --resume",
        signal.Signals(signum).name,
        state.counters.step,
    )
    raise TrainingInterrupted(signum, state.counters.step)


def updates_due(config: TrainConfig, step: int, learner: MPOLearner) -> int:
    """Updates the learner owes after ``step`` environment steps: ``updates_per_step`` per step from the
    end of warm-up on, minus those done (the samples-per-insert limit, whatever produced the steps)."""
    if step < config.warmup_steps:
        return 0
    return max(0, config.updates_per_step * (step - config.warmup_steps + 1) - learner.num_updates)


def _update(state: TrainingState, metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    config = state.config
    batch = state.sampler.sample(config.batch_size, config.n_step)
    new: dict[str, torch.Tensor] = {}
    if state.prior is not None:
        new.update(state.prior.update(batch))
    new.update(state.learner.update(batch))
    return new


# --- evaluation -----------------------------------------------------------------------------------------


def evaluate_learner(learner: MPOLearner, env: Any, episodes: int, seed: int) -> dict[str, float]:
    """Deterministic-policy episodes through the one evaluator (:func:`training.evaluate.run_episodes`)."""
    from mpo_ros.training.evaluate import run_episodes

    result = run_episodes(lambda obs: learner.act(obs, deterministic=True)[0], env, episodes, seed)
    figures = {
        "eval/return": float(np.mean(result.returns)),
        "eval/return_std": float(np.std(result.returns)),
        "eval/length": float(np.mean(result.lengths)),
    }
    if result.successes is not None:
        figures["eval/success_rate"] = float(np.mean(result.successes))
    return figures


def _evaluate_and_log(state: TrainingState, eval_env: Any, sink: MetricsSink, bar: Any) -> None:
    from mpo_ros.training.plots import plot_learning_curve

    config, counters = state.config, state.counters
    result = evaluate_learner(state.learner, eval_env, config.eval_episodes, seed=config.seed + 1_000_000)
    counters.last_eval = {**result, "step": float(counters.step)}
    sink.write(counters.step, {"updates": state.learner.num_updates, "wall_s": counters.elapsed_s, **result})
    out = Path(config.out)
    title = f"MPO {state.env_description.get('env_id')}"
    if state.contract is not None:
        title += f" ({state.contract.name})"
    plot_learning_curve(out / "metrics.csv", out / "learning_curve.png", title=title)
    if bar is not None:
        bar.set_postfix(eval_return=f"{result['eval/return']:.1f}")
    log.debug("step %d eval %s", counters.step, result)


# --- signals and the run folder ----------------------------------------------------------------------------


class _StopFlag:
    signum: int | None = None


@contextlib.contextmanager
def deferred_signals() -> Iterator[_StopFlag]:
    """SIGINT/SIGTERM set a flag the loop reads at its boundary; a second SIGINT interrupts at once."""
    flag = _StopFlag()
    if threading_is_main():
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, _frame: Any) -> None:
            if flag.signum is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            flag.signum = signum
            log.warning(
                "%s received: stopping after this iteration (Ctrl-C again to stop now)",
                signal.Signals(signum).name,
            )

        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield flag
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
    else:  # signal handlers can only be installed from the main thread
        yield flag


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """One writer per run folder: ``<out>/.lock`` holds the writer's pid and host; a lock left by a process
    that no longer runs (on this host) is taken over with a warning."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write the run folder {out}: {exc.strerror or exc}; choose a writable --out (a folder)"
        ) from exc
    lock = out / ".lock"
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = lock.read_text().strip() if lock.is_file() else ""
            pid_text, _, host = owner.partition(" ")
            if host == socket.gethostname() and pid_text.isdigit() and not _alive(int(pid_text)):
                log.warning("%s: taking over the lock of process %s, which no longer runs", out, pid_text)
                lock.unlink(missing_ok=True)
                continue
            raise ConfigError(
                f"{out} is being written by process {pid_text or '?'} on {host or '?'} ({lock}); wait for it, "
                f"stop it, or choose another --out (delete {lock} only if that process is gone)"
            ) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    try:
        yield
    finally:
        if lock.is_file() and lock.read_text().strip() == me:
            lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- CLI ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser, TrainConfig)


def run(args: argparse.Namespace) -> int:
    config = from_args(TrainConfig, args, getattr(args, "config", None))
    if config.resume:
        # The run's own options are the base: `--out runs/x --resume --steps N` needs nothing else, and an
        # option that differs is one the user asked for (and is applied or refused, see RESUMABLE).
        base = saved_run_config(Path(config.out))
        if base is not None:
            config = from_args(TrainConfig, args, getattr(args, "config", None), base=base)
    try:
        summary = train(config)
    except TrainingInterrupted as exc:
        print(f"{exc}; checkpoint in {config.out}/checkpoints, continue with --resume")
        return 128 + exc.signum
    print(
        f"step {summary['step']}  updates {summary['updates']}  "
        f"eval return {summary.get('eval/return', float('nan')):.1f}  -> {config.out}"
    )
    return 0
