"""The policy node's safety state machine, free of ROS so every transition is unit-tested.

The ROS node feeds it joint states, goals and enable requests, and asks it once per control tick
what to publish (`decide`). It answers with one of three things: run the policy on this sample, hold
a given position, or publish nothing. The rules, in priority order:

1. ``fault``: no /joint_states message so far has carried every contract joint. Nothing is
   published (a robot whose joints we cannot identify must not be commanded); the error is raised as
   an event once, with the joint names seen and expected.
2. ``waiting_for_state``: no valid joint state yet. Nothing is published: there is no position to hold.
3. ``stale``: the newest valid joint state is older than ``state_timeout`` (wall clock, measured at
   reception: clocks of two computers are never compared). ``on_stale="hold"`` repeats the last
   command sent; ``"stop"`` publishes nothing (the controller's own timeout takes over). Fresh data
   clears it without operator action; the enabled flag is kept.
4. ``disabled``: the node starts here, and returns here on ``enable(False)`` (the software e-stop).
   It holds the position measured when it entered this state, so the robot stays where it is.
5. ``enabled``: the policy runs, unless the newest joint state was non-finite (hold the last command
   until a finite one arrives) or no goal has been received yet (hold).

Invalid inputs are rejected and counted, never passed on. All methods are thread-safe: the node
calls them from its executor thread (callbacks) and its control thread (decide).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from mpo_ros.contract.observation import joint_array
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ConfigError, ContractError

__all__ = [
    "ON_STALE_CHOICES",
    "Action",
    "Counters",
    "Decision",
    "SafetyState",
    "Supervisor",
]

ON_STALE_CHOICES = ("hold", "stop")


class SafetyState(str, Enum):
    FAULT = "fault"
    WAITING_FOR_STATE = "waiting_for_state"
    STALE = "stale"
    DISABLED = "disabled"
    ENABLED = "enabled"


class Action(str, Enum):
    """What the node publishes this tick."""

    POLICY = "policy"  # run the policy on `positions/velocities/goal`, filter, publish
    HOLD = "hold"  # publish `command` (a position to hold)
    NONE = "none"  # publish nothing


@dataclass(frozen=True)
class Decision:
    action: Action
    state: SafetyState
    reason: str = ""
    command: np.ndarray | None = None
    positions: np.ndarray | None = None
    velocities: np.ndarray | None = None
    goal: np.ndarray | None = None
    # Age (s) of the joint state this decision is based on; NaN without one.
    observation_age: float = float("nan")


@dataclass
class Counters:
    """Running totals for /diagnostics."""

    joint_states: int = 0
    rejected_missing_joints: int = 0
    rejected_non_finite: int = 0
    rejected_malformed: int = 0
    rejected_goals: int = 0
    stale_events: int = 0
    policy_commands: int = 0
    hold_commands: int = 0
    silent_ticks: int = 0

    @property
    def rejected_inputs(self) -> int:
        return (
            self.rejected_missing_joints
            + self.rejected_non_finite
            + self.rejected_malformed
            + self.rejected_goals
        )


@dataclass
class _Sample:
    positions: np.ndarray
    velocities: np.ndarray
    received_ns: int


@dataclass
class _Status:
    enabled: bool = False
    sample: _Sample | None = None
    hold_position: np.ndarray | None = None
    last_command: np.ndarray | None = None
    goal: np.ndarray | None = None
    input_invalid: bool = False
    fault: str = ""
    stale: bool = False
    events: list[tuple[str, str]] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)


class Supervisor:
    """Decides, every control tick, whether the policy may command the robot."""

    def __init__(
        self,
        spec: RobotSpec,
        state_timeout: float = 0.1,
        on_stale: str = "hold",
        clock_ns: Callable[[], int] = time.monotonic_ns,
        needs_goal: bool | None = None,
    ) -> None:
        if not state_timeout > 0:
            raise ConfigError(f"state_timeout must be > 0 s, got {state_timeout}")
        if on_stale not in ON_STALE_CHOICES:
            raise ConfigError(f"on_stale must be one of {ON_STALE_CHOICES}, got {on_stale!r}")
        self.spec = spec
        self.state_timeout = float(state_timeout)
        self.on_stale = on_stale
        self.needs_goal = ("goal" in spec.observation) if needs_goal is None else needs_goal
        self._needs_velocities = "joint_velocities" in spec.observation
        self.counters = Counters()
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._s = _Status()

    # --- inputs (executor thread) --------------------------------------------------------------
    def accept_joint_state(
        self,
        names: Sequence[str],
        positions: Sequence[float] | np.ndarray,
        velocities: Sequence[float] | np.ndarray,
        received_ns: int | None = None,
    ) -> bool:
        """Store a /joint_states sample if it is complete and finite; count it otherwise."""
        received_ns = self._clock_ns() if received_ns is None else received_ns
        with self._lock:
            self.counters.joint_states += 1
            try:
                joint_positions = joint_array(self.spec, list(names), positions)
                if len(velocities) == 0 and not self._needs_velocities:
                    joint_velocities = np.zeros(self.spec.num_joints)
                else:
                    joint_velocities = joint_array(self.spec, list(names), velocities)
            except ContractError as exc:
                missing = any(n not in names for n in self.spec.joint_names)
                if missing:
                    self.counters.rejected_missing_joints += 1
                    if self._s.sample is None:
                        self._s.fault = f"/joint_states does not match the policy contract: {exc}"
                    self._event_once("missing_joints", f"rejected /joint_states: {exc}")
                else:
                    self.counters.rejected_malformed += 1
                    self._event_once(
                        "malformed",
                        f"rejected /joint_states: {exc}; "
                        "position and velocity arrays must be as long as the name array",
                    )
                return False
            if not (np.all(np.isfinite(joint_positions)) and np.all(np.isfinite(joint_velocities))):
                self.counters.rejected_non_finite += 1
                self._s.input_invalid = True
                self._event_once(
                    "non_finite", "rejected /joint_states with non-finite values; holding position"
                )
                return False
            if self._s.input_invalid:
                self._s.input_invalid = False
                self._s.reported.discard("non_finite")
                self._s.events.append(("info", "finite /joint_states again; policy may resume"))
            if self._s.fault:
                self._s.events.append(
                    ("info", "/joint_states now carries every contract joint; fault cleared")
                )
                self._s.fault = ""
                self._s.reported.discard("missing_joints")
            self._s.sample = _Sample(joint_positions, joint_velocities, received_ns)
            if self._s.hold_position is None:
                self._s.hold_position = joint_positions.copy()
            return True

    def accept_goal(self, goal: Sequence[float] | np.ndarray) -> bool:
        goal = np.asarray(goal, dtype=np.float64)
        with self._lock:
            if goal.shape != (self.spec.task.goal_dim,) or not np.all(np.isfinite(goal)):
                self.counters.rejected_goals += 1
                self._event_once(
                    "bad_goal",
                    f"rejected goal {goal.tolist()}: need {self.spec.task.goal_dim} finite values",
                )
                return False
            self._s.goal = goal
            return True

    def enable(self, flag: bool) -> tuple[bool, str]:
        """The e-stop service. Disabling always succeeds; enabling needs fresh, valid data."""
        with self._lock:
            if not flag:
                was = self._s.enabled
                self._s.enabled = False
                if self._s.sample is not None:
                    self._s.hold_position = self._s.sample.positions.copy()
                return True, "disabled: holding the measured position" if was else "already disabled"
            if self._s.fault:
                return False, f"cannot enable: {self._s.fault}"
            if self._s.sample is None:
                return False, "cannot enable: no valid /joint_states received yet"
            age = (self._clock_ns() - self._s.sample.received_ns) / 1e9
            if age > self.state_timeout:
                return False, f"cannot enable: newest /joint_states is {age:.3f} s old"
            if self._s.enabled:
                return True, "already enabled"
            self._s.enabled = True
            return True, "enabled: policy commands the robot"

    def record_command(self, command: np.ndarray) -> None:
        """The command actually published (after the safety filter): what `hold` repeats."""
        with self._lock:
            self._s.last_command = np.array(command, dtype=np.float64)

    # --- the control tick (control thread) -----------------------------------------------------
    def decide(self, now_ns: int | None = None) -> Decision:
        now_ns = self._clock_ns() if now_ns is None else now_ns
        with self._lock:
            decision = self._decide(now_ns)
            if decision.action is Action.POLICY:
                self.counters.policy_commands += 1
            elif decision.action is Action.HOLD:
                self.counters.hold_commands += 1
            else:
                self.counters.silent_ticks += 1
            return decision

    def _decide(self, now_ns: int) -> Decision:
        s = self._s
        if s.fault:
            return Decision(Action.NONE, SafetyState.FAULT, s.fault)
        if s.sample is None:
            return Decision(Action.NONE, SafetyState.WAITING_FOR_STATE, "no valid /joint_states yet")
        age = (now_ns - s.sample.received_ns) / 1e9
        if age > self.state_timeout:
            if not s.stale:
                s.stale = True
                self.counters.stale_events += 1
                s.events.append(
                    (
                        "error",
                        f"watchdog: /joint_states is {age:.3f} s old (> state_timeout {self.state_timeout} s); "
                        + ("holding the last command" if self.on_stale == "hold" else "stopped publishing"),
                    )
                )
            reason = f"/joint_states {age:.3f} s old"
            if self.on_stale == "stop":
                return Decision(Action.NONE, SafetyState.STALE, reason, observation_age=age)
            return Decision(
                Action.HOLD, SafetyState.STALE, reason, command=self._hold_target(), observation_age=age
            )
        if s.stale:
            s.stale = False
            s.events.append(
                ("info", f"watchdog: fresh /joint_states again ({age * 1e3:.1f} ms old); recovered")
            )
        if not s.enabled:
            return Decision(
                Action.HOLD,
                SafetyState.DISABLED,
                "disabled: holding the measured position",
                command=s.hold_position,
                observation_age=age,
            )
        if s.input_invalid:
            return Decision(
                Action.HOLD,
                SafetyState.ENABLED,
                "non-finite /joint_states: holding",
                command=self._hold_target(),
                observation_age=age,
            )
        if self.needs_goal and s.goal is None:
            return Decision(
                Action.HOLD,
                SafetyState.ENABLED,
                "waiting for a goal",
                command=self._hold_target(),
                observation_age=age,
            )
        return Decision(
            Action.POLICY,
            SafetyState.ENABLED,
            "",
            positions=s.sample.positions,
            velocities=s.sample.velocities,
            goal=s.goal,
            observation_age=age,
        )

    def _hold_target(self) -> np.ndarray:
        s = self._s
        if s.enabled and s.last_command is not None:
            return s.last_command
        assert s.hold_position is not None  # set with the first valid sample
        return s.hold_position

    # --- reporting -----------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._s.enabled

    @property
    def fault(self) -> str:
        return self._s.fault

    def state(self, now_ns: int | None = None) -> SafetyState:
        """The current state without counting a tick (for diagnostics)."""
        now_ns = self._clock_ns() if now_ns is None else now_ns
        with self._lock:
            s = self._s
            if s.fault:
                return SafetyState.FAULT
            if s.sample is None:
                return SafetyState.WAITING_FOR_STATE
            if (now_ns - s.sample.received_ns) / 1e9 > self.state_timeout:
                return SafetyState.STALE
            return SafetyState.ENABLED if s.enabled else SafetyState.DISABLED

    def observation_age(self, now_ns: int | None = None) -> float:
        now_ns = self._clock_ns() if now_ns is None else now_ns
        with self._lock:
            if self._s.sample is None:
                return float("nan")
            return (now_ns - self._s.sample.received_ns) / 1e9

    def pop_events(self) -> list[tuple[str, str]]:
        """(level, message) of transitions and first occurrences since the last call, for the node to log.

        level is "error" (the node is not following the policy because of a problem) or "info".
        """
        with self._lock:
            events, self._s.events = self._s.events, []
            return events

    def _event_once(self, key: str, message: str) -> None:
        if key not in self._s.reported:
            self._s.reported.add(key)
            self._s.events.append(("error", message))
