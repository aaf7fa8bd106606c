"""Does calibration close the sim-to-real gap? Policies on a perturbed "real robot" stand-in (arm2 or UR5e).

The stand-in is the robot (``--robot arm2|ur5e``) with every joint's damping x1.6, servo kp x0.8,
armature x2 and one control period of command latency: a simulator no policy trains on. Three policies
get the same budget (the robot's recipe in sim/recipes/, `--steps` environment steps, same seed):

* ``nominal``: trained on the hand-written MJCF without randomisation;
* ``wide``: trained on the hand-written MJCF with the robot's wide training profile (arm2: `train`,
  UR5e: `ur5e_train`);
* ``calibrated``: trained on the robot `mpo-ros calibrate` fitted to `--excite-seconds` of excitation
  logs of the stand-in (multisine, 1 mrad sensor noise), with the calibration's centred profile.

Each is evaluated (deterministic policy, episodes seeded from 10000) on the stand-in and on the
nominal robot. Stages are resumable: the calibration, every finished training chunk and every
evaluation are kept in `--workdir`, and the JSON is rewritten after each stage, so a killed run
continues where it stopped:

    python benchmarks/calibration.py [--robot arm2] [--steps 20000] [--seeds 0] [--episodes 50]

writes benchmarks/results/calibration.json (arm2; work in runs/bench_calibration) or
calibration_ur5e.json (UR5e; work in runs/bench_calibration_ur5e).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")

import mpo_ros_sim
import mujoco
import numpy as np
import torch
import yaml
from mpo_ros_sim.randomization import RandomizationProfile, Range
from mpo_ros_sim.reach_env import RobotReachEnv

from mpo_ros.calibration.command import CalibrateConfig, calibrate
from mpo_ros.calibration.record import record_sim_excitation
from mpo_ros.calibration.robots import scaled_values, write_robot
from mpo_ros.calibration.signals import ExcitationConfig
from mpo_ros.config import from_dict
from mpo_ros.contract.spec import load_spec
from mpo_ros.training.evaluate import load_eval_policy, run_episodes
from mpo_ros.training.loop import TrainConfig, train

PERTURBATION = {"damping": 1.6, "kp": 0.8, "armature": 2.0}
LATENCY_STEPS = 1
EVAL_SEED = 10_000
CHUNK = 5_000
RECIPES = Path(mpo_ros_sim.__file__).parent / "recipes"
# Per robot: its training recipe, its wide randomisation profile, where its work and results go.
ROBOTS = {
    "arm2": {"recipe": "arm2_reach.yaml", "wide": "train", "workdir": "runs/bench_calibration", "out": "calibration.json"},
    "ur5e": {"recipe": "ur5e_reach.yaml", "wide": "ur5e_train", "workdir": "runs/bench_calibration_ur5e",
             "out": "calibration_ur5e.json"},
}  # fmt: skip


def stand_in(workdir: Path, name: str) -> tuple[Path, Path, dict[str, float]]:
    """The perturbed robot (spec YAML), its latency profile, and the true parameter values."""
    spec = load_spec(name)
    truth = scaled_values(spec, PERTURBATION)
    robot = workdir / "stand_in" / f"{name}_stand_in.yaml"
    profile = workdir / "stand_in" / "latency.yaml"
    if robot.is_file() and profile.is_file():  # written once: processes started later must not rewrite it
        return robot, profile, truth
    robot = write_robot(spec, truth, workdir / "stand_in", f"{name}_stand_in")
    ranges = RandomizationProfile(latency_steps=Range(LATENCY_STEPS, LATENCY_STEPS)).to_dict()
    profile.write_text(yaml.safe_dump(ranges, sort_keys=False))
    return robot, profile, truth


def calibration(workdir: Path, name: str, robot: Path, seconds: float, truth: dict[str, float]) -> dict:
    out = workdir / "calib"
    if (out / "parameters.json").is_file():
        return json.loads((out / "summary.json").read_text())
    bag = workdir / "excite_bag"
    if not bag.exists():
        record_sim_excitation(
            load_spec(robot),
            bag,
            ExcitationConfig(duration=seconds),
            latency_steps=LATENCY_STEPS,
            position_noise=1e-3,
        )
    start = time.perf_counter()
    result = calibrate(CalibrateConfig(robot=name, out=str(out), bag=[str(bag)]))
    summary = {
        "excite_seconds": seconds,
        "calibrate_wall_s": round(time.perf_counter() - start, 1),
        "latency_s": result.latency_s,
        "validation_rmse": {"before": result.validation_rmse_before, "after": result.validation_rmse_after},
        "relative_error": {k: abs(result.parameters[k].value - v) / v for k, v in truth.items()},
        "warnings": result.warnings,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def variants(workdir: Path, name: str) -> dict[str, dict]:
    calib = workdir / "calib"
    return {
        "nominal": {"robot": name, "randomize": "none"},
        "wide": {"robot": name, "randomize": ROBOTS[name]["wide"]},
        "calibrated": {"robot": str(calib / "calibrated.yaml"), "randomize": str(calib / "profile.yaml")},
    }


def train_run(out: Path, recipe_file: Path, env_kwargs: dict, steps: int, seed: int) -> float:
    """Train in chunks of CHUNK steps (exact resume); returns the wall time of the chunks run now."""
    recipe = yaml.safe_load(recipe_file.read_text())
    # The robot and its randomisation come from the variant (env_kwargs), not from the recipe.
    recipe.pop("robot", None)
    recipe.pop("env_kwargs", None)
    done_file = out / "done_steps.txt"
    done = int(done_file.read_text()) if done_file.is_file() else 0
    wall = 0.0
    for budget in range(done + CHUNK, steps + 1, CHUNK):
        config = from_dict(
            TrainConfig,
            {**recipe, "env": "mpo_ros_sim:Reach-v0", "env_kwargs": yaml.safe_dump(env_kwargs, default_flow_style=True),
             "steps": budget, "out": str(out), "seed": seed, "resume": budget > CHUNK, "eval_every": 0,
             "eval_episodes": 1},
            source=str(out),
        )  # fmt: skip
        start = time.perf_counter()
        train(config)
        wall += time.perf_counter() - start
        done_file.write_text(str(budget))
        print(f"  {out.name}: {budget} steps", flush=True)
    return wall


def success(run: Path, robot: str | Path, randomize: str | Path, episodes: int) -> dict:
    policy = load_eval_policy(run, "cpu")
    env = RobotReachEnv(robot=str(robot), randomize=str(randomize))
    try:
        summary = run_episodes(policy, env, episodes, EVAL_SEED).summary()
    finally:
        env.close()
    return {k: summary[k] for k in ("success_rate", "return_mean", "final_distance_mean")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="arm2", choices=list(ROBOTS))
    parser.add_argument(
        "--steps", type=int, default=20_000, help="environment steps per policy (equal budget)"
    )
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--excite-seconds", type=float, default=60.0)
    parser.add_argument(
        "--variants", default="nominal,wide,calibrated", help="comma-separated subset (e.g. one per process)"
    )
    parser.add_argument("--workdir", default=None, help="default: per robot (see ROBOTS)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/calibration[_ROBOT].json")
    args = parser.parse_args()
    setting = ROBOTS[args.robot]
    args.workdir = args.workdir or setting["workdir"]
    args.out = args.out or str(Path(__file__).parent / "results" / setting["out"])
    recipe = RECIPES / setting["recipe"]
    torch.set_num_threads(1)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    robot, latency, truth = stand_in(workdir, args.robot)
    results["calibration"] = calibration(workdir, args.robot, robot, args.excite_seconds, truth)
    _write(out, args, results)
    runs = results.setdefault("runs", {})
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        for name, env_kwargs in variants(workdir, args.robot).items():
            if name not in args.variants.split(","):
                continue
            key = f"{name}_s{seed}"
            entry = runs.get(key, {})
            if entry.get("steps") == args.steps and "stand_in" in entry:
                continue
            run = workdir / key
            wall = train_run(run, recipe, env_kwargs, args.steps, seed)
            entry = {
                "variant": name,
                "seed": seed,
                "steps": args.steps,
                "env_kwargs": env_kwargs,
                "train_wall_s": round(entry.get("train_wall_s", 0.0) + wall, 1),
                "stand_in": success(run, robot, latency, args.episodes),
                f"nominal_{args.robot}": success(run, args.robot, "none", args.episodes),
            }
            runs[key] = entry
            print(f"{key:16s} stand-in success {entry['stand_in']['success_rate']:.2f}  "
                  f"nominal {entry[f'nominal_{args.robot}']['success_rate']:.2f}", flush=True)  # fmt: skip
            _write(out, args, results)
    print(f"wrote {out}")
    return 0


def _write(out: Path, args: argparse.Namespace, results: dict) -> None:
    results.update(
        {
            "what": f"success on a perturbed {args.robot} stand-in (damping x1.6, kp x0.8, armature x2, 1 period "
            f"latency) of policies trained on the nominal MJCF, the wide '{ROBOTS[args.robot]['wide']}' "
            "randomisation, and a calibration of the stand-in with its centred profile; equal steps, same seed",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": 1, "platform": platform.platform()},
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "mujoco": mujoco.__version__,
                "numpy": np.__version__,
            },
            "protocol": {
                "steps": args.steps,
                "episodes": args.episodes,
                "eval_seed": EVAL_SEED,
                "excite_seconds": args.excite_seconds,
                "robot": args.robot,
                "recipe": f"sim/recipes/{ROBOTS[args.robot]['recipe']}",
            },
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (one per --variants subset) may share one results file: merge under a lock.
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.is_file():
            runs = results.setdefault("runs", {})  # in place: main() keeps adding to this dict
            for key, entry in json.loads(out.read_text()).get("runs", {}).items():
                runs.setdefault(key, entry)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=1, default=float) + "\n")
        tmp.replace(out)


if __name__ == "__main__":
    sys.exit(main())
