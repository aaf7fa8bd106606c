"""Domain randomisation: what may differ between the simulator and a real robot, as data.

A `RandomizationProfile` holds one [low, high] range per physical quantity; `sample` draws one
`DynamicsSample` per episode from a seeded generator, and `RobotSim.randomize` applies it. Profiles
are YAML files (sim/profiles/train.yaml, heldout.yaml): the held-out profile is wider than the
training one, so evaluating on it measures robustness to conditions the policy never trained on.

Quantities and their meaning:

=========================  =====================================================================
mass_scale                 factor on every link's mass (inertia scales with it: same shape)
inertia_scale              extra factor on link inertias (mass distribution error)
joint_damping_scale        factor on joint viscous damping
joint_friction             added joint dry friction (N m, MuJoCo frictionloss)
actuator_kp_scale          factor on position servo stiffness kp (not used by velocity servos)
actuator_kv_scale          factor on servo damping kv (a velocity servo's gain)
observation_noise_position std of Gaussian noise on measured joint positions (rad)
observation_noise_velocity std of Gaussian noise on measured joint velocities (rad/s)
latency_steps              whole control periods between command and actuation (integers)
latency_fraction           extra fraction of one control period of latency
control_jitter             per-step control period error, as a fraction of the period (max |.|)
goal_scale                 factor on the goal box about its centre
initial_joint_noise        std of the initial joint positions around the default pose (rad)
=========================  =====================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mpo_ros.errors import ConfigError

__all__ = [
    "PROFILE_NAMES",
    "DynamicsSample",
    "RandomizationProfile",
    "Range",
    "load_profile",
    "profiles_dir",
]

PROFILE_NAMES = ("none", "train", "heldout")


@dataclass(frozen=True)
class Range:
    """A closed interval [low, high]; low == high is a fixed value."""

    low: float
    high: float

    def contains(self, other: Range) -> bool:
        return self.low <= other.low and other.high <= self.high

    def uniform(self, rng: np.random.Generator, size: int | None = None) -> Any:
        return rng.uniform(self.low, self.high, size=size)


# Nominal values (Range is frozen, so sharing one instance as a default is safe).
_ONE = Range(1.0, 1.0)
_ZERO = Range(0.0, 0.0)


@dataclass(frozen=True)
class RandomizationProfile:
    """Ranges to draw each episode's dynamics from; the defaults are the nominal robot."""

    mass_scale: Range = _ONE
    inertia_scale: Range = _ONE
    joint_damping_scale: Range = _ONE
    joint_friction: Range = _ZERO
    actuator_kp_scale: Range = _ONE
    actuator_kv_scale: Range = _ONE
    observation_noise_position: Range = _ZERO
    observation_noise_velocity: Range = _ZERO
    latency_steps: Range = _ZERO
    latency_fraction: Range = _ZERO
    control_jitter: Range = _ZERO
    goal_scale: Range = _ONE
    initial_joint_noise: Range = _ZERO
    name: str = "custom"

    def __post_init__(self) -> None:
        for key in self.range_names():
            value = getattr(self, key)
            if not value.low <= value.high:
                raise ConfigError(
                    f"randomisation profile '{self.name}': {key} low {value.low} > high {value.high}"
                )
            if value.low < 0:
                raise ConfigError(f"randomisation profile '{self.name}': {key} must be >= 0, got {value.low}")
        for key in ("mass_scale", "inertia_scale", "actuator_kp_scale", "goal_scale"):
            if getattr(self, key).low <= 0:
                raise ConfigError(f"randomisation profile '{self.name}': {key} must be > 0")
        steps = self.latency_steps
        if steps.low != int(steps.low) or steps.high != int(steps.high):
            raise ConfigError(
                f"randomisation profile '{self.name}': latency_steps counts whole control periods; "
                f"give integers, got [{steps.low}, {steps.high}] (use latency_fraction for the rest)"
            )
        if self.latency_fraction.high >= 1.0:
            raise ConfigError(
                f"randomisation profile '{self.name}': latency_fraction must be < 1 (a fraction of one "
                "control period); put whole periods in latency_steps"
            )
        if self.control_jitter.high >= 1.0:
            raise ConfigError(f"randomisation profile '{self.name}': control_jitter must be < 1")

    @classmethod
    def range_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "name")

    def contains(self, other: RandomizationProfile) -> bool:
        """True if every range of `other` lies inside this profile's (self is at least as wide)."""
        return all(getattr(self, k).contains(getattr(other, k)) for k in self.range_names())

    def sample(self, rng: np.random.Generator, num_bodies: int, num_joints: int) -> DynamicsSample:
        """One episode's dynamics: independent draws per body and per joint, scalars for the rest."""
        per_body = {k: self._draw(k, rng, num_bodies) for k in _PER_BODY}
        per_joint = {k: self._draw(k, rng, num_joints) for k in _PER_JOINT}
        scalars = {k: float(getattr(self, k).uniform(rng)) for k in _SCALARS}
        low, high = int(self.latency_steps.low), int(self.latency_steps.high)
        return DynamicsSample(
            **per_body, **per_joint, **scalars, latency_steps=int(rng.integers(low, high + 1))
        )

    def _draw(self, key: str, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.asarray(getattr(self, key).uniform(rng, size), dtype=np.float64)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], name: str = "custom", source: str = "profile"
    ) -> RandomizationProfile:
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source}: expected a mapping of quantity: [low, high], got {type(data).__name__}"
            )
        known = cls.range_names()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"{source}: unknown randomisation key(s) {unknown}; valid keys are {sorted(known)}"
            )
        ranges: dict[str, Range] = {}
        for key, value in data.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = [value, value]
            if (
                not isinstance(value, (list, tuple))
                or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            ):
                raise ConfigError(
                    f"{source}: {key} must be [low, high] (two numbers) or one number, got {value!r}"
                )
            if not all(np.isfinite(value)):
                raise ConfigError(f"{source}: {key} must be finite, got {value!r}")
            ranges[key] = Range(float(value[0]), float(value[1]))
        return cls(**ranges, name=name)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [getattr(self, k).low, getattr(self, k).high] for k in self.range_names()}


_PER_BODY = ("mass_scale", "inertia_scale")
_PER_JOINT = ("joint_damping_scale", "joint_friction", "actuator_kp_scale", "actuator_kv_scale")
_SCALARS = (
    "observation_noise_position",
    "observation_noise_velocity",
    "latency_fraction",
    "control_jitter",
    "goal_scale",
    "initial_joint_noise",
)


@dataclass(frozen=True)
class DynamicsSample:
    """One draw from a profile: the numbers a simulated episode runs with.

    Per-body arrays follow `ContractBinding.body_ids`, per-joint arrays the contract's joint order.
    """

    mass_scale: np.ndarray
    inertia_scale: np.ndarray
    joint_damping_scale: np.ndarray
    joint_friction: np.ndarray
    actuator_kp_scale: np.ndarray
    actuator_kv_scale: np.ndarray
    observation_noise_position: float = 0.0
    observation_noise_velocity: float = 0.0
    latency_steps: int = 0
    latency_fraction: float = 0.0
    control_jitter: float = 0.0
    goal_scale: float = 1.0
    initial_joint_noise: float = 0.0

    @classmethod
    def nominal(cls, num_bodies: int, num_joints: int) -> DynamicsSample:
        ones_b, ones_j = np.ones(num_bodies), np.ones(num_joints)
        return cls(ones_b, ones_b.copy(), ones_j, np.zeros(num_joints), ones_j.copy(), ones_j.copy())

    @property
    def latency_periods(self) -> float:
        """Total command latency in control periods."""
        return self.latency_steps + self.latency_fraction


def profiles_dir() -> Path:
    return Path(__file__).resolve().parent / "profiles"


def load_profile(name_or_path: str | Path | None) -> RandomizationProfile | None:
    """'none' (or None) -> None (nominal robot); a shipped profile name ('train', 'heldout', 'ur5e_train',
    ...) -> sim/profiles/<name>.yaml; else a YAML path."""
    if name_or_path is None or str(name_or_path) == "none":
        return None
    text = str(name_or_path)
    shipped = profiles_dir() / f"{text}.yaml"
    path = shipped if "/" not in text and shipped.is_file() else Path(text)
    if not path.is_file():
        names = sorted(p.stem for p in profiles_dir().glob("*.yaml"))
        raise ConfigError(f"randomisation profile '{text}' not found; use one of {names} or a YAML file path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return RandomizationProfile.from_dict(data, name=path.stem, source=str(path))
