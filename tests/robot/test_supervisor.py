"""The policy node's safety rules, exercised without ROS on a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from mpo_ros.contract.spec import load_spec
from mpo_ros.errors import ConfigError
from mpo_ros.robot.supervisor import Action, SafetyState, Supervisor

MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += int(ms * MS)


@pytest.fixture()
def spec():
    return load_spec("arm2")


def make(spec, **kwargs):
    clock = Clock()
    return Supervisor(spec, state_timeout=0.1, clock_ns=clock, **kwargs), clock


def feed(sup, positions=(0.1, -0.2), velocities=(0.0, 0.0), names=("shoulder", "elbow")):
    return sup.accept_joint_state(list(names), list(positions), list(velocities))


def test_starts_silent_then_holds_first_measured_position(spec) -> None:
    sup, _ = make(spec)
    first = sup.decide()
    assert first.action is Action.NONE and first.state is SafetyState.WAITING_FOR_STATE
    assert feed(sup, positions=(0.3, 0.4))
    decision = sup.decide()
    assert decision.action is Action.HOLD and decision.state is SafetyState.DISABLED
    np.testing.assert_allclose(decision.command, [0.3, 0.4])
    # The hold follows the measured position (an operator may jog the arm while disabled).
    feed(sup, positions=(0.5, 0.6))
    np.testing.assert_allclose(sup.decide().command, [0.5, 0.6])


def test_on_disabled_stop_publishes_nothing(spec) -> None:
    sup, _ = make(spec, on_disabled="stop")
    feed(sup)
    decision = sup.decide()
    assert decision.action is Action.NONE and decision.state is SafetyState.DISABLED


def test_joints_matched_by_name_in_any_order_extra_ignored(spec) -> None:
    sup, _ = make(spec)
    assert sup.accept_joint_state(["gripper", "elbow", "shoulder"], [9.0, 0.2, 0.1], [0.0, 2.0, 1.0])
    sup.accept_goal([0.3, 0.0])
    assert sup.enable(True)[0]
    decision = sup.decide()
    assert decision.action is Action.POLICY
    np.testing.assert_allclose(decision.positions, [0.1, 0.2])
    np.testing.assert_allclose(decision.velocities, [1.0, 2.0])


def test_missing_joint_before_valid_data_is_a_fault_reported_once(spec) -> None:
    sup, _ = make(spec)
    for _ in range(3):
        assert not sup.accept_joint_state(["shoulder", "wrist"], [0.0, 0.0], [0.0, 0.0])
    events = sup.pop_events()
    assert len(events) == 1
    level, message = events[0]
    assert level == "error" and "elbow" in message and "wrist" in message
    assert sup.counters.rejected_missing_joints == 3
    decision = sup.decide()
    assert decision.action is Action.NONE and decision.state is SafetyState.FAULT
    ok, message = sup.enable(True)
    assert not ok and "elbow" in message
    assert sup.decide().action is Action.NONE


def test_non_finite_input_holds_then_resumes(spec) -> None:
    sup, _ = make(spec)
    feed(sup)
    sup.accept_goal([0.3, 0.0])
    sup.enable(True)
    assert sup.decide().action is Action.POLICY
    assert not feed(sup, positions=(np.nan, 0.0))
    decision = sup.decide()
    assert decision.action is Action.HOLD and decision.command is None  # repeat the last command
    assert sup.counters.rejected_non_finite == 1
    assert feed(sup)
    assert sup.decide().action is Action.POLICY


def test_bad_goal_is_rejected_and_no_goal_holds(spec) -> None:
    sup, _ = make(spec)
    feed(sup)
    sup.enable(True)
    assert sup.decide().action is Action.HOLD  # enabled but no goal yet
    assert not sup.accept_goal([np.inf, 0.0])
    assert not sup.accept_goal([0.1, 0.2, 0.3])
    assert not sup.accept_goal([1e39, 0.0])  # finite, but inf as the policy's float32
    assert not sup.accept_goal([0.0, 0.0])  # inside the base, outside the goal region
    assert sup.accept_goal([0.2 - 0.04, -0.25 - 0.04])  # inside the 0.05 m margin
    assert sup.counters.rejected_goals == 4
    assert sup.accept_goal([0.3, 0.1])
    assert sup.decide().action is Action.POLICY


@pytest.mark.parametrize("on_stale", ["hold", "stop"])
def test_watchdog_trips_and_recovers(spec, on_stale: str) -> None:
    sup, clock = make(spec, on_stale=on_stale)
    feed(sup)
    sup.accept_goal([0.3, 0.0])
    sup.enable(True)
    clock.advance(99)
    assert sup.decide().action is Action.POLICY
    clock.advance(2)
    stale = sup.decide()
    assert stale.state is SafetyState.STALE
    if on_stale == "hold":
        assert stale.action is Action.HOLD and stale.command is None  # repeat the last command
    else:
        assert stale.action is Action.NONE
    assert sup.counters.stale_events == 1
    sup.decide()
    assert sup.counters.stale_events == 1  # one event per outage, not per tick
    assert any(level == "error" and "watchdog" in m for level, m in sup.pop_events())
    feed(sup)
    recovered = sup.decide()
    assert recovered.action is Action.POLICY and sup.enabled
    assert any("recovered" in m for _, m in sup.pop_events())


def test_enable_needs_fresh_data_and_disable_latches_position(spec) -> None:
    sup, clock = make(spec)
    assert not sup.enable(True)[0]
    feed(sup, positions=(0.1, 0.1))
    clock.advance(150)
    ok, message = sup.enable(True)
    assert not ok and "old" in message
    feed(sup, positions=(0.2, 0.2))
    assert sup.enable(True)[0]
    feed(sup, positions=(0.4, -0.3))
    assert sup.enable(False)[0]
    decision = sup.decide()
    assert decision.state is SafetyState.DISABLED
    np.testing.assert_allclose(decision.command, [0.4, -0.3])


def test_rejects_bad_configuration(spec) -> None:
    with pytest.raises(ConfigError, match="on_stale"):
        Supervisor(spec, on_stale="freeze")
    with pytest.raises(ConfigError, match="state_timeout"):
        Supervisor(spec, state_timeout=0.0)
    with pytest.raises(ConfigError, match="on_disabled"):
        Supervisor(spec, on_disabled="coast")
    with pytest.raises(ConfigError, match="reenable_after_outage"):
        Supervisor(spec, state_timeout=0.5, reenable_after_outage=0.2)


def test_mismatched_array_lengths_are_malformed_not_fault(spec) -> None:
    sup, _ = make(spec)
    feed(sup)
    assert not sup.accept_joint_state(["shoulder", "elbow"], [0.0], [0.0, 0.0])
    assert sup.counters.rejected_malformed == 1
    assert sup.decide().state is SafetyState.DISABLED


# --- the policy node's control step (supervisor + runtime), still without ROS ---------------------


@pytest.fixture(scope="module")
def ik_policy(tmp_path_factory: pytest.TempPathFactory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros"))
    from reach_policy import export_reach_policy

    from mpo_ros.robot.onnx_policy import OnnxPolicy

    path = export_reach_policy(load_spec("arm2"), tmp_path_factory.mktemp("controller") / "ik.onnx")
    return OnnxPolicy(path, require_contract=True)


def test_controller_slews_every_command_and_hands_over_without_jumps(ik_policy) -> None:
    from mpo_ros.robot.controller import PolicyController

    spec = ik_policy.spec
    max_delta = np.array([j.max_delta for j in spec.joints])
    sup, _ = make(spec)
    controller = PolicyController(ik_policy, sup)
    assert controller.tick() == (None, SafetyState.WAITING_FOR_STATE)
    feed(sup, positions=(0.5, -0.5))
    command, state = controller.tick()
    assert state is SafetyState.DISABLED
    np.testing.assert_allclose(command, [0.5, -0.5])
    sup.accept_goal([0.2, -0.25])  # IK target far from the held pose
    assert sup.enable(True)[0]
    # 60 ticks: arm2's 3 Hz low-pass closes (1 - alpha)^60 ~ 1e-10 of the way to the IK target.
    commands = [controller.tick()[0] for _ in range(60)]
    steps = np.abs(np.diff(np.array([[0.5, -0.5], *commands]), axis=0))
    assert (steps <= max_delta + 1e-12).all(), "policy commands obey max_delta"
    assert (steps.max(axis=0) > 0.5 * max_delta).all(), "and actually move"
    assert np.abs(commands[-1] - commands[-2]).max() < 1e-6, "converged on the IK target"
    assert sup.counters.policy_commands == 60
    sup.enable(False)
    held = [controller.tick()[0] for _ in range(30)]
    steps = np.abs(np.diff(np.array([commands[-1], *held]), axis=0))
    assert (steps <= max_delta + 1e-12).all(), "the e-stop hold is slewed too"
    np.testing.assert_allclose(held[-1], [0.5, -0.5])  # the position measured at disable time


def test_controller_holds_when_the_policy_step_is_rejected(ik_policy) -> None:
    from mpo_ros.robot.controller import PolicyController

    sup, _ = make(ik_policy.spec)
    controller = PolicyController(ik_policy, sup)
    feed(sup, positions=(0.1, 0.2))
    sup.accept_goal([0.3, 0.0])
    sup.enable(True)
    first, _ = controller.tick()
    # accept_goal refuses non-finite goals, so slip one in behind the supervisor: the runtime's own
    # gate (defence in depth) must still turn it into a hold.
    sup._s.goal = np.array([np.nan, 0.0])
    held, state = controller.tick()
    assert state is SafetyState.ENABLED
    np.testing.assert_allclose(held, first)
    assert controller.rejected_policy_steps == 1


def test_duplicated_names_are_rejected_and_counted(spec) -> None:
    sup, _ = make(spec)
    assert not sup.accept_joint_state(["shoulder", "elbow", "shoulder"], [-0.5, 1.2, 1.9], [0.0] * 3)
    assert sup.counters.rejected_duplicate_names == 1
    assert sup.decide().action is Action.NONE  # no valid sample: nothing to hold
    assert any("duplicated" in m and "shoulder" in m for _, m in sup.pop_events())


def test_positions_beyond_limits_fault_disable_and_need_a_new_enable(spec) -> None:
    sup, _ = make(spec)
    feed(sup)
    sup.accept_goal([0.3, 0.0])
    assert sup.enable(True)[0]
    assert not feed(sup, positions=(2.2 + 0.11, 0.0))  # shoulder limit 2.2, tolerance 0.1
    assert sup.decide().state is SafetyState.FAULT and not sup.enabled
    ok, message = sup.enable(True)
    assert not ok and "shoulder" in message
    assert feed(sup, positions=(2.2 + 0.09, 0.0))  # within the tolerance
    assert sup.decide().state is SafetyState.DISABLED
    assert sup.enable(True)[0]


def test_an_outage_longer_than_reenable_after_outage_disables(spec) -> None:
    sup, clock = make(spec, reenable_after_outage=0.5)
    feed(sup)
    sup.accept_goal([0.3, 0.0])
    sup.enable(True)
    clock.advance(400)
    assert sup.decide().state is SafetyState.STALE and sup.enabled  # short outage: still enabled
    feed(sup)
    assert sup.decide().action is Action.POLICY
    clock.advance(600)
    sup.decide()
    assert not sup.enabled and sup.counters.outage_disables == 1
    feed(sup)
    assert sup.decide().state is SafetyState.DISABLED


def test_old_header_stamps_are_rejected_only_when_asked(spec) -> None:
    sup, _ = make(spec)
    assert sup.accept_joint_state(["shoulder", "elbow"], [0.0, 0.0], [0.0, 0.0], stamp_age=5.0)
    sup.update_settings(stamp_timeout=0.5)
    assert not sup.accept_joint_state(["shoulder", "elbow"], [0.0, 0.0], [0.0, 0.0], stamp_age=0.6)
    assert sup.accept_joint_state(["shoulder", "elbow"], [0.0, 0.0], [0.0, 0.0], stamp_age=0.4)
    assert sup.counters.rejected_old_stamps == 1


def test_external_fault_blocks_and_clearing_needs_a_new_enable(spec) -> None:
    sup, _ = make(spec)
    feed(sup)
    sup.accept_goal([0.3, 0.0])
    sup.enable(True)
    sup.set_external_fault("command_topic", "another publisher on /cmd: [/other]")
    assert sup.decide().action is Action.NONE
    assert "another publisher" in sup.enable(True)[1]
    sup.set_external_fault("command_topic", "")
    assert sup.decide().state is SafetyState.DISABLED


def test_repeating_faults_are_logged_first_then_summarised(spec) -> None:
    sup, clock = make(spec, fault_log_period=1.0)
    feed(sup)
    lines = []
    for _ in range(250):  # 2.5 s of NaN in every other message at 100 Hz
        feed(sup, positions=(np.nan, 0.0))
        clock.advance(5)
        feed(sup)
        clock.advance(5)
        lines += [m for _, m in sup.pop_events() if "non-finite" in m]
    clock.advance(1000)
    lines += [m for _, m in sup.pop_events() if "non-finite" in m]
    assert lines[0] == "rejected /joint_states with non-finite values; holding position"
    # Occurrences at 0, 10, ..., 2490 ms: the first at once; windows close at the pops at 1000 ms
    # (10..990: 99), 2000 ms (1000..1990: 100) and 3490 ms (2000..2490: 50); every one is counted.
    assert [line.split("(")[1] for line in lines[1:]] == [
        "99 more in the last 1.0 s)",
        "100 more in the last 1.0 s)",
        "50 more in the last 1.5 s)",
    ]


def test_controller_disabled_hold_follows_the_pose_and_enable_starts_from_it(ik_policy) -> None:
    from mpo_ros.robot.controller import PolicyController

    spec = ik_policy.spec
    max_delta = np.array([j.max_delta for j in spec.joints])
    sup, _ = make(spec)
    controller = PolicyController(ik_policy, sup)
    feed(sup, positions=(-0.5, 1.2))
    np.testing.assert_allclose(controller.tick()[0], [-0.5, 1.2])
    feed(sup, positions=(0.4, 0.6))  # jogged by another controller while disabled
    held = [controller.tick()[0] for _ in range(10)]
    np.testing.assert_allclose(held[-1], [0.4, 0.6])  # slewed there at max_delta per tick
    assert (np.abs(np.diff(np.array([[-0.5, 1.2], *held]), axis=0)) <= max_delta + 1e-12).all()
    sup.accept_goal([0.2, -0.25])
    assert sup.enable(True)[0]
    first, state = controller.tick()
    assert state is SafetyState.ENABLED
    assert (np.abs(first - [0.4, 0.6]) <= max_delta + 1e-12).all(), "enable starts from the measured pose"
    np.testing.assert_allclose(controller.last_command, first)  # one owner: the safety filter


def test_a_goal_in_another_frame_is_rejected(spec) -> None:
    """Goals are positions in the contract's task.goal_frame (base_link); a goal stamped in another frame
    (a UR5e user sending `base` or `world` coordinates) is refused, never chased in the wrong frame."""
    sup, _ = make(spec)
    feed(sup)
    assert not sup.accept_goal([0.3, 0.1], "world")
    assert sup.counters.rejected_goals == 1
    assert sup.accept_goal([0.3, 0.1], "base_link") and sup.accept_goal([0.3, 0.1], "")
    assert sup.counters.rejected_goals == 1
