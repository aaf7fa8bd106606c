"""Learner updates/s side by side: mpo_ros's default update, its variants, a Tonic-style MPO update and
stable-baselines3's SAC, plus environment steps/s.

Setting: HalfCheetah sizes (obs 17, act 6), batch 256, 256x256 networks, CPU; MPO with 20 action samples and
n-step 5. Every contender runs in its own fresh process, the contenders alternate (A B C A B C ...) for
``--rounds`` rounds, and each repetition times ``--updates`` updates *including drawing the batch from the
replay* (SB3's ``train`` samples its own buffer, so the MPO contenders do too). We report per-contender
medians and the ratios to SB3 SAC and to the Tonic-style update measured in the same run.

    python benchmarks/learner_throughput.py --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mpo_ros.mpo import losses
from mpo_ros.mpo.learner import MPOConfig, MPOLearner, _sample, tune_cpu_allocator
from mpo_ros.mpo.networks import GaussianParams
from mpo_ros.training.replay import ReplayBuffer, SequenceBatch

OBS, ACT = 17, 6


def tonic_style_update(learner: MPOLearner, batch: SequenceBatch) -> dict[str, float]:
    """MPO structured like Tonic's (tonic/torch/updaters: an expected-SARSA critic updater, then the MPO
    actor updater) and most reference implementations: separate target passes for the critic target and the
    E-step, the full (obs, action) concatenation per sample, three backward passes, three optimiser steps, a
    Python loop for the Polyak average and ``.item()`` on every metric. Run with Tonic's ReLU 256x256 torso."""
    cfg = learner.config
    b = learner._to_device(batch)
    obs = learner.normalize(b.observations[:, 0])
    n = cfg.num_samples
    # Critic.
    with torch.no_grad():
        last = (b.mask.sum(1).long() - 1).clamp_min(0)
        boot_obs = learner.normalize(b.next_observations[torch.arange(obs.shape[0]), last])
        boot_actions = _sample(learner.target_policy(boot_obs), n)
        v = learner.target_critic(boot_obs.expand(n, -1, -1), boot_actions).mean(0)
        target = losses.n_step_return(b.rewards, b.mask, b.terminated, v, cfg.discount)
    q = learner.critic(obs, b.actions[:, 0])
    loss_critic, cstats = losses.critic_loss(q, target)
    learner.critic_optimizer.zero_grad()
    loss_critic.backward()
    torch.nn.utils.clip_grad_norm_(learner.critic.parameters(), cfg.grad_norm_clip)
    learner.critic_optimizer.step()
    # E-step.
    with torch.no_grad():
        prior = learner.target_policy(obs)
        sampled = _sample(prior, n)
        q_sampled = learner.target_critic(obs.expand(n, -1, -1), sampled)
    d = learner.duals
    loss_t, weights, tstats = losses.temperature_loss(q_sampled, d.log_temperature, cfg.epsilon)
    loss_p, pen_w, _ = losses.temperature_loss(
        losses.action_penalty(sampled), d.log_penalty_temperature, cfg.epsilon_penalty
    )
    # M-step.
    online = learner.policy(obs)
    prior = GaussianParams(prior.mean, prior.scale)
    loss_ce, _ = losses.weighted_cross_entropy(sampled, weights + pen_w, prior, online)
    kl_m, kl_s = losses.decoupled_kl(prior, online, cfg.per_dim_constraining)
    pm, dm, mstats = losses.trust_region_loss(kl_m, d.log_alpha_mean, cfg.epsilon_mean)
    ps, ds, sstats = losses.trust_region_loss(kl_s, d.log_alpha_stddev, cfg.epsilon_stddev)
    learner.actor_optimizer.zero_grad()
    (loss_ce + pm + ps).backward()
    torch.nn.utils.clip_grad_norm_(learner.policy.parameters(), cfg.grad_norm_clip)
    learner.actor_optimizer.step()
    learner.dual_optimizer.zero_grad()
    (loss_t + loss_p + dm + ds).backward()
    learner.dual_optimizer.step()
    d.clamp_(cfg.min_log_dual)
    with torch.no_grad():
        for net, tgt in ((learner.policy, learner.target_policy), (learner.critic, learner.target_critic)):
            for p, tp in zip(net.parameters(), tgt.parameters(), strict=True):
                tp.mul_(1 - cfg.target_tau).add_(cfg.target_tau * p)
    return {
        "loss/critic": loss_critic.item(),
        "q/mean": cstats.q_mean.item(),
        "dual/temperature": tstats.temperature.item(),
        "kl_rel/mean": mstats.kl_relative.item(),
        "kl_rel/stddev": sstats.kl_relative.item(),
    }


def _replay(seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    replay = ReplayBuffer(20_000, OBS, ACT, seed=seed)
    for _ in range(20):
        replay.add_episode(
            rng.normal(size=(1001, OBS)), rng.uniform(-1, 1, (1000, ACT)), rng.normal(size=1000), False
        )
    return replay


def _time_updates(fn: Any, sample: Any, updates: int) -> float:
    """Updates/s of ``fn(sample())``: drawing the batch is part of an update, as in SB3's ``train``."""
    start = time.perf_counter()
    for _ in range(updates):
        fn(sample())
    return updates / (time.perf_counter() - start)


VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    # name: (update, MPOConfig overrides, glibc allocator tuning as `mpo-ros train` applies it)
    "default": ("shipped", {}, True),
    "sequence_start_states": ("shipped", {"policy_states": "sequence_start"}, True),
    "default_compiled": ("shipped", {"compile": True}, True),
    "default_relu_torso": ("shipped", {"torso": "relu"}, True),
    "default_without_allocator_tuning": ("shipped", {}, False),
    "tonic_style": ("tonic_style", {"torso": "relu"}, False),
    "sb3_sac": ("sb3_sac", {}, False),
}


def _sb3_sac(args: argparse.Namespace) -> tuple[Any, Any]:
    """SB3 SAC with its standard settings (batch 256, 256x256 ReLU actor and twin critics, auto entropy) on
    HalfCheetah-v5, its buffer filled with 20k random transitions; ``train(1)`` is one update."""
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import configure

    model = SAC(
        "MlpPolicy", gym.make("HalfCheetah-v5"), batch_size=args.batch, device="cpu", seed=0, verbose=0
    )
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(0)
    for _ in range(20_000):
        obs = rng.normal(size=(1, OBS)).astype(np.float32)
        action = rng.uniform(-1, 1, (1, ACT)).astype(np.float32)
        model.replay_buffer.add(obs, rng.normal(size=(1, OBS)).astype(np.float32), action,
                                rng.normal(size=1), np.array([False]), [{}])  # fmt: skip
    return (lambda _batch: model.train(gradient_steps=1, batch_size=args.batch)), (lambda: None)


def run_variant(name: str, args: argparse.Namespace) -> list[float]:
    """Measure one contender in this (fresh) process: allocator settings are process-wide and one-way."""
    update, overrides, tune = VARIANTS[name]
    if tune:
        tune_cpu_allocator()
    torch.manual_seed(0)
    if update == "sb3_sac":
        fn, sample = _sb3_sac(args)
        _time_updates(fn, sample, 10)
        return [_time_updates(fn, sample, args.updates) for _ in range(args.inner_reps)]
    replay = _replay()
    sizes = {"num_samples": 20, "n_step": 5, "policy_hidden": [256, 256], "critic_hidden": [256, 256]}
    cfg = MPOConfig(**{**sizes, **overrides})
    learner = MPOLearner(OBS, ACT, cfg)
    learner.observe(replay.observations[:5000])
    if update == "tonic_style":
        # plain (foreach) Adam, as Tonic uses
        learner.actor_optimizer = torch.optim.Adam(learner.policy.parameters(), lr=cfg.policy_lr)
        learner.critic_optimizer = torch.optim.Adam(learner.critic.parameters(), lr=cfg.critic_lr)
        learner.dual_optimizer = torch.optim.Adam(learner.duals.parameters(), lr=cfg.dual_lr)
        fn = lambda b: tonic_style_update(learner, b)  # noqa: E731
    else:
        fn = learner.update
    sample = lambda: replay.sample(args.batch, 5)  # noqa: E731
    # warm-up: allocator, oneDNN primitive caches, and compilation for the compiled variants
    _time_updates(fn, sample, 10)
    if cfg.compile and learner._target_sampled.mode != "compiled":
        raise RuntimeError(f"{name}: compilation failed ({learner._target_sampled.mode})")
    return [_time_updates(fn, sample, args.updates) for _ in range(args.inner_reps)]


def measure_updates(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Variants alternate (A B C D A B C D ...), each round in fresh subprocesses."""
    rates: dict[str, list[float]] = {k: [] for k in args.variants}
    env = dict(os.environ)
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    for _ in range(args.rounds):
        for name in args.variants:
            cmd = [sys.executable, __file__, "--variant", name, "--threads", str(threads),
                   "--batch", str(args.batch), "--updates", str(args.updates),
                   "--inner-reps", str(args.inner_reps)]  # fmt: skip
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            rates[name] += json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{threads} threads {name}: {statistics.median(rates[name]):.1f} updates/s", file=sys.stderr
            )
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "updates_per_s_median": med,
        "updates_per_s_p10": {k: float(np.percentile(v, 10)) for k, v in rates.items()},
        "updates_per_s_all": rates,
        "ratio_to_sb3_sac": {k: v / med["sb3_sac"] for k, v in med.items()} if "sb3_sac" in med else None,
        "ratio_to_tonic_style": {k: v / med["tonic_style"] for k, v in med.items()}
        if "tonic_style" in med
        else None,
        "ms_per_update_median": {k: 1000.0 / v for k, v in med.items()},
    }


def measure_env(args: argparse.Namespace) -> dict[str, Any]:
    """HalfCheetah-v5 steps/s: the bare environment, and environment + policy sampling (what training adds
    besides the update)."""
    from mpo_ros.training.envs import make_env

    env = make_env("HalfCheetah-v5")
    learner = MPOLearner(OBS, ACT, MPOConfig())
    rng = np.random.default_rng(0)
    out = {}
    for name, use_policy in (("env_only", False), ("env_plus_act", True)):
        obs, _ = env.reset(seed=0)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.env_seconds:
            action = learner.act(obs)[0] if use_policy else rng.uniform(-1, 1, ACT).astype(np.float32)
            obs, _, term, trunc, _ = env.step(action)
            steps += 1
            if term or trunc:
                obs, _ = env.reset()
        out[f"{name}_steps_per_s"] = steps / (time.perf_counter() - start)
    return out


def _sb3_version() -> str | None:
    try:
        import stable_baselines3
    except ImportError:
        return None
    return stable_baselines3.__version__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch threads to measure")
    parser.add_argument(
        "--omp-wait-policy",
        default="",
        help="OMP_WAIT_POLICY for the measured processes ('' keeps the library default, what users get; "
        "PASSIVE makes every small op wake sleeping threads and slows SB3's many small ops about 3x)",
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--updates", type=int, default=40, help="updates per timed repetition")
    parser.add_argument("--inner-reps", type=int, default=3, help="timed repetitions per subprocess")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of all variants")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument(
        "--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS), help="variants to measure"
    )
    parser.add_argument("--env-seconds", type=float, default=10.0)
    parser.add_argument("--out", default="benchmarks/results/learner_throughput.json")
    args = parser.parse_args()
    if args.variant:
        torch.set_num_threads(args.threads[0])
        print(json.dumps(run_variant(args.variant, args)))
        return 0
    if "sb3_sac" in args.variants and _sb3_version() is None:
        print("stable-baselines3 is not installed (pip install -r requirements-bench.txt): no SAC contender",
              file=sys.stderr)  # fmt: skip
        args.variants = [v for v in args.variants if v != "sb3_sac"]
    updates = {f"{t}_threads": measure_updates(args, t) for t in args.threads}
    torch.set_num_threads(1)
    env = measure_env(args)
    import gymnasium
    import mujoco

    result = {
        "what": "learner updates/s including batch sampling: mpo_ros MPO (default and variants), a Tonic-style "
        f"MPO update and SB3 SAC at HalfCheetah sizes (obs 17, act 6), batch {args.batch}, 256x256 MLPs; MPO "
        "with 20 samples, n-step 5, layernorm torso unless the variant says relu; CPU; HalfCheetah-v5 steps/s",
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads_measured": args.threads,
            "omp_wait_policy": args.omp_wait_policy or "default",
            "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "versions": {
            "torch": torch.__version__,
            "mujoco": mujoco.__version__,
            "gymnasium": gymnasium.__version__,
            "stable_baselines3": _sb3_version(),
        },
        "settings": vars(args),
        "figures": {"updates": updates, "env_1_thread": env},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["figures"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
