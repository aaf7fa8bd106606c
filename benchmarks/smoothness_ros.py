"""Command smoothness over ROS 2: what the policy node publishes, for the smooth arm2 policy and the one before.

Each policy is served by `mpo-ros serve` against `mpo-ros sim-robot` (separate processes, loopback DDS,
real time) for ``--seconds`` after enable, new goals every ``--goal-period`` s; `mpo_ros.ros.demo_run`
listens to the published commands and judges them with the same `contract.smoothness` figures as
`mpo-ros eval` (mean |delta command|, share of changes at the slew limit, share of energy above 5 Hz), over
the whole run. ``sim-robot --robot <policy.onnx>`` simulates each policy's own contract (the earlier policy
has no action filter, the shipped one a 3 Hz low-pass). The earlier policy is read from git history.

    python benchmarks/smoothness_ros.py [--seconds 30] [--rounds 2]

writes benchmarks/results/smoothness_ros.json.
"""

from __future__ import annotations

import argparse
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

from mpo_ros.ros.demo_run import run_demo

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "smoothness_ros.json"
# The arm2 policy shipped before the smooth one (commit of the last release before it).
PREVIOUS = ("8afd454", "models/arm2_reach.onnx")
FIGURES = ("command_rate", "slew_limited_fraction", "high_frequency_share")


def previous_policy(folder: Path) -> Path:
    path = folder / "arm2_reach_previous.onnx"
    blob = subprocess.run(
        ["git", "show", f"{PREVIOUS[0]}:{PREVIOUS[1]}"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path.write_bytes(blob)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--goal-period", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per policy")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"previous": [], "shipped": []}
    with tempfile.TemporaryDirectory() as tmp:
        policies = {"previous": previous_policy(Path(tmp)), "shipped": ROOT / "models" / "arm2_reach.onnx"}
        for round_ in range(args.rounds):
            for name, policy in policies.items():
                result = run_demo(
                    policy,
                    seconds=args.seconds,
                    robot=str(policy),
                    goal_period=args.goal_period,
                    workdir=Path(tmp) / f"{name}_{round_}",
                    verbose=False,
                )
                commands, reach = result["commands"], result["reach"]
                runs[name].append(
                    {
                        "goals": reach["goals"],
                        "goals_reached": reach["goals_reached"],
                        "commands_received": commands["received"],
                        **{key: commands[key] for key in FIGURES},
                        "rate_achieved_hz": float(result["diagnostics"].get("rate_achieved_hz", "nan")),
                        "load_average_1min": os.getloadavg()[0],
                    }
                )
                print(name, round_, runs[name][-1], flush=True)
    summary = {
        name: {
            "goals_reached_fraction": sum(r["goals_reached"] for r in rows)
            / max(1, sum(r["goals"] for r in rows)),
            **{f"{key}_median": statistics.median(r[key] for r in rows) for key in FIGURES},
        }
        for name, rows in runs.items()
    }
    RESULTS.write_text(
        json.dumps(
            {
                "what": "arm2 command smoothness over ROS 2 (serve + sim-robot, real time): the smooth shipped "
                "policy vs the one before it",
                "command": " ".join(["python", *sys.argv]),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "versions": versions(),
                "cpu_count": os.cpu_count(),
                "protocol": {"seconds": args.seconds, "goal_period": args.goal_period, "rounds": args.rounds},
                "previous_policy": f"{PREVIOUS[0]}:{PREVIOUS[1]}",
                "summary": summary,
                "runs": runs,
            },
            indent=2,
        )
    )
    for name, row in summary.items():
        print(
            f"{name:9s} goals {100 * row['goals_reached_fraction']:.0f} %  |dc| {row['command_rate_median']:.4f} "
            f"rad/step  slew-limited {100 * row['slew_limited_fraction_median']:.1f} %  "
            f"energy > 5 Hz {100 * row['high_frequency_share_median']:.1f} %"
        )


if __name__ == "__main__":
    main()
