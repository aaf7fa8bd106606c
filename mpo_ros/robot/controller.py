"""The ROS-free control step of the policy node: supervisor decision -> policy step or hold -> command.

Kept apart from rclpy so the node stays a shell and every rule is unit-tested without ROS.

"The last command" has one owner, the :class:`~mpo_ros.robot.safety.SafetyFilter`: policy steps and
holds both pass through it (joint limits and per-step ``max_delta`` from the last command), a hold
without a target repeats it, and entering policy control resets it to the *measured* position, so
neither enabling nor a hold ever makes the arm jump.

Velocity contracts: a forward_velocity_controller keeps executing the last command, so neither
"publish nothing" nor "repeat the last command" stops the arm. Where the supervisor says HOLD (disabled
with on_disabled=hold, stale /joint_states with on_stale=hold, non-finite data, no goal yet) the
controller publishes the ramp to zero velocity and then zeros, every tick, as a position hold repeats
its pose; where it says NONE (a fault, on_*=stop) it publishes the ramp up to the first zero command
and then nothing (the controller keeps executing that zero; the command QoS is reliable, and a node
that keeps publishing would fight whatever stream the operator switched to). A hold with a target
pose is also a ramp to zero: the simplest behaviour that is always safe.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mpo_ros.robot.rate import LatencyWindow
from mpo_ros.robot.safety import SafetyFilter, policy_step
from mpo_ros.robot.supervisor import Action, SafetyState, Supervisor

__all__ = ["PolicyController"]


class PolicyController:
    """One control tick: supervisor decision -> `safety.policy_step` or a hold -> the command."""

    def __init__(self, policy: Any, supervisor: Supervisor) -> None:
        self.policy = policy
        self.spec = policy.spec
        self.supervisor = supervisor
        self.safety = SafetyFilter.for_policy(policy, on_fault="hold")
        self.step_latency = LatencyWindow()
        # Policy-step faults (FAULT_* code -> count) since the last `pop_step_faults`, for diagnostics.
        self._recent_faults: dict[str, int] = {}

    @property
    def rejected_policy_steps(self) -> int:
        """Policy steps the SafetyFilter rejected (non-finite observation or action, bad sizes)."""
        return sum(self.safety.fault_counts.values())

    @property
    def last_command(self) -> np.ndarray | None:
        """The last command sent (None before the first)."""
        return self.safety.last_command if self.safety.has_command else None

    def pop_step_faults(self) -> dict[str, int]:
        """Policy-step faults since the last call: /diagnostics turns them into an ERROR with the reason."""
        faults, self._recent_faults = self._recent_faults, {}
        return faults

    def warm(self) -> None:
        """Run the policy once on the last observation, output discarded, if it is in control.

        Called by the control loop just before the next tick (``warmup_lead``), so that tick's
        inference runs on warm caches; it changes no state (the next step overwrites the output).
        """
        warm = getattr(self.policy, "warm", None)
        if self.safety.enabled and warm is not None:
            warm()

    def tick(self, now_ns: int | None = None) -> tuple[np.ndarray | None, SafetyState]:
        """The command to publish now (None: publish nothing) and the safety state it came from."""
        decision = self.supervisor.decide(now_ns)
        if decision.action is Action.NONE:
            self.safety.disable()
            return self.safety.stop(), decision.state  # position: None; velocity: the ramp to zero
        if decision.action is Action.HOLD:
            self.safety.disable()
            return self.safety.hold(decision.command), decision.state
        if decision.starts_policy or not self.safety.enabled:
            self.safety.reset(decision.positions)  # bumpless: from the measured pose
        start = time.perf_counter_ns()
        step = policy_step(self.policy, self.safety, decision.positions, decision.velocities, decision.goal)
        self.step_latency.record((time.perf_counter_ns() - start) / 1e9)
        if step.fault is not None:
            self._recent_faults[step.fault] = self._recent_faults.get(step.fault, 0) + 1
            self.supervisor.report(
                f"policy_step_{step.fault}",
                f"policy step failed ({step.fault}): "
                + ("holding the last command" if step.publish else "not publishing"),
            )
        return (step.command if step.publish else None), decision.state

    def stop_command(self) -> np.ndarray | None:
        """Disable and give the next command of the way to rest: None for a position contract (stopping
        publishing is safe there) and, for a velocity contract, None once a zero command was given.

        The node calls this at deactivate and shutdown until it returns None, one call per control
        period, so a velocity-controlled arm is ramped to rest before the node goes quiet.
        """
        self.safety.disable()
        return self.safety.stop()
