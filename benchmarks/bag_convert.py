"""Bag reading throughput: mpo_ros's reader vs a bare rosbags read + deserialise of the same bag.

The bag: a synthetic arm2 recording written with BagRecorder (what the sim node writes), with
/joint_states at 100 Hz, commands (Float64MultiArray) at 50 Hz and a goal (PointStamped) every 2 s,
``--seconds`` of robot time (default 1000 s: 150k messages), once as MCAP and once as sqlite3.

Contenders, each reading exactly those three topics of the same bag:

- ``bare_rosbags``  ``AnyReader`` + ``reader.deserialize(raw, msgtype)`` for every message (the floor:
                    read and decode, nothing kept);
- ``read_streams``  ``open_bag`` + ``read_streams`` + every sink's ``finish()``: messages decoded
                    into numpy columns in contract joint order (what the converter needs), with the
                    fast CDR path (mpo_ros/data/fastcdr.py);
- ``read_streams_rosbags``  the same with ``fast_cdr=False``: every message decoded by rosbags into
                    an object first (the reader before the fast path; its fallback);
- ``convert_bag``   the whole per-bag conversion: read, align, forward kinematics for every step
                    (MuJoCo), observations, actions, relabelled rewards. Reported, not in the ratio.

Rounds alternate the contenders (A B C D, then rotated) after one discarded warm-up round. Figures are
messages per second over the three topics: median, min and max across rounds, and the ratio of
medians read_streams / bare_rosbags (target >= 0.8).

Run:  python benchmarks/bag_convert.py [--seconds 1000] [--rounds 5]
Writes benchmarks/results/bag_convert.json.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rosbags.highlevel import AnyReader

from mpo_ros.contract.spec import RobotSpec, load_spec
from mpo_ros.data import messages
from mpo_ros.data.bag_reader import open_bag, read_streams
from mpo_ros.data.convert import Bag2DataConfig, convert_bag
from mpo_ros.data.recorder import BagRecorder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "bag_convert.json"
TOPICS = ("/joint_states", "/forward_position_controller/commands", "/goal")


def write_bag(path: Path, storage: str, spec: RobotSpec, seconds: float) -> int:
    """A plausible recording: a random walk inside the joint limits, commands a step ahead."""
    store = messages.typestore("kilted")
    rng = np.random.default_rng(0)
    lower = np.array([j.lower for j in spec.joints]) * 0.5
    upper = np.array([j.upper for j in spec.joints]) * 0.5
    positions = np.zeros(spec.num_joints)
    t0, count = 1_700_000_000_000_000_000, 0
    with BagRecorder(path, storage=storage) as rec:
        for k in range(round(seconds * 100)):
            t = t0 + k * 10_000_000
            velocities = rng.normal(0.0, 0.3, spec.num_joints)
            positions = np.clip(positions + 0.01 * velocities, lower, upper)
            rec.write(TOPICS[0], messages.joint_state(store, t, spec.joint_names, positions, velocities), t)
            count += 1
            if k % 2 == 0:
                command = np.clip(positions + rng.normal(0.0, 0.02, spec.num_joints), lower, upper)
                rec.write(TOPICS[1], messages.float64_multi_array(store, command), t + 1_000_000)
                count += 1
            if k % 200 == 0:
                goal = rng.uniform(spec.task.goal_low, spec.task.goal_high)
                rec.write(TOPICS[2], messages.point_stamped(store, t, goal), t)
                count += 1
    return count


def bare_rosbags(path: Path) -> int:
    store = messages.typestore("humble")
    count = 0
    with AnyReader([path], default_typestore=store) as reader:
        connections = [c for c in reader.connections if c.topic in TOPICS]
        for connection, _timestamp, raw in reader.messages(connections=connections):
            reader.deserialize(raw, connection.msgtype)
            count += 1
    return count


def ours_read(path: Path, spec: RobotSpec, fast_cdr: bool = True) -> int:
    with open_bag(path, fast_cdr=fast_cdr) as bag:
        sinks = read_streams(bag, TOPICS)
    sinks[TOPICS[0]].finish(spec.joint_names)
    sinks[TOPICS[1]].finish(spec.action_dim)
    sinks[TOPICS[2]].finish()
    return sum(len(s) for s in sinks.values())


def ours_convert(path: Path, spec: RobotSpec, config: Bag2DataConfig) -> int:
    part = convert_bag(path, spec, config)
    return sum(part.report["messages_read"].values())


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("rosbags", "numpy", "mujoco", "torch"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def measure(contenders: dict[str, Callable[[], int]], rounds: int) -> dict[str, dict[str, float]]:
    names = list(contenders)
    rates: dict[str, list[float]] = {n: [] for n in names}
    counts: dict[str, int] = {}
    for r in range(rounds + 1):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            started = time.perf_counter()
            counts[name] = contenders[name]()
            elapsed = time.perf_counter() - started
            if r > 0:  # round 0 warms caches and code generation up
                rates[name].append(counts[name] / elapsed)
    return {
        n: {
            "messages": counts[n],
            "msgs_per_s_median": statistics.median(rates[n]),
            "msgs_per_s_min": min(rates[n]),
            "msgs_per_s_max": max(rates[n]),
            "rounds": len(rates[n]),
        }
        for n in names
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1000.0, help="robot time recorded in the bag")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]  # the machine is shared: say how busy it was
    spec = load_spec("arm2")
    config = Bag2DataConfig(robot="arm2", out="unused", progress=False)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("mcap", "sqlite3"):
            bag = Path(tmp) / f"bag_{storage}"
            total = write_bag(bag, storage, spec, args.seconds)
            figures = measure(
                {
                    "bare_rosbags": lambda bag=bag: bare_rosbags(bag),
                    "read_streams": lambda bag=bag: ours_read(bag, spec),
                    "read_streams_rosbags": lambda bag=bag: ours_read(bag, spec, fast_cdr=False),
                    "convert_bag": lambda bag=bag: ours_convert(bag, spec, config),
                },
                args.rounds,
            )
            ratio = (
                figures["read_streams"]["msgs_per_s_median"] / figures["bare_rosbags"]["msgs_per_s_median"]
            )
            results[storage] = {
                "messages_in_bag": total,
                "bag_bytes": sum(p.stat().st_size for p in bag.iterdir()),
                **figures,
                "ratio_read_streams_vs_bare": ratio,
                "ratio_read_streams_rosbags_vs_bare": figures["read_streams_rosbags"]["msgs_per_s_median"]
                / figures["bare_rosbags"]["msgs_per_s_median"],
                "ratio_convert_bag_vs_bare": figures["convert_bag"]["msgs_per_s_median"]
                / figures["bare_rosbags"]["msgs_per_s_median"],
            }
            print(storage, json.dumps(results[storage], indent=1), flush=True)
    report = {
        "what": "rosbag2 read throughput (messages/s over /joint_states, commands, /goal): mpo_ros reader "
        "(fast CDR path, and with fast_cdr=False) vs bare rosbags AnyReader read + deserialise of the "
        "same bag; and the whole per-bag conversion",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "protocol": f"{args.rounds} rounds after one warm-up round, contenders rotated each round "
        "(A B C D, B C D A, ...); median/min/max of per-round rates (a round reads the whole bag)",
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "target": "read_streams >= 0.8 x bare_rosbags",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
