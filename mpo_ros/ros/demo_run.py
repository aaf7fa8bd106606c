"""A short end-to-end run over ROS 2: simulated robot + policy node, enabled, scored, torn down.

``python -m mpo_ros.ros.demo_run --policy models/arm2_reach.onnx --seconds 10`` (and `make demo`,
through :func:`run_demo`) starts `mpo-ros sim-robot` and `mpo-ros serve` as child processes on a
private ROS domain, enables the policy through /mpo_policy/enable, listens to /diagnostics, and after
`seconds` stops both (SIGINT, so the sim node writes its reach summary) and prints: achieved control
rate, period jitter, inference latency, and how many of the goals set after enabling were reached.
Every child process is stopped in a ``finally``, also when the run fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mpo_ros.ros.processes import NodeProcess, free_domain_id

__all__ = ["main", "run_demo"]


class _Listener:
    """Enable client and /diagnostics + /joint_states listener in this process (own rclpy context)."""

    def __init__(self, domain_id: int, command_topic: str = "/forward_position_controller/commands") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import SetBool

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("mpo_demo_run", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.diagnostics: dict[str, str] = {}
        self.first_joint_state: float | None = None
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.node.create_subscription(
            JointState, "/joint_states", self._on_joint_state, qos_profile_sensor_data
        )
        # The commands the policy node published (after enable): judged with contract.smoothness.
        self.commands: list[list[float]] = []
        self.record_commands = False
        self.node.create_subscription(Float64MultiArray, command_topic, self._on_command, 10)
        self._SetBool = SetBool
        self.enable_client = self.node.create_client(SetBool, "/mpo_policy/enable")

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.startswith("mpo_policy"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def _on_command(self, msg: Any) -> None:
        if self.record_commands:
            self.commands.append(list(msg.data))

    def _on_joint_state(self, msg: Any) -> None:
        if self.first_joint_state is None:
            self.first_joint_state = time.monotonic()

    def spin_until(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return bool(predicate())

    def enable(self, timeout: float = 20.0) -> tuple[bool, str]:
        if not self.enable_client.wait_for_service(timeout_sec=timeout):
            return False, "/mpo_policy/enable did not appear"
        future = self.enable_client.call_async(self._SetBool.Request(data=True))
        if not self.spin_until(future.done, timeout):
            return False, "/mpo_policy/enable did not answer"
        result = future.result()
        return result.success, result.message

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)


def run_demo(
    policy: str | Path,
    seconds: float = 10.0,
    robot: str = "arm2",
    goal_period: float = 3.0,
    randomize: str = "none",
    workdir: str | Path | None = None,
    verbose: bool = True,
    policy_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run sim + policy for `seconds` after enabling; return (and print) the figures.

    Returns a dict with ``enabled``, ``diagnostics`` (the policy node's last /diagnostics values),
    ``reach`` (the sim node's summary restricted to goals set after enabling: ``goals``,
    ``goals_reached``, ``per_goal``) and the log paths. Raises RuntimeError when a node fails to start.
    `policy_args`: extra `mpo-ros serve` flags (benchmarks compare settings with them).
    """
    workdir = Path(workdir or tempfile.mkdtemp(prefix="mpo_demo_"))
    workdir.mkdir(parents=True, exist_ok=True)
    domain_id = free_domain_id(salt=17)
    result_file = workdir / "sim_result.json"
    processes: list[NodeProcess] = []
    listener = None
    try:
        policy_proc = NodeProcess(
            "serve", ["--policy", str(policy), *policy_args], workdir / "policy.log", domain_id
        )
        processes.append(policy_proc)
        sim_args = ["--robot", robot, "--goal-period", str(goal_period), "--randomize", randomize]
        sim_proc = NodeProcess(
            "sim-robot", [*sim_args, "--result-file", str(result_file)], workdir / "sim.log", domain_id
        )
        processes.append(sim_proc)
        listener = _Listener(domain_id)
        if not listener.spin_until(lambda: listener.first_joint_state is not None, 60):
            raise RuntimeError(f"the sim node published no /joint_states; see {sim_proc.log_path}")
        if not policy_proc.wait_for_log("DISABLED until", 60):
            raise RuntimeError(f"the policy node did not start:\n{policy_proc.log()[-2000:]}")
        listener.spin_until(lambda: listener.diagnostics.get("safety_state") == "disabled", 10)
        enabled, message = listener.enable()
        enabled_at = time.time()
        listener.record_commands = True
        if verbose:
            print(f"enable: {message}")
        listener.spin_until(lambda: False, seconds)
        diagnostics = dict(listener.diagnostics)
        commands = list(listener.commands)
    finally:
        if listener is not None:
            listener.close()
        for proc in reversed(processes):
            proc.stop()
    summary = json.loads(result_file.read_text()) if result_file.is_file() else {}
    goals = [g for g in summary.get("reach", {}).get("per_goal", []) if g["start_wall_time"] >= enabled_at]
    # The goal being pursued when the run stopped got less than a full period: judged only if reached.
    finished = goals[:-1] + [g for g in goals[-1:] if g["reached"]]
    result = {
        "policy": str(policy),
        "enabled": enabled,
        "seconds": seconds,
        "diagnostics": diagnostics,
        "reach": {
            "goals": len(finished),
            "goals_reached": sum(g["reached"] for g in finished),
            "success_threshold": summary.get("reach", {}).get("success_threshold"),
            "per_goal": finished,
        },
        "sim_loop": summary.get("loop", {}),
        "commands": _command_figures(policy, commands),
        "logs": {"policy": str(workdir / "policy.log"), "sim": str(workdir / "sim.log")},
    }
    if verbose:
        print(format_result(result))
    return result


def _command_figures(policy: str | Path, commands: list[list[float]]) -> dict[str, Any]:
    """contract.smoothness figures of the commands received over ROS 2 (as `mpo-ros eval` reports them)."""
    import numpy as np

    from mpo_ros.contract.resolve import read_policy_contract
    from mpo_ros.contract.smoothness import command_smoothness

    if len(commands) < 3:
        return {"received": len(commands)}
    spec = read_policy_contract(policy)
    figures = command_smoothness(np.array(commands), spec.joint_arrays.max_delta, spec.control_rate_hz)
    return {"received": len(commands), **figures}


def format_result(result: dict[str, Any]) -> str:
    d = result["diagnostics"]
    reach = result["reach"]
    lines = [
        f"policy node: {d.get('safety_state', '?')}, {d.get('rate_achieved_hz', '?')} Hz achieved "
        f"(target {d.get('rate_target_hz', '?')} Hz), period jitter p50 {d.get('period_jitter_p50_us', '?')} us "
        f"/ p99 {d.get('period_jitter_p99_us', '?')} us / max {d.get('period_jitter_max_us', '?')} us",
        f"inference latency p50 {d.get('inference_latency_p50_us', '?')} us / p99 "
        f"{d.get('inference_latency_p99_us', '?')} us; rejected inputs {d.get('rejected_inputs', '?')}",
        f"reach: {reach['goals_reached']}/{reach['goals']} goals reached within "
        f"{reach['success_threshold']} m",
    ]
    c = result.get("commands", {})
    if "command_rate" in c:
        lines.append(
            f"commands received over ROS 2: {c['received']}; |delta command| {c['command_rate']:.4f} rad/step, "
            f"{100 * c['slew_limited_fraction']:.1f} % at the slew limit, "
            f"{100 * c['high_frequency_share']:.1f} % of the energy above 5 Hz"
        )
    for g in reach["per_goal"]:
        when = f"in {g['time_to_reach']:.2f} s" if g["reached"] else "not reached"
        lines.append(
            f"  goal ({g['goal'][0]:+.3f}, {g['goal'][1]:+.3f}): {when}, final distance {g['final_distance']:.4f} m"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, help="ONNX policy with a robot contract")
    parser.add_argument("--seconds", type=float, default=10.0, help="run time after enabling")
    parser.add_argument("--robot", default="arm2")
    parser.add_argument("--goal-period", type=float, default=3.0)
    parser.add_argument("--randomize", default="none", choices=("none", "train", "heldout"))
    parser.add_argument("--workdir", default=None, help="where logs and the sim summary go")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run_demo(
        args.policy, args.seconds, args.robot, args.goal_period, args.randomize, args.workdir, not args.json
    )
    if args.json:
        print(json.dumps(result, indent=1))
    return 0 if result["enabled"] and result["reach"]["goals"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
