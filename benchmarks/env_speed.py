"""Environment throughput: control steps per second of the reach envs, nominal vs randomised.

What is timed: `env.step(action)` of `gymnasium.make("mpo_ros_sim:<Robot>Reach-v0", randomize=...)`
(with gymnasium's default wrappers, as training uses it) with random actions, resets included when an
episode truncates. For reference, the same robot's bare physics (`mujoco.mj_step`, physics_substeps
per control step) is timed in the same run. Configurations are measured interleaved (A B A B ...,
several repetitions) so machine-load drift hits all of them alike; the per-step latencies of all
repetitions are pooled for p50/p99 and throughput is the median over repetitions.

    python benchmarks/env_speed.py [--steps 4000] [--repeats 5]

writes benchmarks/results/env_speed.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "osmesa")

import gymnasium as gym
import mujoco
from mpo_ros_sim.model import load_model

from mpo_ros.contract.spec import load_spec

ROBOTS = {"arm2": "mpo_ros_sim:Arm2Reach-v0", "arm6": "mpo_ros_sim:Arm6Reach-v0"}
PROFILES = ("none", "train", "heldout")


def _time_env(env: gym.Env, steps: int, rng: np.random.Generator) -> np.ndarray:
    actions = rng.uniform(-1, 1, size=(steps, *env.action_space.shape)).astype(np.float32)
    latencies = np.empty(steps)
    for i in range(steps):
        start = time.perf_counter_ns()
        truncated = env.step(actions[i])[3]
        if truncated:
            env.reset()
        latencies[i] = time.perf_counter_ns() - start
    return latencies


def _time_physics(robot: str, steps: int) -> np.ndarray:
    spec = load_spec(robot)
    model = load_model(spec)
    data = mujoco.MjData(model)
    latencies = np.empty(steps)
    for i in range(steps):
        start = time.perf_counter_ns()
        mujoco.mj_step(model, data, spec.physics_substeps)
        latencies[i] = time.perf_counter_ns() - start
    return latencies


def _summary(latencies: list[np.ndarray]) -> dict[str, float]:
    pooled = np.concatenate(latencies) / 1e3
    per_repeat = [len(x) / (x.sum() / 1e9) for x in latencies]
    return {
        "steps_per_s_median": float(np.median(per_repeat)),
        "steps_per_s_min": float(np.min(per_repeat)),
        "steps_per_s_max": float(np.max(per_repeat)),
        "step_us_p50": float(np.percentile(pooled, 50)),
        "step_us_p99": float(np.percentile(pooled, 99)),
        "step_us_max": float(pooled.max()),
        "samples": len(pooled),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=4000, help="control steps per configuration and repetition"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "env_speed.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    envs = {}
    for robot, env_id in ROBOTS.items():
        for profile in PROFILES:
            env = gym.make(env_id, randomize=profile)
            env.reset(seed=0)
            _time_env(env, 200, rng)  # warm-up, discarded
            envs[(robot, profile)] = env
    samples: dict[str, list[np.ndarray]] = {}
    for _ in range(args.repeats):
        for robot in ROBOTS:
            samples.setdefault(f"{robot}/physics_only", []).append(_time_physics(robot, args.steps))
            for profile in PROFILES:
                samples.setdefault(f"{robot}/{profile}", []).append(
                    _time_env(envs[(robot, profile)], args.steps, rng)
                )
    for env in envs.values():
        env.close()

    figures = {name: _summary(values) for name, values in samples.items()}
    ratios = {}
    for robot in ROBOTS:
        nominal = figures[f"{robot}/none"]["steps_per_s_median"]
        for profile in ("train", "heldout"):
            ratios[f"{robot}: {profile} / none"] = (
                figures[f"{robot}/{profile}"]["steps_per_s_median"] / nominal
            )
        ratios[f"{robot}: env / physics_only"] = (
            nominal / figures[f"{robot}/physics_only"]["steps_per_s_median"]
        )

    import torch

    result = {
        "what": "control steps/s of the reach envs (gym.make, random actions, resets included); "
        "physics_only = bare mj_step x physics_substeps of the same MJCF",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "threads": 1, "platform": platform.platform()},
        "versions": {
            "python": platform.python_version(),
            "mujoco": mujoco.__version__,
            "gymnasium": gym.__version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
        },
        "protocol": {"steps_per_repeat": args.steps, "repeats": args.repeats, "interleaved": True},
        "figures": figures,
        "ratios": ratios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    width = max(len(k) for k in figures)
    for name, fig in figures.items():
        print(
            f"{name:<{width}}  {fig['steps_per_s_median']:9.0f} steps/s  "
            f"p50 {fig['step_us_p50']:7.1f} us  p99 {fig['step_us_p99']:7.1f} us"
        )
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
