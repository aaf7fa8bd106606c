"""Inference latency inside the policy node vs in a hot loop, with and without the pre-deadline warm-up.

Why the node was slow: at 50 Hz the control thread sleeps ~20 ms between steps, and on a loaded
machine the caches are cold when it wakes. The same ONNX inference that takes ~7 us back to back
took ~235 us after 20 ms asleep, with or without ROS, whatever the onnxruntime session options
(thread spinning, memory arena, memory patterns, optimisation level); a numpy MLP of the same size
showed the same effect (mpo_ros/robot/rate.py). The fix: ``FixedRateLoop(warmup=..., warmup_lead=...)``
runs the policy once ``warmup_lead`` before each deadline and busy-waits to it, so the real step finds
warm caches (the node's ``warmup_lead`` parameter, 0.5 ms by default).

Measured in one run, all on ``OnnxPolicy.act_bound`` (the call the node's
``inference_latency_*_us`` diagnostics time), with the shipped models/arm2_reach.onnx:

- ``hot_loop``: policy_step back to back (the floor);
- ``loop_50hz_warmup_off`` / ``_on``: FixedRateLoop at 50 Hz calling policy_step, no ROS;
- ``node_50hz_warmup_off`` / ``_on``: `mpo-ros serve` against `mpo-ros sim-robot` (demo_run), enabled,
  the node's own /diagnostics at the end of the run.

Run:  python benchmarks/inference_in_node.py [--seconds 15]
Writes benchmarks/results/inference_in_node.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from mpo_ros.contract.tasks import sample_goal  # noqa: E402
from mpo_ros.robot.onnx_policy import OnnxPolicy  # noqa: E402
from mpo_ros.robot.rate import FixedRateLoop  # noqa: E402
from mpo_ros.robot.safety import SafetyFilter, policy_step  # noqa: E402

POLICY = ROOT / "models" / "arm2_reach.onnx"
RESULT = ROOT / "benchmarks" / "results" / "inference_in_node.json"


def summary(policy: OnnxPolicy) -> dict[str, float]:
    stats = policy.latency_stats()
    return {
        "p50_us": stats.p50 * 1e6,
        "p99_us": stats.p99 * 1e6,
        "max_us": stats.max * 1e6,
        "calls": stats.count,
    }


def fresh_policy() -> tuple[OnnxPolicy, SafetyFilter, Any]:
    policy = OnnxPolicy(str(POLICY), require_contract=True)
    spec = policy.spec
    safety = SafetyFilter.for_policy(policy)
    safety.reset(np.array([j.default for j in spec.joints]))
    goal = sample_goal(spec, np.random.default_rng(0))
    state = np.array([j.default for j in spec.joints]), np.zeros(spec.num_joints), goal
    return policy, safety, state


def hot_loop(calls: int) -> dict[str, float]:
    policy, safety, (positions, velocities, goal) = fresh_policy()
    for _ in range(200):
        policy_step(policy, safety, positions, velocities, goal)
    policy.reset_latency_stats()
    for _ in range(calls):
        policy_step(policy, safety, positions, velocities, goal)
    return summary(policy)


def loop_50hz(seconds: float, warmup_lead: float) -> dict[str, float]:
    policy, safety, (positions, velocities, goal) = fresh_policy()

    def step() -> None:
        policy_step(policy, safety, positions, velocities, goal)

    loop = FixedRateLoop(50.0, step, warmup=policy.warm, warmup_lead=warmup_lead)
    loop.run_for(1.0)
    policy.reset_latency_stats()
    loop = FixedRateLoop(50.0, step, warmup=policy.warm, warmup_lead=warmup_lead)
    loop.run_for(seconds)
    return summary(policy)


def node_50hz(seconds: float, warmup_lead: float) -> dict[str, Any]:
    from mpo_ros.ros.demo_run import run_demo

    with tempfile.TemporaryDirectory() as tmp:
        result = run_demo(
            POLICY,
            seconds=seconds,
            goal_period=3.0,
            workdir=tmp,
            verbose=False,
            policy_args=("--warmup-lead", str(warmup_lead)),
        )
    diagnostics = result["diagnostics"]
    return {
        "p50_us": float(diagnostics["inference_latency_p50_us"]),
        "p99_us": float(diagnostics["inference_latency_p99_us"]),
        "policy_step_p50_us": float(diagnostics["policy_step_p50_us"]),
        "policy_step_p99_us": float(diagnostics["policy_step_p99_us"]),
        "rate_achieved_hz": float(diagnostics["rate_achieved_hz"]),
        "goals_reached": f"{result['reach']['goals_reached']}/{result['reach']['goals']}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per 50 Hz contender")
    parser.add_argument("--calls", type=int, default=20000, help="hot-loop calls")
    args = parser.parse_args()
    start = time.time()
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        },
        "policy": str(POLICY.relative_to(ROOT)),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/inference_in_node.py " + " ".join(sys.argv[1:]),
    }
    results["hot_loop"] = hot_loop(args.calls)
    for lead, name in ((0.0, "off"), (5e-4, "on")):
        results[f"loop_50hz_warmup_{name}"] = loop_50hz(args.seconds, lead)
        results[f"node_50hz_warmup_{name}"] = node_50hz(args.seconds, lead)
        print(name, results[f"loop_50hz_warmup_{name}"], results[f"node_50hz_warmup_{name}"], flush=True)
    hot_p99 = results["hot_loop"]["p99_us"]
    results["node_p99_over_hot_p99"] = {
        name: results[f"node_50hz_warmup_{name}"]["p99_us"] / hot_p99 for name in ("off", "on")
    }
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["wall_s"] = time.time() - start
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
