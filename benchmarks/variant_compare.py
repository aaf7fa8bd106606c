"""Two variants of the learner side by side: learning curves, and learner updates/s.

    python benchmarks/variant_compare.py --compare critic          # scalar vs categorical (DMPO) critic
    python benchmarks/variant_compare.py --compare policy_states   # E/M-step on s_t vs on bootstrap states

Both default to InvertedPendulum-v5, seeds 0-4, 16k steps; results go to
benchmarks/results/<compare>_compare.json and .png.

Learning: InvertedPendulum-v5, the task `tests/mpo/test_learning.py` shows MPO solving in 16k steps with
64x64 networks and batch 64: two variants x five seeds of it fit a 25-minute budget on a 2-core machine
already running other jobs (~80-100 s a run), where InvertedDoublePendulum-v5 would need several times the
steps per run. Runs are interleaved per seed (variant A, variant B, next seed) so drifting machine load hits
both alike; both use every default except the networks, batch and warm-up of that test and the options
being compared. The categorical critic gets a support sized to the task as its help text asks: reward 1
per step and gamma 0.99 bound the discounted return by 100, so [-10, 110] with 51 atoms (2.4 apart).
Protocol: deterministic clamp(mean) policy, --eval-episodes episodes every --eval-every steps; final and
best evaluation return, and the first step at which evaluation reached --solved. Five seeds are five data
points, not a conclusion.

Throughput: updates/s of both learners at HalfCheetah sizes (obs 17, act 6, batch 256, 20 samples,
256x256 layernorm MLPs, n-step 5; a categorical critic with the default support), built in one process and
timed in alternating blocks (A, B, A, ...) on the same pre-sampled batches; medians and the B / A ratio.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mpo_ros.mpo.learner import MPOConfig, MPOLearner, tune_cpu_allocator
from mpo_ros.training.replay import ReplayBuffer

# comparison -> {variant name: MPOConfig overrides}; the first variant is the reference of the ratios
COMPARISONS: dict[str, dict[str, dict[str, Any]]] = {
    "critic": {
        "scalar": {"critic_type": "scalar"},
        "categorical": {
            "critic_type": "categorical",
            "critic_atoms": 51,
            "critic_vmin": -10.0,
            "critic_vmax": 110.0,
        },
    },
    "policy_states": {
        "sequence_start": {"policy_states": "sequence_start"},
        "bootstrap": {"policy_states": "bootstrap"},
    },
}


# --- learning -------------------------------------------------------------------------------------------


def _eval_curve(metrics_csv: Path) -> list[tuple[int, float]]:
    with metrics_csv.open(newline="") as fh:
        return [
            (int(float(r["step"])), float(r["eval/return"])) for r in csv.DictReader(fh) if r["eval/return"]
        ]


def _last_logged(metrics_csv: Path, key: str) -> float | None:
    with metrics_csv.open(newline="") as fh:
        values = [float(r[key]) for r in csv.DictReader(fh) if r.get(key)]
    return values[-1] if values else None


def train_once(variant: str, seed: int, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """One `mpo-ros train` run in this process; returns its evaluation curve and summary figures."""
    from mpo_ros.training.loop import TrainConfig, train

    run_dir = out_dir / f"{variant}-s{seed}"
    overrides = COMPARISONS[args.compare][variant]
    config = TrainConfig(
        env=args.env,
        steps=args.steps,
        seed=seed,
        out=str(run_dir),
        warmup_steps=1_000,
        batch_size=64,
        policy_hidden=[64, 64],
        critic_hidden=[64, 64],
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        checkpoint_every=0,
        progress=False,
        threads=args.threads,
        **overrides,
    )
    start = time.perf_counter()
    train(config)
    wall = time.perf_counter() - start
    curve = _eval_curve(run_dir / "metrics.csv")
    solved = next((step for step, ret in curve if ret >= args.solved), None)
    figures = {
        "final_eval_return": curve[-1][1],
        "best_eval_return": max(ret for _, ret in curve),
        "first_step_solved": solved,
        "wall_s": round(wall, 1),
        "eval_curve": curve,
        "last_q_mean": _last_logged(run_dir / "metrics.csv", "q/mean"),
    }
    if overrides.get("critic_type") == "categorical":
        figures["last_target_edge_mass"] = _last_logged(run_dir / "metrics.csv", "q/target_edge_mass")
    print(f"{variant} seed {seed}: final {figures['final_eval_return']:.0f} best "
          f"{figures['best_eval_return']:.0f} solved at {solved} in {wall:.0f} s", file=sys.stderr)  # fmt: skip
    return figures


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if len(present) == len(values) else None


def measure_learning(args: argparse.Namespace) -> dict[str, Any]:
    variants = COMPARISONS[args.compare]
    reference, other = list(variants)
    per_seed: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in variants}
    with tempfile.TemporaryDirectory(prefix=f"{args.compare}_compare_") as tmp:
        for seed in args.seeds:
            for variant in variants:
                per_seed[variant][seed] = train_once(variant, seed, args, Path(tmp))
    medians = {
        variant: {
            key: _median_or_none([runs[s][key] for s in args.seeds])
            for key in ("final_eval_return", "best_eval_return", "first_step_solved", "wall_s")
        }
        for variant, runs in per_seed.items()
    }
    ratios = {
        key: (medians[other][key] / medians[reference][key])
        if medians[reference][key] and medians[other][key] is not None
        else None
        for key in ("final_eval_return", "best_eval_return", "first_step_solved", "wall_s")
    }
    return {"per_seed": per_seed, "medians": medians, f"ratio_{other}_to_{reference}": ratios}


def plot_curves(learning: dict[str, Any], path: Path, env_id: str, compare: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(COMPARISONS[compare])
    for variant, color in zip(names, ("tab:blue", "tab:orange"), strict=True):
        for i, run in enumerate(learning["per_seed"][variant].values()):
            steps, returns = zip(*run["eval_curve"], strict=True)
            ax.plot(
                steps,
                returns,
                color=color,
                alpha=0.6,
                label=f"{variant} (one line per seed)" if i == 0 else None,
            )
    ax.set(
        xlabel="environment steps",
        ylabel="evaluation return",
        title=f"{env_id}: {names[0]} vs {names[1]}",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- throughput -----------------------------------------------------------------------------------------


def _random_replay(obs_dim: int, act_dim: int) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(20_000, obs_dim, act_dim, seed=0)
    for _ in range(10):
        replay.add_episode(rng.normal(size=(1001, obs_dim)), rng.uniform(-1, 1, (1000, act_dim)),
                           rng.normal(size=1000), terminated=False)  # fmt: skip
    return replay


def measure_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Both learners live in this process; blocks of updates alternate between them on identical batches."""
    obs_dim, act_dim = 17, 6
    replay = _random_replay(obs_dim, act_dim)
    variants = COMPARISONS[args.compare]
    reference, other = list(variants)
    learners = {}
    for variant, overrides in variants.items():
        torch.manual_seed(0)
        # a categorical critic gets the default support here, which is sized for HalfCheetah's returns
        config = {k: v for k, v in overrides.items() if not k.startswith("critic_v")}
        learners[variant] = MPOLearner(obs_dim, act_dim, MPOConfig(**config))
        learners[variant].observe(replay.observations[:5000])
    batches = [replay.sample(256, 5) for _ in range(args.updates)]
    for learner in learners.values():  # warm-up: allocator, oneDNN primitive caches
        for batch in batches[:5]:
            learner.update(batch)
    rates: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(args.rounds):
        for variant, learner in learners.items():
            start = time.perf_counter()
            for batch in batches:
                learner.update(batch)
            rates[variant].append(len(batches) / (time.perf_counter() - start))
        print(" ".join(f"{c} {r[-1]:.1f}/s" for c, r in rates.items()), file=sys.stderr)
    medians = {variant: statistics.median(r) for variant, r in rates.items()}
    return {
        "updates_per_s_median": medians,
        "updates_per_s_all": rates,
        f"ratio_{other}_to_{reference}": medians[other] / medians[reference],
        "ms_per_update_median": {variant: 1000.0 / v for variant, v in medians.items()},
    }


# --- report ---------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import gymnasium
    import mujoco

    return {"torch": torch.__version__, "mujoco": mujoco.__version__, "gymnasium": gymnasium.__version__}


def _machine(threads: int) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="critic")
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=16_000)
    parser.add_argument("--eval-every", type=int, default=2_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--solved", type=float, default=950.0, help="evaluation return counted as solved")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--updates", type=int, default=30, help="updates per timed throughput block")
    parser.add_argument("--rounds", type=int, default=10, help="alternating throughput blocks per variant")
    parser.add_argument("--skip-learning", action="store_true", help="measure throughput only")
    parser.add_argument("--out", help="default: benchmarks/results/<compare>_compare.json")
    args = parser.parse_args()
    args.out = args.out or f"benchmarks/results/{args.compare}_compare.json"
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()  # as `mpo-ros train` does; process-wide, so both critics share it
    machine_start = _machine(args.threads)
    throughput = measure_throughput(args)
    learning = None if args.skip_learning else measure_learning(args)
    result = {
        "what": f"MPO variants compared ({args.compare}: {' vs '.join(COMPARISONS[args.compare])}): learning "
        f"on {args.env} (deterministic evaluation) and learner updates/s at HalfCheetah sizes",
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine_start, "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()]},
        "versions": _versions(),
        "settings": vars(args),
        "variants": COMPARISONS[args.compare],
        "learning_protocol": {
            "budget_env_steps": args.steps,
            "seeds": args.seeds,
            "evaluation": f"{args.eval_episodes} episodes every {args.eval_every} env steps, deterministic "
            "clamp(mean)",
            "networks": "64x64 policy and critic, batch 64, warm-up 1000 steps, other options default",
        },
        "figures": {"throughput_halfcheetah_sizes": throughput, "learning": learning},
        "note": "a few seeds are a few data points, not a conclusion; the machine ran other benchmarks meanwhile",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if learning is not None:
        plot_curves(learning, out.with_suffix(".png"), args.env, args.compare)
    print(json.dumps({"throughput": throughput["updates_per_s_median"],
                      "learning_medians": learning and learning["medians"]}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
