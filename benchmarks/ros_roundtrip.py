"""/joint_states -> command round trip across processes: transport floor vs the policy node.

This process publishes arm2 /joint_states at ``--rate-hz`` (a FixedRateLoop thread) whose shoulder
position encodes a sequence number k (k * 1e-5 rad, so consecutive states stay far inside the
per-step command limit), and receives /forward_position_controller/commands in its executor. The
command that answers state k carries k back; latency = receive time - send time of state k (one
clock, one machine), first answer per k only. Contenders, each a separate process, alternated
A B C A B C over ``--repeats`` rounds of ``--seconds``:

- ``echo``: a bare rclpy node that republishes each JointState's positions as Float64MultiArray in
  its callback: the cost of two DDS hops and two rclpy callbacks, the floor for any Python node;
- ``policy_node_joint_state``: `mpo-ros serve --loop joint_state`: the full control step (supervisor,
  observation, ONNX policy, safety filter) runs in the /joint_states callback;
- ``policy_node_single_thread``: `mpo-ros serve` with its default loop at the same rate: the step
  waits for the next tick of its own clock, so the figure adds the phase between the two loops
  (0..1 period, drifting slowly): it is the age of the data a command was computed from, not a
  transport time.

Both policy-node contenders run with the node's default ``realtime_priority: 50`` (SCHED_FIFO where
permitted); the echo node runs at normal priority.

The policy is a tracking policy with the project's 256x256 network inside (its output is scaled by
1e-7 and added to "command = measured position", so the network runs but the sequence number survives).

Run:  python benchmarks/ros_roundtrip.py [--seconds 10] [--repeats 3] [--rate-hz 500]
Writes benchmarks/results/ros_roundtrip.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ros_loop import header  # noqa: E402

from mpo_ros.robot.rate import FixedRateLoop, percentile_summary  # noqa: E402
from mpo_ros.ros.processes import NodeProcess, free_domain_id  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "ros_roundtrip.json"
STEP = 1e-5  # rad per sequence number
CONTENDERS = ("echo", "policy_node_joint_state", "policy_node_single_thread")


def echo_main() -> int:
    """`--echo`: JointState positions -> Float64MultiArray, in the subscription callback."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from mpo_ros.ros.messages import COMMAND_QOS, SENSOR_QOS

    rclpy.init()
    try:
        node = rclpy.create_node("bench_echo")
        pub = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", COMMAND_QOS)
        out = Float64MultiArray()

        def on_joint_state(msg: JointState) -> None:
            out.data = msg.position
            pub.publish(out)

        node.create_subscription(JointState, "/joint_states", on_joint_state, SENSOR_QOS)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        print("echo ready", flush=True)
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            executor.spin()
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def tracking_policy(tmp: Path) -> Path:
    import torch

    from mpo_ros.contract.observation import observation_names, observation_size
    from mpo_ros.contract.spec import load_spec
    from mpo_ros.training.export import export_module

    torch.set_num_threads(1)
    spec = load_spec("arm2")
    names = observation_names(spec)
    position_index = [names.index(f"joint_positions/{n}") for n in spec.joint_names]
    scale = torch.tensor([j.action_scale for j in spec.joints])

    class Tracking(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            obs_dim = observation_size(spec)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(obs_dim, 256),
                torch.nn.ELU(),
                torch.nn.Linear(256, 256),
                torch.nn.ELU(),
                torch.nn.Linear(256, spec.action_dim),
                torch.nn.Tanh(),
            )
            self.register_buffer("scale", scale)

        def forward(self, observation: torch.Tensor) -> torch.Tensor:
            track = observation[:, position_index] / self.scale
            return torch.clamp(track + 1e-7 * self.net(observation), -1.0, 1.0)

    path = tmp / "arm2_tracking.onnx"
    parity = np.random.default_rng(0).normal(0.0, 0.3, size=(1024, observation_size(spec)))
    export_module(
        Tracking().eval(),
        observation_size(spec),
        spec.action_dim,
        path,
        robot_spec=spec,
        provenance={"note": "tracking policy for the round-trip benchmark"},
        parity_observations=parity.astype(np.float32),
    )
    return path


class Driver:
    """Publishes sequence-numbered joint states and times the commands that answer them."""

    def __init__(self, context: Any, rate_hz: float, capacity: int) -> None:
        import rclpy
        from geometry_msgs.msg import PointStamped
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import SetBool

        from mpo_ros.ros.messages import SENSOR_QOS

        self.node = rclpy.create_node("bench_driver", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.sent_ns = np.zeros(capacity, dtype=np.int64)
        self.received_ns = np.zeros(capacity, dtype=np.int64)
        self.k = 0
        self.recording_from = capacity  # k from which answers count
        self._msg = JointState()
        self._msg.name = ["shoulder", "elbow"]
        self._msg.velocity = [0.0, 0.0]
        self._pub = self.node.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        self.goal_pub = self.node.create_publisher(PointStamped, "/goal", 10)
        self.node.create_subscription(
            Float64MultiArray, "/forward_position_controller/commands", self._on_command, 10
        )
        self.enable_client = self.node.create_client(SetBool, "/mpo_policy/enable")
        self._SetBool, self._PointStamped = SetBool, PointStamped
        self.loop = FixedRateLoop(rate_hz, self._publish, wait="sleep_spin", name="bench_driver")

    def _publish(self) -> None:
        k = self.k
        if k >= self.sent_ns.size:
            return
        self._msg.position = [k * STEP, 0.0]
        self.sent_ns[k] = time.monotonic_ns()
        self._pub.publish(self._msg)
        self.k = k + 1

    def _on_command(self, msg: Any) -> None:
        now = time.monotonic_ns()
        k = round(msg.data[0] / STEP)
        if self.recording_from <= k < self.k and self.received_ns[k] == 0:
            self.received_ns[k] = now

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def enable_policy(self, timeout: float = 60.0) -> None:
        if not self.enable_client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError("/mpo_policy/enable did not appear")
        goal = self._PointStamped()
        goal.point.x, goal.point.y = 0.3, 0.0
        for _ in range(50):
            self.goal_pub.publish(goal)
            future = self.enable_client.call_async(self._SetBool.Request(data=True))
            while not future.done():
                self.executor.spin_once(timeout_sec=0.02)
            if future.result().success:
                return
            self.spin_for(0.2)
        raise RuntimeError(f"could not enable the policy node: {future.result().message}")

    def latencies_us(self, end: int) -> np.ndarray:
        """Latencies of the states recording_from..end-1 that were answered."""
        received = self.received_ns[self.recording_from : end]
        answered = received > 0
        return (received[answered] - self.sent_ns[self.recording_from : end][answered]) / 1e3

    def close(self) -> None:
        self.loop.stop()
        self.executor.shutdown()
        self.node.destroy_node()


def run_contender(name: str, policy: Path, rate_hz: float, seconds: float, tmp: Path, rep: int) -> dict:
    import rclpy

    domain_id = free_domain_id(salt=31 + 7 * rep + CONTENDERS.index(name))
    if name == "echo":
        proc = NodeProcess(
            "", ["--echo"], tmp / f"echo_{rep}.log", domain_id, program=[sys.executable, __file__]
        )
    else:
        loop = name.removeprefix("policy_node_")
        proc = NodeProcess(
            "serve",
            ["--policy", str(policy), "--rate-hz", str(rate_hz), "--loop", loop],
            tmp / f"{name}_{rep}.log",
            domain_id,
        )
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    warmup = 2.0
    driver = Driver(context, rate_hz, capacity=round((seconds + warmup + 90) * rate_hz))
    diagnostics: dict[str, str] = {}
    try:
        if name == "echo":
            if not proc.wait_for_log("echo ready", 60):
                raise RuntimeError(proc.log())
        else:
            from diagnostic_msgs.msg import DiagnosticArray

            def on_diagnostics(msg: DiagnosticArray) -> None:
                for status in msg.status:
                    if status.name.startswith("mpo_policy"):
                        diagnostics.update({kv.key: kv.value for kv in status.values})

            driver.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        driver.loop.start()
        if name != "echo":
            driver.enable_policy()
        driver.spin_for(warmup)  # discovery settled, caches warm
        driver.recording_from = driver.k
        driver.spin_for(seconds)
        end = driver.k
        driver.spin_for(0.2)  # answers to the last states still count
        driver.loop.stop()
        sent = end - driver.recording_from
        latencies = driver.latencies_us(end)
    finally:
        driver.close()
        rclpy.shutdown(context=context)
        proc.stop()
    summary = percentile_summary(latencies / 1e6)
    return {
        "samples": int(latencies.size),
        "sent": int(sent),
        "answered_fraction": latencies.size / max(sent, 1),
        "p50_us": summary["p50"] * 1e6,
        "p90_us": float(np.percentile(latencies, 90)) if latencies.size else float("nan"),
        "p99_us": summary["p99"] * 1e6,
        "max_us": summary["max"] * 1e6,
        "node_policy_step_p99_us": float(diagnostics.get("policy_step_p99_us", "nan")),
        "latencies_us": latencies,
    }


def summarize(result: dict[str, Any]) -> list[str]:
    lines = [f"{result['rate_hz']:g} Hz /joint_states, pooled over rounds:"]
    for name, f in result["pooled"].items():
        if f["samples"]:
            ratio = result.get("ratio_vs_echo", {}).get(name, {})
            lines.append(
                f"{name}: p50 {f['p50_us']:.0f} us, p99 {f['p99_us']:.0f} us, max {f['max_us']:.0f} us "
                f"(x{ratio.get('p50', float('nan')):.2f} / x{ratio.get('p99', float('nan')):.2f} of echo)"
            )
    per_round = {}
    for r in result["rounds"]:
        per_round.setdefault(r["contender"], []).append(f"{r['p50_us']:.0f}")
    lines.append("p50 per round (us): " + "; ".join(f"{k} {', '.join(v)}" for k, v in per_round.items()))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per contender and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of A B C (order rotated)")
    parser.add_argument("--rate-hz", type=float, default=500.0, help="/joint_states rate (and node rate)")
    parser.add_argument("--contenders", nargs="*", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--summarize", default=None, help="only rewrite the summary of this result JSON")
    args = parser.parse_args()
    if args.echo:
        return echo_main()
    if args.summarize:
        path = Path(args.summarize)
        result = json.loads(path.read_text())
        result["summary"] = summarize(result)
        path.write_text(json.dumps(result, indent=1) + "\n")
        print("\n".join(result["summary"]))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    pooled: dict[str, list[np.ndarray]] = {c: [] for c in args.contenders}
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        policy = tracking_policy(tmp)
        for rep in range(args.repeats):
            order = (
                args.contenders[rep % len(args.contenders) :] + args.contenders[: rep % len(args.contenders)]
            )
            for name in order:
                figures = run_contender(name, policy, args.rate_hz, args.seconds, tmp, rep)
                pooled[name].append(figures.pop("latencies_us"))
                rounds.append({"round": rep, "contender": name, **figures})
                print(
                    f"round {rep} {name:24s} n={figures['samples']:6d} answered {figures['answered_fraction']:.3f} "
                    f"p50 {figures['p50_us']:7.1f} p99 {figures['p99_us']:8.1f} max {figures['max_us']:8.1f} us",
                    flush=True,
                )
    result = header("/joint_states -> command round trip across processes (same host, loopback DDS)")
    result["rate_hz"] = args.rate_hz
    result["seconds_per_round"] = args.seconds
    result["rounds"] = rounds
    figures = {}
    for name, chunks in pooled.items():
        values = np.concatenate(chunks) if chunks else np.zeros(0)
        figures[name] = {
            "samples": int(values.size),
            "p50_us": float(np.percentile(values, 50)) if values.size else None,
            "p90_us": float(np.percentile(values, 90)) if values.size else None,
            "p99_us": float(np.percentile(values, 99)) if values.size else None,
            "max_us": float(values.max()) if values.size else None,
        }
    result["pooled"] = figures
    if "echo" in figures and figures["echo"]["samples"]:
        result["ratio_vs_echo"] = {
            name: {
                "p50": f["p50_us"] / figures["echo"]["p50_us"],
                "p99": f["p99_us"] / figures["echo"]["p99_us"],
            }
            for name, f in figures.items()
            if f["samples"]
        }
    result["machine"]["load_average_at_end"] = os.getloadavg()
    result["summary"] = summarize(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(figures, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
