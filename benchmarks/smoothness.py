"""Smooth motion on arm2: success and command smoothness for five ways of asking for it, at equal budget.

Variants (all the arm2 recipe, sim/recipes/arm2_reach.yaml, trained with the `train` randomisation):

- ``no_smoothing``: the task's action-rate penalty off (action_rate_weight 0);
- ``rate_penalty``: action-rate penalty 0.2 on executed actions (the policy shipped before the smooth one);
- ``caps``: rate penalty + CAPS temporal and spatial terms in the M-step (--smoothness-temporal/-spatial);
- ``filter``: rate penalty + the contract's 3 Hz low-pass action filter (action_filter_cutoff_hz);
- ``caps_filter``: both: the shipped setting (models/arm2.yaml + sim/recipes/arm2_reach.yaml).

Each (variant, seed) is one `mpo-ros train` subprocess, then `mpo-ros eval` of the exported ONNX file with
``--episodes`` deterministic episodes on the nominal and the `heldout` dynamics; figures are the eval's:
success, mean |a_t - a_{t-1}|, mean |delta command| (rad/step), share of steps at the slew limit, share of
command energy above 5 Hz. Resumable: finished (variant, seed) pairs in the JSON are skipped, and each run's
exported policy is kept in runs/bench_smoothness/<variant>_s<seed>/policy.onnx, so ``--reevaluate``
re-measures every kept policy (e.g. after a change to the metrics) without training again.

Run:  python benchmarks/smoothness.py [--seeds 0 1 2] [--variants ...] [--steps 30000] [--episodes 100] [--jobs 2]
Writes benchmarks/results/smoothness.json and prints a markdown table (means over seeds).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline import versions

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "smoothness.json"
RECIPE = ROOT / "sim" / "recipes" / "arm2_reach.yaml"
CUTOFF_HZ = 3.0
# Every variant states all four knobs, so the shipped defaults (models/arm2.yaml's filter, the recipe's CAPS
# weights) do not leak into the variants that leave them out.
NO_CAPS = {"smoothness_temporal": 0.0, "smoothness_spatial": 0.0}
CAPS = {"smoothness_temporal": 0.5, "smoothness_spatial": 0.5}
NO_FILTER = {"action_filter": "none", "action_filter_cutoff_hz": 0.0}
FILTER = {"action_filter": "lowpass", "action_filter_cutoff_hz": CUTOFF_HZ}
VARIANTS = {
    "no_smoothing": ({"action_rate_weight": 0.0}, NO_FILTER, NO_CAPS),
    "rate_penalty": ({"action_rate_weight": 0.2}, NO_FILTER, NO_CAPS),
    "caps": ({"action_rate_weight": 0.2}, NO_FILTER, CAPS),
    "filter": ({"action_rate_weight": 0.2}, FILTER, NO_CAPS),
    "caps_filter": ({"action_rate_weight": 0.2}, FILTER, CAPS),  # the shipped setting
}
FIGURES = (
    "success_rate",
    "action_smoothness_mean",
    "command_rate_mean",
    "slew_limited_fraction_mean",
    "high_frequency_share_mean",
)


def robot_file(folder: Path, task_params: dict, contract: dict) -> Path:
    """arm2's contract with the variant's changes, its MJCF referenced by absolute path."""
    data = yaml.safe_load((ROOT / "models" / "arm2.yaml").read_text())
    data["mjcf"] = str((ROOT / "models" / "arm2.xml").resolve())
    data["task"]["params"].update(task_params)
    data.update(contract)
    path = folder / "arm2_variant.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


KEEP = ROOT / "runs" / "bench_smoothness"


def run_variant(name: str, seed: int, steps: int, episodes: int) -> dict:
    """Train and export the (variant, seed) policy unless it is kept already, then evaluate it."""
    kept = KEEP / f"{name}_s{seed}" / "policy.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        if not kept.is_file():
            train_and_export(name, seed, steps, Path(tmp), kept)
        return evaluate(kept, episodes, Path(tmp))


def train_and_export(name: str, seed: int, steps: int, folder: Path, kept: Path) -> None:
    """One `mpo-ros train` of the variant, exported to ``kept`` (moved there last: its presence means done)."""
    task_params, contract, learner = VARIANTS[name]
    robot = robot_file(folder, task_params, contract)
    out = folder / "run"
    command = [
        sys.executable, "-m", "mpo_ros.cli", "--log-level", "WARNING", "train", "--config", str(RECIPE),
        "--env", "mpo_ros_sim:Reach-v0", "--robot", str(robot), "--env-kwargs", "{randomize: train}",
        "--steps", str(steps), "--seed", str(seed), "--out", str(out), "--eval-every", "0",
    ]  # fmt: skip
    for key, value in learner.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    policy = folder / "policy.onnx"
    subprocess.run(
        [sys.executable, "-m", "mpo_ros.cli", "--log-level", "WARNING", "export", "--run", str(out), "--out",
         str(policy)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(policy, kept)


def evaluate(policy: Path, episodes: int, folder: Path) -> dict:
    """`mpo-ros eval` of one exported policy on the nominal and the held-out dynamics."""
    figures = {}
    for randomize in ("none", "heldout"):
        report = folder / f"eval_{randomize}.json"
        subprocess.run(
            [sys.executable, "-m", "mpo_ros.cli", "--log-level", "WARNING", "eval", "--policy", str(policy),
             "--episodes", str(episodes), "--randomize", randomize, "--seed", "1000", "--json", str(report)],
            check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        summary = json.loads(report.read_text())
        figures[randomize] = {key: summary[key] for key in FIGURES}
    return figures


def table(results: dict) -> str:
    lines = [
        "| variant | seeds | success nominal / heldout | mean abs delta a | delta command (rad/step) | at slew limit | energy > 5 Hz |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        runs = results.get("runs", {}).get(name, {})
        if not runs:
            continue

        def mean(randomize: str, key: str, runs: dict = runs) -> float:
            return statistics.mean(r[randomize][key] for r in runs.values())

        lines.append(
            f"| {name} | {len(runs)} | {mean('none', 'success_rate'):.2f} / {mean('heldout', 'success_rate'):.2f} | "
            f"{mean('none', 'action_smoothness_mean'):.3f} | {mean('none', 'command_rate_mean'):.4f} | "
            f"{100 * mean('none', 'slew_limited_fraction_mean'):.1f} % | "
            f"{100 * mean('none', 'high_frequency_share_mean'):.1f} % |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=30000)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1, help="(variant, seed) runs at once (one core each)")
    parser.add_argument(
        "--reevaluate", action="store_true", help="re-measure the kept policies, train missing ones"
    )
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(
        {
            "what": "arm2 reach: success and command smoothness of five smoothing variants at equal budget",
            "command": " ".join(["python", *sys.argv]),
            "versions": versions(),
            "cpu_count": os.cpu_count(),
            "steps": args.steps,
            "episodes": args.episodes,
            "caps_weights": CAPS,
            "filter_cutoff_hz": CUTOFF_HZ,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
    )
    runs = results.setdefault("runs", {})
    if args.reevaluate:  # re-measure every kept policy; the trained policies are unchanged
        runs.clear()
    todo = [(n, seed) for seed in args.seeds for n in args.variants if str(seed) not in runs.get(n, {})]
    # Threads only wait on `mpo-ros` subprocesses; results are written by this thread as each finishes.
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            (n, seed): pool.submit(run_variant, n, seed, args.steps, args.episodes) for n, seed in todo
        }
        for (name, seed), future in futures.items():
            figures = future.result()
            runs.setdefault(name, {})[str(seed)] = {**figures, "load_average_1min": os.getloadavg()[0]}
            print(name, seed, figures, flush=True)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2))
    results["table"] = table(results)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(results["table"])


if __name__ == "__main__":
    main()
