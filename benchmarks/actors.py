"""Ray actors: environment steps collected and learner updates per second for --actors 0, 1, 2, and arm2
success against wall-clock time for --actors 0 and 2.

Every measurement is one `mpo-ros train` subprocess on the arm2 recipe (sim/recipes/arm2_reach.yaml: 64x64
networks, batch 128, 10 action samples, one torch thread), as a user would run it; rates are read back
from the run's metrics.csv between the first row after warm-up and the last row, so Ray's start-up (about
8 s here) and the warm-up are not counted.

- learner paused (`--updates-per-step 0`): pure collection, policy sampling included; the actors' scaling
  efficiency is steps/s(N actors) / (N * steps/s(1 actor)).
- learner running (`--updates-per-step 1`, the recipe's ratio): what a user gets; with the rate limiter the
  run's steps/s equals its updates/s, bounded by the slower of the learner and the actors.
- learning: arm2 success (20 deterministic episodes every 2500 steps) against wall-clock seconds, one seed.

Configurations alternate (A B C, A B C) over --rounds; the script records medians. The machine is shared:
the JSON records its CPU count and load average. Chunked: results already in the JSON are kept and skipped
unless --fresh, so a long run can be resumed in a later sitting.

Run:  python benchmarks/actors.py [--rounds 2] [--paused-steps 6000] [--running-steps 4000]
                                  [--learning-steps 30000] [--skip-learning] [--fresh]
Writes benchmarks/results/actors.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline import versions

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "actors.json"
RECIPE = ROOT / "sim" / "recipes" / "arm2_reach.yaml"
WARMUP = 1000


def run_train(
    out: Path, actors: int, steps: int, updates_per_step: int, eval_every: int
) -> list[dict[str, str]]:
    command = [
        sys.executable, "-m", "mpo_ros.cli", "--log-level", "WARNING", "train", "--config", str(RECIPE),
        "--out", str(out), "--steps", str(steps), "--warmup-steps", str(WARMUP), "--actors", str(actors),
        "--updates-per-step", str(updates_per_step), "--eval-every", str(eval_every), "--log-every", "250",
        "--progress", "false", "--threads", "1",
    ]  # fmt: skip
    if eval_every == 0:
        command += ["--eval-episodes", "1"]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with (out / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def rates(rows: list[dict[str, str]]) -> dict[str, float]:
    """Steps/s and updates/s between the first logged row past warm-up and the last logged row."""
    logged = [r for r in rows if r.get("train/steps_per_s")]
    past = [r for r in logged if int(float(r["step"])) > WARMUP + 250]
    first, last = past[0], logged[-1]
    seconds = float(last["wall_s"]) - float(first["wall_s"])
    return {
        "env_steps_per_s": (float(last["step"]) - float(first["step"])) / seconds,
        "updates_per_s": (float(last["updates"]) - float(first["updates"])) / seconds,
        "seconds_measured": seconds,
    }


def throughput(args: argparse.Namespace, results: dict) -> None:
    table = results.setdefault("throughput", {})
    for round_index in range(args.rounds):
        for mode, steps, ratio in (("paused", args.paused_steps, 0), ("running", args.running_steps, 1)):
            for actors in (0, 1, 2):
                key = f"{mode}/actors={actors}"
                samples = table.setdefault(key, [])
                if len(samples) > round_index:
                    continue  # measured in an earlier sitting
                with tempfile.TemporaryDirectory() as tmp:
                    figures = rates(run_train(Path(tmp) / "run", actors, steps, ratio, eval_every=0))
                figures["load_average_1min"] = os.getloadavg()[0]
                samples.append(figures)
                print(f"round {round_index} {key}: {figures}", flush=True)
                save(results)


def learning(args: argparse.Namespace, results: dict) -> None:
    curves = results.setdefault("learning", {})
    for actors in (0, 2):
        key = f"actors={actors}"
        if key in curves and curves[key].get("steps") == args.learning_steps:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rows = run_train(Path(tmp) / "run", actors, args.learning_steps, 1, eval_every=2500)
        evals = [r for r in rows if r.get("eval/success_rate")]
        curves[key] = {
            "steps": args.learning_steps,
            "curve": [
                {
                    "step": int(float(r["step"])),
                    "wall_s": float(r["wall_s"]),
                    "success": float(r["eval/success_rate"]),
                }
                for r in evals
            ],
            "load_average_1min": os.getloadavg()[0],
        }
        print(f"learning {key}: {curves[key]['curve'][-1]}", flush=True)
        save(results)


def summarise(results: dict) -> dict:
    summary = {}
    for key, samples in results.get("throughput", {}).items():
        summary[key] = {
            name: statistics.median(s[name] for s in samples) for name in ("env_steps_per_s", "updates_per_s")
        }
    paused = {n: summary.get(f"paused/actors={n}", {}).get("env_steps_per_s") for n in (0, 1, 2)}
    if paused[1] and paused[2]:
        summary["scaling_efficiency_2_actors"] = paused[2] / (2 * paused[1])
    running = {n: summary.get(f"running/actors={n}", {}).get("env_steps_per_s") for n in (0, 1, 2)}
    if running[0] and running[2]:
        summary["running_speedup_2_actors_vs_in_process"] = running[2] / running[0]
    return summary


def save(results: dict) -> None:
    results["summary"] = summarise(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(RESULTS)


def markdown(results: dict) -> str:
    summary = results["summary"]
    lines = [
        "| actors | env steps/s, learner paused | env steps/s = updates/s, learner running |",
        "|---|---|---|",
    ]
    for n in (0, 1, 2):
        paused = summary.get(f"paused/actors={n}", {}).get("env_steps_per_s", float("nan"))
        running = summary.get(f"running/actors={n}", {}).get("updates_per_s", float("nan"))
        lines.append(f"| {n} | {paused:.0f} | {running:.1f} |")
    for key, curve in results.get("learning", {}).items():
        points = ", ".join(f"{p['success']:.2f} @ {p['wall_s']:.0f} s" for p in curve["curve"][::2])
        lines.append(f"\n{key}: success vs wall-clock: {points}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--paused-steps", type=int, default=6000)
    parser.add_argument("--running-steps", type=int, default=4000)
    parser.add_argument("--learning-steps", type=int, default=30000)
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="discard earlier results instead of resuming")
    args = parser.parse_args()
    results = {} if args.fresh or not RESULTS.is_file() else json.loads(RESULTS.read_text())
    results.update(
        {
            "what": "env steps/s and learner updates/s for --actors 0/1/2 on the arm2 recipe; success vs wall-clock",
            "command": " ".join(["python", *sys.argv]),
            "versions": {**versions(), "ray": _version("ray")},
            "cpu_count": os.cpu_count(),
            "torch_threads": 1,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
    )
    throughput(args, results)
    if not args.skip_learning:
        learning(args, results)
    save(results)
    print(markdown(results))


def _version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


if __name__ == "__main__":
    main()
