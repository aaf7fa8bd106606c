"""MPO learning curves on gym MuJoCo tasks, trained in --resume chunks so a killed run loses little.

    python benchmarks/learning.py --envs HalfCheetah-v5 Hopper-v5 --steps 100000 --chunk 20000

Each chunk is one `mpo-ros train ... --resume` process (the first without --resume); after every chunk the
results file benchmarks/results/learning_<env>.json is rewritten with the budget reached so far, so partial
results are honest about their step count. Protocol: deterministic policy clamp(mean), --eval-episodes
episodes every --eval-every steps, one seed unless more are given (one seed is a data point, not a
conclusion).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _eval_curve(metrics_csv: Path, every: int) -> list[tuple[int, float]]:
    """The evaluations at multiples of ``every`` (the protocol's points). Chunks resumed by an mpo_ros
    before the fix of the resume bookkeeping also evaluated one step after each chunk boundary; those extra
    points are not part of the protocol and are left out."""
    if not metrics_csv.is_file():
        return []
    with metrics_csv.open(newline="") as fh:
        points = [
            (int(float(r["step"])), float(r["eval/return"]))
            for r in csv.DictReader(fh)
            if r.get("eval/return")
        ]
    return [(step, value) for step, value in points if step % every == 0]


def _last_value(metrics_csv: Path, key: str) -> float | None:
    value = None
    with metrics_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get(key):
                value = float(row[key])
    return value


def _checkpoint_step(run_dir: Path) -> int:
    ckpt = run_dir / "checkpoints" / "latest.pt"
    if not ckpt.is_file():
        return 0
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["metadata"]["step"])


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The algorithm settings the run actually used (from its config.yaml), so a result says which default
    it measured."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    keys = ("policy_states", "torso", "num_samples", "n_step", "batch_size", "critic_type", "compile")
    return {k: config[k] for k in keys if k in config}


def _versions() -> dict[str, str]:
    import gymnasium
    import mujoco
    import torch

    return {"torch": torch.__version__, "mujoco": mujoco.__version__, "gymnasium": gymnasium.__version__}


def run_env(env_id: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(args.out_dir) / f"{env_id.replace(':', '_')}-s{seed}"
    label = f"_{args.label}" if args.label else ""
    result_file = (
        Path(args.results) / f"learning_{env_id.split(':')[-1].split('-')[0].lower()}_s{seed}{label}.json"
    )
    chunk_wall: list[dict[str, float]] = []
    if result_file.is_file():
        chunk_wall = json.loads(result_file.read_text()).get("chunks", [])
    target = _checkpoint_step(run_dir)
    while target < args.steps:
        target = min(args.steps, (target // args.chunk + 1) * args.chunk)
        cmd = [sys.executable, "-m", "mpo_ros.cli", "train", "--env", env_id, "--steps", str(target),
               "--seed", str(seed), "--out", str(run_dir), "--eval-every", str(args.eval_every),
               "--eval-episodes", str(args.eval_episodes), "--checkpoint-every", str(args.eval_every),
               "--threads", str(args.threads), "--progress", "false", *args.extra]  # fmt: skip
        if (run_dir / "checkpoints" / "latest.pt").is_file():
            cmd.append("--resume")
        print(" ".join(cmd), file=sys.stderr, flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        chunk_wall.append({"to_step": target, "wall_s": time.perf_counter() - start})
        result = _summarise(env_id, seed, run_dir, args, chunk_wall)
        result_file.parent.mkdir(parents=True, exist_ok=True)
        result_file.write_text(json.dumps(result, indent=2) + "\n")
    result = _summarise(env_id, seed, run_dir, args, chunk_wall)
    if chunk_wall:  # also refreshes the summary of a run completed earlier (e.g. after a fix to it)
        result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _summarise(
    env_id: str, seed: int, run_dir: Path, args: argparse.Namespace, chunks: list[dict[str, float]]
) -> dict[str, Any]:
    curve = _eval_curve(run_dir / "metrics.csv", args.eval_every)
    steps_done = _checkpoint_step(run_dir)
    return {
        "what": f"MPO (mpo_ros defaults) on {env_id}: evaluation return of the deterministic policy",
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "python": platform.python_version(),
        },
        "versions": _versions(),
        "budget": {
            "planned_env_steps": args.steps,
            "env_steps_done": steps_done,
            "complete": steps_done >= args.steps,
        },
        "seeds": [seed],
        "config": _run_config(run_dir),
        "evaluation": f"{args.eval_episodes} episodes every {args.eval_every} env steps, deterministic clamp(mean)",
        "figures": {
            "final_eval_return": curve[-1][1] if curve else None,
            "best_eval_return": max(v for _, v in curve) if curve else None,
            "eval_curve": curve,
            "updates_per_env_step": 1,
            "train_steps_per_s_last_chunk": _last_value(run_dir / "metrics.csv", "train/steps_per_s")
            if curve
            else None,
        },
        "chunks": chunks,
        "note": "one seed is a data point, not a conclusion; the machine was shared with other jobs",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", default="runs/bench")
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument(
        "--label",
        default="",
        help="suffix of the results file (learning_<env>_s<seed>_<label>.json), e.g. a variant",
    )
    parser.add_argument("extra", nargs="*", help="extra `mpo-ros train` flags after --")
    args = parser.parse_args()
    for env_id in args.envs:
        for seed in args.seeds:
            summary = run_env(env_id, seed, args)
            print(json.dumps({env_id: summary["figures"]["final_eval_return"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
