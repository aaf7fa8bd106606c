"""SIGINT and SIGTERM stop both nodes cleanly: exit status 0, no traceback, the recording finished.

Before (issue 12) about one stop in twenty exited 1 with an RCLError traceback (rclpy's signal
handler invalidated the context under a publishing loop), and `sim-robot` often ignored SIGINT after
`serve` and an enable client had run, leaving its recording without metadata.yaml.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from ros_helpers import NodeProcess, Probe

pytestmark = [pytest.mark.ros, pytest.mark.timeout(150)]


def stop_with(node: NodeProcess, signum: int, timeout: float = 10.0) -> int | None:
    node.proc.send_signal(signum)
    try:
        return node.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        node.stop()


def test_sim_and_policy_stop_cleanly_after_an_enabled_run(
    tmp_path: Path, ik_policy: Path, probe: Probe
) -> None:
    bag = tmp_path / "bag"
    sim = NodeProcess(
        "sim-robot", ["--robot", "arm2", "--goal-period", "1.0", "--record", str(bag)], tmp_path / "sim.log"
    )
    policy = NodeProcess("serve", ["--policy", str(ik_policy)], tmp_path / "policy.log")
    try:
        assert probe.wait_until(lambda: len(probe.commands) > 10, 40), policy.log() + sim.log()
        ok, message = probe.set_enabled(True)
        assert ok, message
        probe.spin_for(1.5)
        assert stop_with(sim, signal.SIGINT) == 0, sim.log()
        assert (bag / "metadata.yaml").is_file(), sim.log()
        assert stop_with(policy, signal.SIGTERM) == 0, policy.log()
    finally:
        sim.kill()
        policy.kill()
    for log in (sim.log(), policy.log()):
        assert "Traceback" not in log and "RCLError" not in log, log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_policy_node_stops_cleanly_while_commanding(
    tmp_path: Path, ik_policy: Path, probe: Probe, signum: int
) -> None:
    # loop thread: the loop publishes from its own thread, the path where the context raced the stop.
    policy = NodeProcess("serve", ["--policy", str(ik_policy), "--loop", "thread"], tmp_path / "policy.log")
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(probe.commands) < 20:
            probe.publish_joint_state(["shoulder", "elbow"], [0.1, 0.5], [0.0, 0.0])
            probe.spin_for(0.01)
        assert len(probe.commands) >= 20, policy.log()
        for _ in range(20):  # keep the node busy with callbacks while the signal arrives
            probe.publish_joint_state(["shoulder", "elbow"], [0.1, 0.5], [0.0, 0.0])
        assert stop_with(policy, signum) == 0, policy.log()
    finally:
        policy.kill()
    assert "Traceback" not in policy.log(), policy.log()
