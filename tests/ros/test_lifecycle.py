"""The policy node as a managed node, driven by an independent client through lifecycle_msgs.

The client is a plain rclpy node that calls /mpo_policy/change_state and /mpo_policy/get_state, as
a lifecycle manager (nav2_lifecycle_manager, the ros2 lifecycle CLI) does. With on_disabled=stop the
node publishes exactly while it is active and enabled.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from ros_helpers import NodeProcess, Probe

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

NAMES = ["shoulder", "elbow"]


class LifecycleClient:
    """change_state / get_state of one node, over the probe's rclpy node."""

    def __init__(self, probe: Probe, node: str = "mpo_policy") -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self.probe = probe
        self._change = probe.node.create_client(ChangeState, f"/{node}/change_state")
        self._get = probe.node.create_client(GetState, f"/{node}/get_state")
        self._ChangeState, self._GetState = ChangeState, GetState

    def _call(self, client: Any, request: Any) -> Any:
        assert client.wait_for_service(timeout_sec=20), f"{client.srv_name} not available"
        future = client.call_async(request)
        assert self.probe.wait_until(future.done, 20), f"{client.srv_name} did not answer"
        return future.result()

    def state(self) -> str:
        return self._call(self._get, self._GetState.Request()).current_state.label

    def change(self, transition_id: int) -> bool:
        from lifecycle_msgs.msg import Transition

        request = self._ChangeState.Request(transition=Transition(id=transition_id))
        return bool(self._call(self._change, request).success)


def commands_while(probe: Probe, seconds: float) -> int:
    """Commands received while the probe plays a still robot for `seconds`."""
    start = time.monotonic()
    probe.stream_joint_states(seconds, NAMES, [0.4, 0.6], [0.0, 0.0])
    return len(probe.commands_since(start + 0.2))


def test_commands_flow_only_while_active_and_enabled(tmp_path: Path, ik_policy: Path, probe: Probe) -> None:
    from lifecycle_msgs.msg import Transition

    node = NodeProcess(
        "serve",
        [
            "--policy",
            str(ik_policy),
            "--autostart",
            "false",
            "--on-disabled",
            "stop",
            "--state-timeout",
            "0.5",
        ],
        tmp_path / "policy.log",
    )
    try:
        client = LifecycleClient(probe)
        assert client.state() == "unconfigured"
        assert commands_while(probe, 0.5) == 0

        assert client.change(Transition.TRANSITION_CONFIGURE)
        assert client.state() == "inactive"
        assert commands_while(probe, 0.5) == 0
        ok, message = probe.set_enabled(True)
        assert not ok and "activate" in message, message

        assert client.change(Transition.TRANSITION_ACTIVATE)
        assert client.state() == "active"
        probe.publish_goal(0.35, 0.1)
        assert commands_while(probe, 0.5) == 0, "active but not enabled: nothing (on_disabled=stop)"
        probe.publish_joint_state(NAMES, [0.4, 0.6], [0.0, 0.0])
        probe.spin_for(0.05)
        ok, message = probe.set_enabled(True)
        assert ok, message
        assert commands_while(probe, 0.6) > 15, "active and enabled: the policy commands"

        assert client.change(Transition.TRANSITION_DEACTIVATE)
        assert client.state() == "inactive"
        assert commands_while(probe, 0.5) == 0, "deactivated: nothing"

        assert client.change(Transition.TRANSITION_ACTIVATE)
        assert commands_while(probe, 0.5) == 0, "re-activated: disabled again until a new enable"
        probe.publish_joint_state(NAMES, [0.4, 0.6], [0.0, 0.0])
        probe.spin_for(0.05)
        assert probe.set_enabled(True)[0]
        assert commands_while(probe, 0.6) > 15

        assert client.change(Transition.TRANSITION_DEACTIVATE)
        assert client.change(Transition.TRANSITION_CLEANUP)
        assert client.state() == "unconfigured"
        assert commands_while(probe, 0.5) == 0
        assert probe.wait_until(lambda: probe.node.count_subscribers("/joint_states") == 1, 5), (
            "cleanup releases the subscriptions"
        )
        # Configure again after cleanup: everything was released, so nothing is left twice.
        assert client.change(Transition.TRANSITION_CONFIGURE)
        assert client.change(Transition.TRANSITION_ACTIVATE)
        # cleanup forgot the old goal with everything else; the new /goal subscription must match first
        assert probe.wait_until(lambda: probe.node.count_subscribers("/goal") == 1, 5)
        probe.publish_goal(0.35, 0.1)
        probe.stream_joint_states(0.3, NAMES, [0.4, 0.6], [0.0, 0.0])
        assert probe.set_enabled(True)[0]
        assert commands_while(probe, 0.6) > 15
        assert "fault" not in probe.latest_diagnostics().get("safety_state", ""), probe.latest_diagnostics()
        assert client.change(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert client.state() == "finalized"
        assert commands_while(probe, 0.5) == 0
    finally:
        code = node.stop()
    assert code == 0, node.log()
    assert "Traceback" not in node.log()


def test_a_failing_configure_goes_through_the_error_state(tmp_path: Path, probe: Probe) -> None:
    from lifecycle_msgs.msg import Transition

    node = NodeProcess(
        "serve",
        ["--policy", str(tmp_path / "missing.onnx"), "--autostart", "false", "--name-check-time", "0"],
        tmp_path / "policy.log",
    )
    try:
        client = LifecycleClient(probe)
        assert client.state() == "unconfigured"
        assert not client.change(Transition.TRANSITION_CONFIGURE)
        assert client.state() == "unconfigured", "the error handler released everything"
        assert node.proc.poll() is None, "a lifecycle-managed node stays up for the manager"
    finally:
        code = node.stop()
    assert code == 0
    log = node.log()
    assert "missing.onnx not found" in log and "Traceback" not in log, log


def test_enable_on_activate_and_hold_when_deactivated(tmp_path: Path, ik_policy: Path, probe: Probe) -> None:
    from lifecycle_msgs.msg import Transition

    node = NodeProcess(
        "serve",
        [
            "--policy",
            str(ik_policy),
            "--autostart",
            "false",
            "--enable-on-activate",
            "true",
            "--on-deactivate",
            "hold",
            "--state-timeout",
            "0.5",
        ],
        tmp_path / "policy.log",
    )
    try:
        client = LifecycleClient(probe)
        assert client.change(Transition.TRANSITION_CONFIGURE)
        assert client.change(Transition.TRANSITION_ACTIVATE)
        probe.publish_goal(0.35, 0.1)
        start = time.monotonic()
        probe.stream_joint_states(1.0, NAMES, [0.4, 0.6], [0.0, 0.0])
        moving = probe.commands_since(start)
        assert moving and abs(moving[-1] - [0.4, 0.6]).max() > 0.1, "enabled itself: the policy moves"
        assert "enable_on_activate: enabled" in node.log()
        assert client.change(Transition.TRANSITION_DEACTIVATE)
        start = time.monotonic()
        probe.stream_joint_states(1.0, NAMES, [0.4, 0.6], [0.0, 0.0])
        held = probe.commands_since(start + 0.3)
        assert len(held) > 20, "on_deactivate=hold keeps publishing"
        assert all(abs(c - [0.4, 0.6]).max() < 1e-9 for c in held), "holding the measured position"
        ok, message = probe.set_enabled(True)
        assert not ok and "inactive" in message, message
    finally:
        code = node.stop()
    assert code == 0, node.log()
