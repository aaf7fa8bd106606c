"""Control-loop timing: achieved rate and period jitter of the loop mechanisms the policy node can use.

Part 1, mechanisms in one process shaped like the policy node (an rclpy node spinning a
SingleThreadedExecutor in the main thread), at 100, 500 and 1000 Hz, each for ``--seconds``:

- ``timer``            an rclpy timer on that executor (the textbook way);
- ``thread_sleep``     mpo_ros.robot.rate.FixedRateLoop on its own thread, absolute deadlines, one sleep each;
- ``thread_sleep_spin`` the same, sleeping to 100 us before each deadline and polling the clock after;
- ``single_thread``    FixedRateLoop on the main thread with ``idle=executor.spin_once``: callbacks run
  in the waiting time (none starts within 300 us of a deadline), then sleep + spin as above;
- ``*_rt``             the same with the loop thread under SCHED_FIFO priority 50 (``realtime_priority``).

Each runs in two conditions: ``idle`` (nothing else arrives) and ``traffic`` (a second process
publishes /joint_states at the loop rate, received by a callback on the executor, as on a robot).
Contenders alternate within each rate (A B C, and the order rotates per condition) so that the
machine's noise hits all of them alike. Period jitter = |t_k - t_{k-1} - period|.

Part 2, the real policy node (`mpo-ros serve`, a policy with the arm2 contract), driven by
/joint_states at the loop rate from this process, enabled with a goal; its own /diagnostics give
achieved rate, jitter and the policy-step latency (observation + ONNX + safety filter) over its
last 4096 ticks, for ``loop: thread``, ``single_thread`` (also with ``realtime_priority: 50``) and
``timer`` at 500 and 1000 Hz.

Run:  python benchmarks/ros_loop.py [--seconds 10] [--rates 100 500 1000]
Writes benchmarks/results/ros_loop.json.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "ros_loop.json"
sys.path.insert(0, str(ROOT))

from mpo_ros.robot.rate import FixedRateLoop, LoopStats  # noqa: E402
from mpo_ros.ros.processes import NodeProcess, free_domain_id, ros_env  # noqa: E402

MECHANISMS = (
    "timer",
    "thread_sleep",
    "thread_sleep_spin",
    "single_thread",
    "thread_sleep_spin_rt",
    "single_thread_rt",
)
RT_PRIORITY = 50


# --- machine description (also used by ros_roundtrip.py) ------------------------------------------


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("rclpy", "onnxruntime", "numpy", "mujoco", "torch"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
        "kernel": platform.release(),
    }


def header(what: str) -> dict[str, Any]:
    return {
        "what": what,
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "machine": machine(),
        "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "onnxruntime_intra_op": 1},
    }


def micro(summary: Any) -> dict[str, float]:
    return {
        "rate_hz": summary.rate_hz,
        "rate_error_percent": 100 * summary.rate_error,
        "jitter_p50_us": summary.jitter_p50 * 1e6,
        "jitter_p99_us": summary.jitter_p99 * 1e6,
        "jitter_max_us": summary.jitter_max * 1e6,
        "lateness_p50_us": summary.lateness_p50 * 1e6,
        "lateness_p99_us": summary.lateness_p99 * 1e6,
        "overruns": summary.overruns,
        "periods": summary.samples,
    }


# --- a /joint_states publisher process -------------------------------------------------------------


def publisher_main(rate_hz: float, seconds: float) -> int:
    """`--publish RATE`: /joint_states for arm2 at RATE Hz from a FixedRateLoop (child process)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from mpo_ros.ros.messages import SENSOR_QOS, joint_state_message

    rclpy.init()
    try:
        node = rclpy.create_node("bench_joint_states")
        from sensor_msgs.msg import JointState

        pub = node.create_publisher(JointState, "/joint_states", SENSOR_QOS)
        positions = np.array([0.1, -0.2])

        def publish() -> None:
            pub.publish(joint_state_message(["shoulder", "elbow"], positions, np.zeros(2), time.time_ns()))

        loop = FixedRateLoop(rate_hz, publish, wait="sleep_spin", name="bench_publisher")
        loop.start()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and loop.running:
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):  # stopped by the parent (SIGTERM)
            pass
        loop.stop()
        node.destroy_node()
    finally:
        rclpy.shutdown()
    return 0


class Publisher:
    def __init__(self, rate_hz: float, seconds: float, domain_id: int) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--publish", str(rate_hz), "--seconds", str(seconds)],
            env=ros_env(domain_id),
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)


# --- part 1: mechanisms ----------------------------------------------------------------------------


def measure_mechanism(mechanism: str, rate_hz: float, seconds: float, traffic: bool) -> dict[str, Any]:
    """One mechanism in a node-shaped process; rclpy must be initialised on the benchmark domain."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    from mpo_ros.ros.messages import SENSOR_QOS

    node = rclpy.create_node(f"bench_{mechanism}")
    received = [0]

    def on_joint_state(msg: JointState) -> None:
        # What the policy node's callback does: read the arrays out of the message.
        np.asarray(msg.position)
        np.asarray(msg.velocity)
        received[0] += 1

    node.create_subscription(JointState, "/joint_states", on_joint_state, SENSOR_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    ticks = round(seconds * rate_hz)
    stats = LoopStats(1.0 / rate_hz, window=ticks + 10)
    if traffic:  # let discovery finish and messages flow before timing
        warm = time.monotonic() + 1.5
        while time.monotonic() < warm:
            executor.spin_once(timeout_sec=0.05)
    received[0] = 0
    cpu_start, wall_start = time.process_time(), time.monotonic()
    if mechanism == "timer":
        done = threading.Event()

        def on_timer() -> None:
            stats.record(time.monotonic_ns())
            if stats.count >= ticks:
                done.set()

        node.create_timer(1.0 / rate_hz, on_timer)
        while not done.is_set():
            executor.spin_once(timeout_sec=0.1)
        summary = stats.summary()
    elif mechanism.startswith("single_thread"):
        loop = FixedRateLoop(
            rate_hz,
            lambda: None,
            wait="sleep_spin",
            stats_window=ticks + 10,
            idle=lambda budget: executor.spin_once(timeout_sec=budget),
            priority=RT_PRIORITY if mechanism.endswith("_rt") else 0,
        )
        summary = loop.run_for(seconds)
        if loop.priority:  # this is the main thread: back to normal scheduling
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    else:
        wait = "sleep" if mechanism == "thread_sleep" else "sleep_spin"
        priority = RT_PRIORITY if mechanism.endswith("_rt") else 0
        loop = FixedRateLoop(rate_hz, lambda: None, wait=wait, stats_window=ticks + 10, priority=priority)
        loop.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        loop.stop()
        summary = loop.stats.summary()
    cpu = (time.process_time() - cpu_start) / (time.monotonic() - wall_start)
    if mechanism.endswith("_rt") and loop.priority_error:
        print(f"  {mechanism}: {loop.priority_error}", flush=True)
    executor.shutdown()
    node.destroy_node()
    return {**micro(summary), "cpu_cores_used": cpu, "joint_states_received": received[0]}


def part1(args: argparse.Namespace, domain_id: int) -> dict[str, Any]:
    import rclpy

    os.environ.update(ros_env(domain_id))
    rclpy.init(domain_id=domain_id)
    results: dict[str, Any] = {}
    try:
        for rate in args.rates:
            for ci, condition in enumerate(args.conditions):
                publisher = (
                    Publisher(rate, (args.seconds + 3) * len(MECHANISMS) + 10, domain_id)
                    if condition == "traffic"
                    else None
                )
                try:
                    shift = ci % len(MECHANISMS)
                    order = MECHANISMS[shift:] + MECHANISMS[:shift]
                    for mechanism in order:
                        figures = measure_mechanism(mechanism, rate, args.seconds, condition == "traffic")
                        results.setdefault(f"{rate:g}Hz", {}).setdefault(condition, {})[mechanism] = figures
                        print(
                            f"{rate:6g} Hz {condition:8s} {mechanism:18s} rate {figures['rate_hz']:9.3f} Hz "
                            f"jitter p50 {figures['jitter_p50_us']:7.1f} p99 {figures['jitter_p99_us']:8.1f} "
                            f"max {figures['jitter_max_us']:8.1f} us  cpu {figures['cpu_cores_used']:.2f}",
                            flush=True,
                        )
                finally:
                    if publisher is not None:
                        publisher.stop()
    finally:
        rclpy.shutdown()
    for per_rate in results.values():
        for per_condition in per_rate.values():
            base = per_condition.get("timer")
            if base:
                per_condition["p99_jitter_ratio_vs_timer"] = {
                    m: per_condition[m]["jitter_p99_us"] / base["jitter_p99_us"]
                    for m in MECHANISMS
                    if m in per_condition
                }
    return results


# --- part 2: the policy node -----------------------------------------------------------------------


def bench_policy(tmp: Path) -> Path:
    """The shipped arm2 policy if present, else the project's policy architecture exported for arm2."""
    shipped = ROOT / "models" / "arm2_reach.onnx"
    if shipped.is_file():
        return shipped
    import torch

    from mpo_ros.contract.observation import observation_size
    from mpo_ros.contract.spec import load_spec
    from mpo_ros.mpo.networks import GaussianPolicy, ObservationNormalizer
    from mpo_ros.mpo.policy import DeterministicPolicy
    from mpo_ros.training.export import export_module

    torch.set_num_threads(1)
    spec = load_spec("arm2")
    obs_dim = observation_size(spec)
    torch.manual_seed(0)
    policy = GaussianPolicy(obs_dim, spec.action_dim, hidden=(256, 256), torso="layernorm")
    for parameter in policy.parameters():  # non-trivial weights: the output moves with the input
        torch.nn.init.normal_(parameter, std=0.1)
    module = DeterministicPolicy(policy, ObservationNormalizer(obs_dim)).eval().requires_grad_(False)
    path = tmp / "arm2_mlp.onnx"
    export_module(module, obs_dim, spec.action_dim, path, robot_spec=spec, provenance={"note": "benchmark"})
    return path


def measure_node(policy: Path, variant: str, rate_hz: float, seconds: float, tmp: Path) -> dict[str, Any]:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PointStamped
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import SetBool

    domain_id = free_domain_id(salt=int(rate_hz) + len(variant))
    loop = variant.removesuffix("_rt")
    priority = str(RT_PRIORITY) if variant.endswith("_rt") else "0"
    node_proc = NodeProcess(
        "serve",
        ["--policy", str(policy), "--rate-hz", str(rate_hz), "--loop", loop, "--realtime-priority", priority],
        tmp / f"policy_{variant}_{rate_hz:g}.log",
        domain_id,
    )
    publisher = Publisher(rate_hz, seconds + 30, domain_id)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    last: dict[str, str] = {}
    try:
        probe = rclpy.create_node("bench_probe", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(probe)

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.startswith("mpo_policy"):
                    last.clear()
                    last.update({kv.key: kv.value for kv in status.values})

        probe.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        goal_pub = probe.create_publisher(PointStamped, "/goal", 10)
        client = probe.create_client(SetBool, "/mpo_policy/enable")
        if not client.wait_for_service(timeout_sec=60):
            raise RuntimeError(f"policy node did not come up: {node_proc.log()[-1500:]}")
        enabled = False
        deadline = time.monotonic() + 30
        while not enabled and time.monotonic() < deadline:
            goal = PointStamped()
            goal.point.x, goal.point.y = 0.3, 0.1
            goal_pub.publish(goal)
            future = client.call_async(SetBool.Request(data=True))
            while not future.done():
                executor.spin_once(timeout_sec=0.05)
            enabled = future.result().success
            executor.spin_once(timeout_sec=0.2)
        if not enabled:
            raise RuntimeError("could not enable the policy node")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            goal_pub.publish(goal)
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        probe.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        publisher.stop()
        node_proc.stop()
    keys = (
        "safety_state",
        "rate_achieved_hz",
        "period_jitter_p50_us",
        "period_jitter_p99_us",
        "period_jitter_max_us",
        "overruns",
        "inference_latency_p50_us",
        "inference_latency_p99_us",
        "policy_step_p50_us",
        "policy_step_p99_us",
        "policy_commands",
    )
    return {k: (last.get(k) if k == "safety_state" else float(last.get(k, "nan"))) for k in keys}


def part2(args: argparse.Namespace) -> dict[str, Any]:
    import rclpy  # noqa: F401  (fail early if missing)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        policy = bench_policy(tmp)
        results["policy"] = policy.name
        for rate in args.node_rates:
            for loop in args.node_loops:
                figures = measure_node(policy, loop, rate, args.seconds, tmp)
                results.setdefault(f"{rate:g}Hz", {})[loop] = figures
                print(
                    f"policy node {rate:6g} Hz {loop:7s} {figures['safety_state']} rate "
                    f"{figures['rate_achieved_hz']:.3f} jitter p50 {figures['period_jitter_p50_us']:.1f} "
                    f"p99 {figures['period_jitter_p99_us']:.1f} max {figures['period_jitter_max_us']:.1f} us; "
                    f"step p50 {figures['policy_step_p50_us']:.1f} p99 {figures['policy_step_p99_us']:.1f} us",
                    flush=True,
                )
    return results


def summarize(result: dict[str, Any]) -> list[str]:
    """One line per rate and condition: p99 jitter of each mechanism, then the node's figures."""
    lines = []
    for rate, per_rate in result.get("mechanisms", {}).items():
        for condition, per_condition in per_rate.items():
            figures = ", ".join(
                f"{m} {v['jitter_p99_us']:.0f}"
                for m, v in per_condition.items()
                if isinstance(v, dict) and "jitter_p99_us" in v
            )
            lines.append(f"{rate} {condition}: p99 period jitter (us) {figures}")
    node = result.get("policy_node", {})
    for rate, per_rate in node.items():
        if not isinstance(per_rate, dict):
            continue
        for loop, f in per_rate.items():
            nominal = float(rate.removesuffix("Hz"))
            lines.append(
                f"policy node {rate} loop={loop}: rate {f['rate_achieved_hz']:.2f} Hz "
                f"({100 * (f['rate_achieved_hz'] / nominal - 1):+.2f} %), jitter p50/p99/max "
                f"{f['period_jitter_p50_us']:.1f}/{f['period_jitter_p99_us']:.1f}/{f['period_jitter_max_us']:.0f} us, "
                f"policy step p50/p99 {f['policy_step_p50_us']:.0f}/{f['policy_step_p99_us']:.0f} us"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per mechanism, rate and condition")
    parser.add_argument("--rates", type=float, nargs="*", default=[100.0, 500.0, 1000.0])
    parser.add_argument("--conditions", nargs="*", default=["idle", "traffic"], choices=["idle", "traffic"])
    parser.add_argument("--node-rates", type=float, nargs="*", default=[500.0, 1000.0])
    parser.add_argument(
        "--node-loops", nargs="*", default=["thread", "single_thread", "single_thread_rt", "timer"]
    )
    parser.add_argument("--skip-node", action="store_true", help="only part 1")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--publish", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--summarize", default=None, help="only rewrite the summary of this result JSON")
    args = parser.parse_args()
    if args.publish is not None:
        return publisher_main(args.publish, args.seconds)
    if args.summarize:
        path = Path(args.summarize)
        result = json.loads(path.read_text())
        result["summary"] = summarize(result)
        path.write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
        print("\n".join(result["summary"]))
        return 0
    result = header("control loop rate and period jitter: mechanisms (part 1) and the policy node (part 2)")
    result["seconds_per_run"] = args.seconds
    result["mechanisms"] = part1(args, free_domain_id(salt=3))
    if not args.skip_node:
        result["policy_node"] = part2(args)
    result["machine"]["load_average_at_end"] = os.getloadavg()
    result["summary"] = summarize(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
