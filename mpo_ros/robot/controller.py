"""The ROS-free control step of the policy node: supervisor decision -> policy step or hold -> command.

Kept apart from rclpy so the node stays a shell and every rule is unit-tested without ROS.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mpo_ros.contract.observation import limit_command
from mpo_ros.robot.rate import LatencyWindow
from mpo_ros.robot.safety import SafetyFilter, policy_step
from mpo_ros.robot.supervisor import Action, SafetyState, Supervisor

__all__ = ["PolicyController"]


class PolicyController:
    """One control tick: supervisor decision -> `runtime.policy_step` or a hold -> the command.

    Kept apart from rclpy so the node stays a shell. The previous published command is the one
    reference for the per-step limit: holds pass `observation.limit_command` from it, and entering
    policy control resets the SafetyFilter to it (its "enable"), so the command never jumps when
    control passes between the hold logic and the policy.
    """

    def __init__(self, policy: Any, supervisor: Supervisor) -> None:
        self._policy_step = policy_step
        self.policy = policy
        self.spec = policy.spec
        self.supervisor = supervisor
        self.safety = SafetyFilter.for_policy(policy, on_fault="hold")
        self.step_latency = LatencyWindow()
        self._previous_command: np.ndarray | None = None
        self._in_policy = False

    @property
    def rejected_policy_steps(self) -> int:
        """Policy steps the SafetyFilter rejected (non-finite observation or action, bad sizes)."""
        return sum(self.safety.fault_counts.values())

    def tick(self, now_ns: int | None = None) -> tuple[np.ndarray | None, SafetyState]:
        """The command to publish now (None: publish nothing) and the safety state it came from."""
        decision = self.supervisor.decide(now_ns)
        if decision.action is Action.NONE:
            self._leave_policy()
            return None, decision.state
        if decision.action is Action.POLICY:
            if not self._in_policy:
                hold = decision.positions if self._previous_command is None else self._previous_command
                self.safety.reset(hold)
                self._in_policy = True
            start = time.perf_counter_ns()
            step = self._policy_step(
                self.policy, self.safety, decision.positions, decision.velocities, decision.goal
            )
            self.step_latency.record((time.perf_counter_ns() - start) / 1e9)
            if not step.publish:
                return None, decision.state
            command = step.command
        else:
            self._leave_policy()
            assert decision.command is not None
            previous = decision.command if self._previous_command is None else self._previous_command
            command = limit_command(self.spec, previous, decision.command)
        self._previous_command = command
        self.supervisor.record_command(command)
        return command, decision.state

    def _leave_policy(self) -> None:
        if self._in_policy:
            self.safety.disable()
            self._in_policy = False
