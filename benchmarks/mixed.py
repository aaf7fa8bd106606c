"""Mixed (sim + logged data, RLPD-style) vs sim-only MPO: sample efficiency on arm2 reach.

The question of the issue: does mixing a logged dataset into every batch (`mpo-ros train --env ...
--data ... --data-ratio 0.5`) reach a given success rate in fewer simulated environment steps than
training in simulation alone? Both variants run the arm2 recipe (sim/recipes/arm2_reach.yaml) with the
same env-step budget, the same seed and the same evaluation protocol; the only difference is the
`--data --data-ratio` pair.

The dataset is made the way the offline benchmark (benchmarks/offline.py) makes it, with its helpers:
a noisy scripted controller drives the arm2 reach environment, a bag is recorded (MCAP) and converted
with bag2data. Its own success (the behaviour's) is recorded next to the curves.

Each variant is one `mpo-ros train` subprocess (`nice -n 5`, one torch thread), run one after the
other, so they share the machine the same way. Evaluation is train.py's own: every --eval-every env
steps, --eval-episodes episodes of the deterministic policy clamp(mean) on the fixed goal seeds
seed + 1_000_000 + i (identical for both variants), success = is_success at the final step. The
curves are read back from each run's metrics.csv. One seed is a data point, not a conclusion.

Run:  python benchmarks/mixed.py [--steps 24000] [--eval-every 3000] [--eval-episodes 30]
                                 [--episodes 50] [--noise 0.3] [--seed 0]
Writes benchmarks/results/mixed.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mpo_ros.config import load_yaml
from mpo_ros.contract.spec import load_spec
from mpo_ros.data.convert import Bag2DataConfig, convert_bags
from mpo_ros.data.scripted import record_scripted_bag

# benchmarks/ is a folder of scripts, not a package: reuse the offline benchmark's helpers from beside us.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline import versions

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "mixed.json"
RECIPE = ROOT / "sim" / "recipes" / "arm2_reach.yaml"
DATA_RATIO = 0.5
BEHAVIOUR_SEED = 123  # the offline benchmark's behaviour seed: the same kind of data


def make_dataset(workdir: Path, episodes: int, noise: float) -> tuple[Path, dict[str, float]]:
    """Record the noisy scripted controller to a bag and convert it, as a user would."""
    bag, data = workdir / "behaviour_bag", workdir / "behaviour"
    rollouts = record_scripted_bag(
        load_spec("arm2"), bag, episodes=episodes, seed=BEHAVIOUR_SEED, noise=noise
    )
    _, summary = convert_bags(Bag2DataConfig(bags=[str(bag)], robot="arm2", out=str(data), progress=False))
    return data, {
        "episodes": summary["episodes"],
        "steps": summary["steps"],
        "behaviour_final_success_rate": rollouts.final_success_rate,  # as the simulator reported it
        "behaviour_mean_return": rollouts.mean_return,
        "dataset_final_success_rate": summary["final_success_rate"],  # relabelled by bag2data
    }


def train_command(args: argparse.Namespace, out: Path, data: Path | None) -> list[str]:
    """The `mpo-ros train` command line of one variant (data None: sim only)."""
    command = [
        "nice", "-n", "5", sys.executable, "-m", "mpo_ros.cli", "train",
        "--config", str(RECIPE), "--out", str(out), "--seed", str(args.seed),
        "--steps", str(args.steps), "--eval-every", str(args.eval_every),
        "--eval-episodes", str(args.eval_episodes), "--threads", "1", "--progress", "false",
    ]  # fmt: skip
    if data is not None:
        command += ["--data", str(data), "--data-ratio", str(DATA_RATIO)]
    return command


def eval_curve(run_dir: Path) -> list[dict[str, float]]:
    """The evaluation rows of a run's metrics.csv: env steps, success rate, return."""
    with (run_dir / "metrics.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("eval/success_rate")]
    return [
        {
            "env_steps": int(float(r["step"])),
            "success_rate": float(r["eval/success_rate"]),
            "return": float(r["eval/return"]),
            "return_std": float(r["eval/return_std"]),
        }
        for r in rows
    ]


def run_variant(args: argparse.Namespace, out: Path, data: Path | None) -> dict[str, object]:
    command = train_command(args, out, data)
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    curve = eval_curve(out)
    return {
        "command": " ".join(command).replace(sys.executable, "python"),
        "wall_s": round(time.perf_counter() - started, 1),
        "curve": curve,
        "final_success_rate": curve[-1]["success_rate"],
        "best_success_rate": max(p["success_rate"] for p in curve),
        "final_return": curve[-1]["return"],
        "best_return": max(p["return"] for p in curve),
    }


def side_by_side(sim: list[dict], mixed: list[dict]) -> list[dict[str, float | None]]:
    """Success and return of both variants at each env-step count both evaluated at."""
    by_step = {p["env_steps"]: p for p in mixed}
    rows = []
    for point in sim:
        other = by_step.get(point["env_steps"])
        if other is None:
            continue
        ratio = other["success_rate"] / point["success_rate"] if point["success_rate"] > 0 else None
        rows.append({
            "env_steps": point["env_steps"],
            "sim_only_success": point["success_rate"],
            "mixed_success": other["success_rate"],
            "success_ratio_mixed_over_sim": ratio,
            "sim_only_return": point["return"],
            "mixed_return": other["return"],
        })  # fmt: skip
    return rows


def markdown(rows: list[dict], dataset: dict) -> str:
    lines = [
        f"dataset: {dataset['episodes']} episodes / {dataset['steps']} transitions, behaviour success "
        f"{dataset['behaviour_final_success_rate']:.2f}",
        "",
        "| env steps | sim-only success | mixed success | ratio | sim-only return | mixed return |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = (
            "n/a"
            if r["success_ratio_mixed_over_sim"] is None
            else f"{r['success_ratio_mixed_over_sim']:.2f}x"
        )
        lines.append(
            f"| {r['env_steps']} | {r['sim_only_success']:.2f} | {r['mixed_success']:.2f} | {ratio} | "
            f"{r['sim_only_return']:.1f} | {r['mixed_return']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24_000, help="env-step budget of each variant")
    parser.add_argument("--eval-every", type=int, default=3_000, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument("--episodes", type=int, default=50, help="behaviour episodes recorded")
    parser.add_argument("--noise", type=float, default=0.3, help="behaviour controller noise (action units)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mixed_") as tmp:
        workdir = Path(tmp)
        data, dataset = make_dataset(workdir, args.episodes, args.noise)
        print("dataset", dataset, flush=True)
        variants = {
            "sim_only": run_variant(args, workdir / "sim_only", None),
            "mixed": run_variant(args, workdir / "mixed", data),
        }
    rows = side_by_side(variants["sim_only"]["curve"], variants["mixed"]["curve"])
    report = {
        "what": "arm2 reach, MPO sim-only vs mixed (sim + logged data, data_ratio "
        f"{DATA_RATIO}): success rate and return vs env steps at the same env-step budget",
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "cpu_count": os.cpu_count(),
        "torch_threads": 1,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "note": "shared 2-vCPU machine with other trainings running; wall_s is not a speed figure. One seed "
        "is a data point, not a conclusion.",
        "protocol": {
            "recipe": str(RECIPE.relative_to(ROOT)),
            "recipe_values": load_yaml(RECIPE),
            "env_steps": args.steps,
            "seed": args.seed,
            "data_ratio": DATA_RATIO,
            "behaviour_prior": "auto (none when mixing: pi_old in the E-step)",
            "evaluation": f"every {args.eval_every} env steps, {args.eval_episodes} episodes, deterministic "
            f"clamp(mean), goal seeds {args.seed}+1000000+i (same for both variants), success = is_success "
            "at the final step",
            "behaviour": f"scripted slew-limited P-controller toward the IK solution + N(0, {args.noise}) action "
            f"noise, {args.episodes} episodes, seed {BEHAVIOUR_SEED}, recorded to MCAP and converted by bag2data",
        },
        "dataset": dataset,
        "variants": variants,
        "side_by_side": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(rows, dataset))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
