"""Excitation signals for system identification: chirp, multisine and PRBS around the default pose.

Identifying a joint's inertia (armature), damping and servo gains needs its position to move across
the servo's bandwidth: slow motion shows only the stiffness, fast motion mostly the inertia. The
three classic signals cover a band [f_min, f_max] differently:

* ``chirp``: one sine whose frequency sweeps logarithmically from f_min to f_max (easy to read in
  a plot; each instant excites one frequency);
* ``multisine``: a sum of sines at log-spaced frequencies with Schroeder phases (low crest factor),
  different phases per joint so the joints' motions are uncorrelated (all frequencies all the time);
* ``prbs``: a pseudo-random binary sequence held for 1 / (2 f_max) seconds (broadband steps; the
  slew limit of the contract turns its edges into ramps).

An `ExcitationPlan` turns a signal into absolute joint targets for a whole run: ramp from the
measured start pose to the default pose, excite (fading in and out so targets never jump), and ramp
back to the start pose. The safety filter (joint limits and per-step slew) is applied by the caller
on top, exactly as for a policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ConfigError

__all__ = ["SIGNALS", "ExcitationConfig", "ExcitationPlan", "excitation_offsets"]

SIGNALS = ("multisine", "chirp", "prbs")


@dataclass(frozen=True)
class ExcitationConfig:
    """What to excite and how hard; the defaults suit arm2-sized arms (servo bandwidth a few Hz)."""

    signal: str = "multisine"
    # Peak offset from the default pose (rad); targets are clipped to the joint limits as well.
    amplitude: float = 0.3
    # Frequency band (Hz) of the excitation.
    f_min: float = 0.2
    f_max: float = 3.0
    # Seconds of excitation (ramps excluded).
    duration: float = 30.0
    # Joints to excite (contract names); empty: all.
    joints: tuple[str, ...] = field(default_factory=tuple)
    # True: excite the chosen joints one after another (each gets duration / len(joints)).
    per_joint: bool = False
    # Seconds of the ramp from the start pose to the default pose (and back at the end), and of
    # the fade-in/out of the excitation.
    ramp_seconds: float = 1.0
    seed: int = 0

    def check(self, spec: RobotSpec) -> None:
        if self.signal not in SIGNALS:
            raise ConfigError(f"excitation signal '{self.signal}' unknown; choose one of {list(SIGNALS)}")
        if not 0 < self.f_min < self.f_max:
            raise ConfigError(f"need 0 < f_min < f_max, got f_min={self.f_min}, f_max={self.f_max}")
        nyquist = 0.5 * spec.control_rate_hz
        if self.f_max >= nyquist:
            raise ConfigError(
                f"f_max {self.f_max} Hz must stay below half the control rate ({nyquist} Hz) of '{spec.name}'"
            )
        if self.amplitude <= 0 or self.duration <= 0 or self.ramp_seconds <= 0:
            raise ConfigError("amplitude, duration and ramp_seconds must be > 0")
        unknown = [j for j in self.joints if j not in spec.joint_names]
        if unknown:
            raise ConfigError(
                f"joint(s) {unknown} not in robot '{spec.name}'; it has {list(spec.joint_names)}"
            )


def excitation_offsets(spec: RobotSpec, config: ExcitationConfig, times: np.ndarray) -> np.ndarray:
    """Offsets [T, n] from the default pose at `times` (s since the excitation started)."""
    config.check(spec)
    chosen = [spec.joint_names.index(j) for j in (config.joints or spec.joint_names)]
    rng = np.random.default_rng(config.seed)
    offsets = np.zeros((len(times), spec.num_joints))
    if config.per_joint:
        slot = config.duration / len(chosen)
        for k, j in enumerate(chosen):
            local = times - k * slot
            inside = (local >= 0) & (local < slot)
            offsets[inside, j] = _signal(config, local[inside], slot, rng) * _fade(
                local[inside], slot, config
            )
    else:
        for j in chosen:
            offsets[:, j] = _signal(config, times, config.duration, rng) * _fade(
                times, config.duration, config
            )
    return offsets


def _fade(t: np.ndarray, length: float, config: ExcitationConfig) -> np.ndarray:
    """Raised-cosine fade in and out, so the excitation starts and ends at zero offset."""
    ramp = min(config.ramp_seconds, 0.25 * length)
    up = np.clip(t / ramp, 0.0, 1.0)
    down = np.clip((length - t) / ramp, 0.0, 1.0)
    return 0.5 * (1 - np.cos(np.pi * np.minimum(up, down)))


def _signal(config: ExcitationConfig, t: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    if config.signal == "chirp":
        # Logarithmic sweep: phase = 2 pi f0 L (k^(t/L) - 1) / ln k with k = f1 / f0.
        ratio = config.f_max / config.f_min
        phase = 2 * np.pi * config.f_min * length * (ratio ** (t / length) - 1) / np.log(ratio)
        return config.amplitude * np.sin(phase + rng.uniform(0, 2 * np.pi))
    if config.signal == "multisine":
        freqs = np.geomspace(config.f_min, config.f_max, 12)
        k = np.arange(1, len(freqs) + 1)
        phases = -np.pi * k * (k - 1) / len(freqs) + rng.uniform(0, 2 * np.pi)  # Schroeder + joint shift
        wave = np.sin(2 * np.pi * freqs[None, :] * t[:, None] + phases[None, :]).sum(axis=1)
        peak = np.max(np.abs(np.sin(2 * np.pi * freqs[None, :] * _grid(length)[:, None] + phases).sum(1)))
        return config.amplitude * wave / peak
    hold = 0.5 / config.f_max
    levels = rng.choice([-1.0, 1.0], size=int(np.ceil(length / hold)) + 1)
    return config.amplitude * levels[np.minimum((t / hold).astype(int), len(levels) - 1)]


def _grid(length: float) -> np.ndarray:
    return np.linspace(0.0, length, max(2, int(length * 200)))


@dataclass(frozen=True)
class ExcitationPlan:
    """Absolute joint targets for a whole run: ramp in, excite, ramp back to the start pose."""

    spec: RobotSpec
    config: ExcitationConfig
    start_pose: np.ndarray  # measured joint positions when the run began (contract order)

    @property
    def total_seconds(self) -> float:
        return 2 * self.config.ramp_seconds + self.config.duration

    def target(self, t: float) -> np.ndarray:
        """The joint target `t` seconds after the start (the start pose again after the end)."""
        default = self.spec.joint_arrays.default
        ramp = self.config.ramp_seconds
        if t < ramp:
            return self.start_pose + _smooth(t / ramp) * (default - self.start_pose)
        t_excite = t - ramp
        if t_excite < self.config.duration:
            return default + excitation_offsets(self.spec, self.config, np.array([t_excite]))[0]
        back = min((t_excite - self.config.duration) / ramp, 1.0)
        return default + _smooth(back) * (self.start_pose - default)

    def targets(self, times: np.ndarray) -> np.ndarray:
        """Vectorised `target` (the excitation part computed once, for recording whole runs)."""
        default = self.spec.joint_arrays.default
        ramp, duration = self.config.ramp_seconds, self.config.duration
        out = np.empty((len(times), self.spec.num_joints))
        phase_in = times < ramp
        out[phase_in] = self.start_pose + _smooth(times[phase_in] / ramp)[:, None] * (
            default - self.start_pose
        )
        excite = (~phase_in) & (times < ramp + duration)
        out[excite] = default + excitation_offsets(self.spec, self.config, times[excite] - ramp)
        rest = ~(phase_in | excite)
        back = np.minimum((times[rest] - ramp - duration) / ramp, 1.0)
        out[rest] = default + _smooth(back)[:, None] * (self.start_pose - default)
        return out


def _smooth(x: np.ndarray | float) -> np.ndarray:
    """Smoothstep 0 -> 1 with zero slope at both ends (no velocity jump at the ramp's ends)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)
