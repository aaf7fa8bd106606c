"""Learner updates/s (straightforward baseline vs the shipped update, side by side) and environment steps/s.

Setting: HalfCheetah sizes (obs 17, act 6), batch 256, 20 action samples, 256x256 networks, n-step 5, CPU.
Variants are measured alternately (A B A B ...) in one process, each repetition timing ``--updates`` updates
after a warm-up; we report per-variant medians and the ratio to the baseline.

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


def baseline_update(learner: MPOLearner, batch: SequenceBatch) -> dict[str, float]:
    """MPO written the obvious way (as in most reference implementations): separate target passes for the
    critic target and the E-step, the full (obs, action) concatenation per sample, three backward passes,
    three optimiser steps, a Python loop for the Polyak average and ``.item()`` on every metric."""
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


def _time_updates(fn: Any, replay: ReplayBuffer, updates: int, batch: int, n_step: int) -> float:
    batches = [replay.sample(batch, n_step) for _ in range(updates)]
    start = time.perf_counter()
    for b in batches:
        fn(b)
    return updates / (time.perf_counter() - start)


VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    # name: (update function, MPOConfig overrides, glibc allocator tuning)
    "baseline": ("baseline", {}, False),
    "optimised": ("shipped", {}, True),
    "optimised_without_allocator_tuning": ("shipped", {}, False),
    "optimised_compiled": ("shipped", {"compile": True}, True),
    "optimised_relu_torso": ("shipped", {"torso": "relu"}, True),
    # Like Acme's sharing: the E-step reuses the bootstrap's samples (half the sampled critic rows)
    "bootstrap_states": ("shipped", {"policy_states": "bootstrap"}, True),
    "bootstrap_states_compiled": ("shipped", {"policy_states": "bootstrap", "compile": True}, True),
    "bootstrap_states_compiled_relu_torso": (
        "shipped",
        {"policy_states": "bootstrap", "compile": True, "torso": "relu"},
        True,
    ),
}


def run_variant(name: str, args: argparse.Namespace) -> list[float]:
    """Measure one variant in this (fresh) process: allocator settings are process-wide and one-way."""
    update, overrides, tune = VARIANTS[name]
    if tune:
        tune_cpu_allocator()
    torch.manual_seed(0)
    replay = _replay()
    sizes = {"num_samples": 20, "n_step": 5, "policy_hidden": [256, 256], "critic_hidden": [256, 256]}
    cfg = MPOConfig(**{**sizes, **overrides})
    learner = MPOLearner(OBS, ACT, cfg)
    learner.observe(replay.observations[:5000])
    if update == "baseline":
        # plain (foreach) Adam, as a first implementation would use
        learner.actor_optimizer = torch.optim.Adam(learner.policy.parameters(), lr=cfg.policy_lr)
        learner.critic_optimizer = torch.optim.Adam(learner.critic.parameters(), lr=cfg.critic_lr)
        learner.dual_optimizer = torch.optim.Adam(learner.duals.parameters(), lr=cfg.dual_lr)
        fn = lambda b: baseline_update(learner, b)  # noqa: E731
    else:
        fn = learner.update
    # warm-up: allocator, oneDNN primitive caches, and compilation for the compiled variants
    _time_updates(fn, replay, 10, args.batch, 5)
    if cfg.compile and learner._target_sampled.mode != "compiled":
        raise RuntimeError(f"{name}: compilation failed ({learner._target_sampled.mode})")
    return [_time_updates(fn, replay, args.updates, args.batch, 5) for _ in range(args.inner_reps)]


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
        "ratio_to_baseline": {k: v / med["baseline"] for k, v in med.items()},
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch threads to measure")
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY for the measured processes ('' keeps the default): spinning OpenMP threads "
        "collapse when the CPU is shared with other jobs",
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
    updates = {f"{t}_threads": measure_updates(args, t) for t in args.threads}
    torch.set_num_threads(1)
    env = measure_env(args)
    import gymnasium
    import mujoco

    result = {
        "what": "MPO learner updates/s (baseline vs shipped update) at HalfCheetah sizes (obs 17, act 6), "
        f"batch {args.batch}, 20 samples, 256x256 MLPs, n-step 5, CPU (layernorm torso unless the variant says relu); HalfCheetah-v5 steps/s",
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
