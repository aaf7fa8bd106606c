"""The robot contract: how a policy talks to one robot, in one place.

A `RobotSpec` fixes joint order, limits, default pose, action semantics, control rate and the
observation layout. It is loaded from the YAML beside each MJCF, validated with errors that say how
to fix the file, and serialised to JSON so that it rides inside the exported ONNX file. Simulation,
bag conversion, training, export and the ROS 2 node all read the same object, so a mismatch between
them cannot be silent.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from mpo_ros.errors import SpecError

__all__ = [
    "ACTION_FILTERS",
    "COMMAND_INTERFACES",
    "COMMAND_UNITS",
    "CONTRACT_VERSION",
    "OBSERVATION_BLOCKS",
    "CommandArrays",
    "JointArrays",
    "JointSpec",
    "RobotSpec",
    "TaskSpec",
    "contract_differences",
    "find_spec",
    "load_spec",
    "models_dir",
]

# Bump when the meaning of a field changes; readers refuse versions they do not know.
CONTRACT_VERSION = 1

# Action filters the contract can carry (applied by observation.policy_command everywhere).
ACTION_FILTERS = ("none", "lowpass")
# Command interfaces the contract can drive (ros2_control names).
COMMAND_INTERFACES = ("position", "velocity")
# The unit of a command (and of action_scale and max_delta) per interface, for reports and messages.
COMMAND_UNITS = {"position": "rad", "velocity": "rad/s"}
# Observation blocks the contract may list, in any order. Each is built in observation.py only.
OBSERVATION_BLOCKS = ("joint_positions", "joint_velocities", "last_action", "goal")


@dataclass(frozen=True)
class JointSpec:
    """One actuated joint. Units: rad, rad/s.

    The meaning of ``action_scale`` and ``max_delta`` depends on the contract's ``command_interface``:

    - position: command = default + action_scale * action (rad); max_delta is the largest change of the
      commanded position per control step (rad), i.e. a velocity limit times the control period.
    - velocity: command = action_scale * action (rad/s, so action_scale <= velocity_limit); max_delta is
      the largest change of the commanded velocity per control step (rad/s), i.e. the acceleration limit
      divided by the control rate. It is also the braking deceleration the position-aware bound assumes.

    ``default`` is the nominal pose under both: observation offset and episode start pose.
    """

    name: str
    lower: float
    upper: float
    velocity_limit: float
    default: float
    # position: command = default + action_scale * action (rad); velocity: command = action_scale * action
    # (rad/s); action in [-1, 1].
    action_scale: float
    # Largest change of the command in one control step, in the command's units (rad or rad/s).
    max_delta: float

    def _check(self) -> None:
        problems = self.problems()
        if problems:
            raise SpecError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every problem of this joint's numbers, each naming the key."""
        where = f"joint '{self.name}'"
        keys = ("lower", "upper", "velocity_limit", "default", "action_scale", "max_delta")
        bad = [
            k
            for k in keys
            if not isinstance(getattr(self, k), (int, float)) or not math.isfinite(getattr(self, k))
        ]
        out = [f"{where}: {k} must be a finite number, got {getattr(self, k)!r}" for k in bad]
        if bad:
            return out
        if not self.lower < self.upper:
            out.append(f"{where}: lower ({self.lower}) must be below upper ({self.upper})")
        elif not self.lower <= self.default <= self.upper:
            out.append(
                f"{where}: default pose {self.default} lies outside its limits [{self.lower}, {self.upper}]"
            )
        out += [
            f"{where}: {k} must be > 0, got {getattr(self, k)}"
            for k in ("velocity_limit", "action_scale", "max_delta")
            if getattr(self, k) <= 0
        ]
        return out


@dataclass(frozen=True)
class TaskSpec:
    """What the policy is asked to do; reward and success live in tasks.py."""

    name: str
    # Goal box (e.g. end-effector target position, metres, in the robot base frame).
    goal_low: tuple[float, ...]
    goal_high: tuple[float, ...]
    # Success when the task's error (e.g. end-effector distance, m) is below this.
    success_threshold: float
    # Episode length in seconds of robot time (episodes are truncated, never terminated, on time).
    episode_seconds: float
    # Reward shaping weights and other task-specific numbers (see tasks.py for the keys).
    params: dict[str, float] = field(default_factory=dict)
    # The frame goals are expressed in (the MJCF world frame = this ROS frame); the node refuses goals
    # stamped in another frame rather than chasing a target in the wrong coordinates.
    goal_frame: str = "base_link"

    @property
    def goal_dim(self) -> int:
        return len(self.goal_low)

    def _check(self) -> None:
        problems = self.problems()
        if problems:
            raise SpecError("; ".join(problems))

    def problems(self) -> list[str]:
        out = []
        if len(self.goal_low) != len(self.goal_high):
            out.append(
                f"task '{self.name}': goal_low has {len(self.goal_low)} entries but goal_high has "
                f"{len(self.goal_high)}; give one bound per goal dimension"
            )
        elif any(not lo <= hi for lo, hi in zip(self.goal_low, self.goal_high, strict=True)):
            out.append(f"task '{self.name}': goal_low {self.goal_low} exceeds goal_high {self.goal_high}")
        if self.success_threshold <= 0 or self.episode_seconds <= 0:
            out.append(f"task '{self.name}': success_threshold and episode_seconds must be > 0")
        if not isinstance(self.goal_frame, str) or not self.goal_frame.strip():
            out.append(f"task '{self.name}': goal_frame must name a frame (e.g. base_link)")
        return out


class CommandArrays(NamedTuple):
    """How an action becomes a command, per joint (read-only float64, contract order; cached per spec).

    command = offset + action_scale * action, clipped to [lower, upper]: for a position contract the
    offset is the default pose and the bounds are the joint limits; for a velocity contract the offset
    is 0 and the bounds are +-velocity_limit (the position-aware braking bound comes on top, see
    observation.braking_bounds).
    """

    offset: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


class JointArrays(NamedTuple):
    """Per-joint numbers as read-only float64 vectors in contract order (cached per spec)."""

    default: np.ndarray
    action_scale: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    max_delta: np.ndarray
    velocity_limit: np.ndarray


@dataclass(frozen=True)
class RobotSpec:
    """The robot contract. `joints` order is the order of every per-joint vector in mpo_ros."""

    name: str
    joints: tuple[JointSpec, ...]
    control_rate_hz: float
    # MuJoCo steps per control step; the MJCF timestep times this is the control period.
    physics_substeps: int
    observation: tuple[str, ...]
    task: TaskSpec
    # MJCF file, relative to the YAML's folder; only simulation reads it.
    mjcf: str = ""
    # MuJoCo site whose position the reach tasks track; only simulation and bag relabelling read it.
    end_effector: str = ""
    # "position_offset": absolute position targets around the default pose (the only mode so far).
    action_mode: str = "position_offset"
    # The ros2_control command interface the commands are for: "position" (forward_position_controller or
    # a JointTrajectory of positions; the MJCF's actuators are <position> servos) or "velocity"
    # (forward_velocity_controller, joint velocities in rad/s; <velocity> servos in the MJCF). The node
    # refuses a command topic that names another interface (e.g. /forward_velocity_controller/commands
    # under a position contract).
    command_interface: str = "position"
    # Action filter, part of the contract so simulation, bag conversion and the node apply the same one:
    # "none", or "lowpass": a first-order low-pass on the command target (position or velocity) before the
    # slew limit,
    # target_f = previous_command + alpha (target - previous_command), alpha = 1 - exp(-2 pi fc / rate).
    action_filter: str = "none"
    action_filter_cutoff_hz: float = 0.0
    contract_version: int = CONTRACT_VERSION
    # Folder the spec was loaded from (not serialised): resolves `mjcf`.
    source_dir: str = field(default="", compare=False)

    # --- derived views -------------------------------------------------------------------------
    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def action_dim(self) -> int:
        return len(self.joints)

    @property
    def control_period(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def episode_steps(self) -> int:
        return max(1, round(self.task.episode_seconds * self.control_rate_hz))

    @cached_property
    def joint_arrays(self) -> JointArrays:
        """Built once: the control loop maps observations and commands every period (hot path)."""

        def vector(key: str) -> np.ndarray:
            array = np.array([getattr(j, key) for j in self.joints], dtype=np.float64)
            array.flags.writeable = False
            return array

        return JointArrays(*(vector(key) for key in JointArrays._fields))

    @property
    def velocity_commands(self) -> bool:
        """True for a velocity contract: commands are joint velocities (rad/s), the rest command is 0."""
        return self.command_interface == "velocity"

    @cached_property
    def command_arrays(self) -> CommandArrays:
        """The action -> command offset and static bounds for this contract's interface (hot path: cached)."""
        arrays = self.joint_arrays
        if self.velocity_commands:
            parts = (np.zeros(self.num_joints), -arrays.velocity_limit, arrays.velocity_limit.copy())
        else:
            parts = (arrays.default.copy(), arrays.lower.copy(), arrays.upper.copy())
        for part in parts:
            part.flags.writeable = False
        return CommandArrays(*parts)

    @property
    def filter_alpha(self) -> float:
        """The low-pass filter's smoothing factor per control step (1.0: no filter)."""
        if self.action_filter != "lowpass":
            return 1.0
        return 1.0 - math.exp(-2.0 * math.pi * self.action_filter_cutoff_hz / self.control_rate_hz)

    @property
    def mjcf_path(self) -> Path:
        return Path(self.source_dir) / self.mjcf

    def require_position_interface(self, tool: str, limitation: str) -> None:
        """Refuse a velocity contract in a tool that only handles position commands (SpecError naming the
        limitation and what to do instead), rather than reading its rad/s commands as positions."""
        if self.command_interface != "position":
            raise SpecError(
                f"{tool} handles position contracts only, but robot '{self.name}' has command_interface: "
                f"{self.command_interface}. {limitation}"
            )

    # --- validation ----------------------------------------------------------------------------
    def __post_init__(self) -> None:
        if self.contract_version != CONTRACT_VERSION:
            raise SpecError(
                f"contract version {self.contract_version} is not supported by this mpo_ros "
                f"(supports {CONTRACT_VERSION}); re-export the policy with a matching mpo_ros version"
            )
        where = f"robot '{self.name}'"
        problems = [] if self.joints else [f"{where}: list at least one joint under 'joints'"]
        names = [j.name for j in self.joints]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(f"{where}: joint names must be unique, repeated: {duplicates}")
        for joint in self.joints:
            problems += joint.problems()
        if not (isinstance(self.control_rate_hz, (int, float)) and 0 < self.control_rate_hz <= 10000):
            problems.append(f"{where}: control_rate_hz must be in (0, 10000], got {self.control_rate_hz}")
        if not isinstance(self.physics_substeps, int) or self.physics_substeps < 1:
            problems.append(f"{where}: physics_substeps must be an integer >= 1")
        unknown = [b for b in self.observation if b not in OBSERVATION_BLOCKS]
        if unknown:
            problems.append(
                f"{where}: unknown observation block(s) {unknown}; choose from {list(OBSERVATION_BLOCKS)}"
            )
        if len(set(self.observation)) != len(self.observation) or not self.observation:
            problems.append(f"{where}: observation must list each block once, got {list(self.observation)}")
        if self.action_mode != "position_offset":
            problems.append(f"{where}: action_mode '{self.action_mode}' unknown; use 'position_offset'")
        if self.action_filter not in ACTION_FILTERS:
            problems.append(
                f"{where}: action_filter '{self.action_filter}' unknown; use one of {list(ACTION_FILTERS)}"
            )
        elif self.action_filter == "lowpass" and not (
            isinstance(self.action_filter_cutoff_hz, (int, float))
            and 0 < self.action_filter_cutoff_hz < self.control_rate_hz / 2
        ):
            problems.append(
                f"{where}: action_filter_cutoff_hz {self.action_filter_cutoff_hz} must lie in (0, "
                f"{self.control_rate_hz / 2:g}) Hz (below the Nyquist frequency of the control rate)"
            )
        if self.command_interface not in COMMAND_INTERFACES:
            problems.append(
                f"{where}: command_interface '{self.command_interface}' is not supported; use one of "
                f"{list(COMMAND_INTERFACES)} (the effort interface is not implemented)"
            )
        elif self.command_interface == "velocity":
            # At |action| = 1 the command is action_scale rad/s: above velocity_limit it would be clipped
            # for every large action, flattening the action space the policy learns on.
            problems += [
                f"{where}: joint '{j.name}': action_scale {j.action_scale} rad/s exceeds velocity_limit "
                f"{j.velocity_limit} rad/s; under a velocity contract action_scale is the speed at |action| "
                "= 1, set it to at most velocity_limit"
                for j in self.joints
                if not j.problems() and j.action_scale > j.velocity_limit
            ]
        problems += self.task.problems()
        if problems:
            # Every problem at once: a user fixing a spec should not iterate one error at a time.
            raise SpecError(
                problems[0]
                if len(problems) == 1
                else f"{len(problems)} problems:\n  - " + "\n  - ".join(problems)
            )

    # --- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source_dir")
        return data

    def to_json(self) -> str:
        """Full-precision JSON (repr of floats round-trips exactly), for the ONNX metadata."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source_dir: str = "", source: str = "spec") -> RobotSpec:
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        data = dict(data)
        try:
            joints = tuple(JointSpec(**_floats(j, f"{source}: joint")) for j in data.pop("joints"))
            task_data = dict(data.pop("task"))
            task = TaskSpec(
                name=str(task_data.pop("name")),
                goal_low=tuple(float(x) for x in task_data.pop("goal_low")),
                goal_high=tuple(float(x) for x in task_data.pop("goal_high")),
                success_threshold=float(task_data.pop("success_threshold")),
                episode_seconds=float(task_data.pop("episode_seconds")),
                params={str(k): float(v) for k, v in (task_data.pop("params", None) or {}).items()},
                goal_frame=str(task_data.pop("goal_frame", "base_link")),
            )
            if task_data:
                raise SpecError(f"{source}: unknown task key(s) {sorted(task_data)}")
            observation = tuple(data.pop("observation"))
        except KeyError as exc:
            raise SpecError(f"{source}: missing required key {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{source}: {exc}") from exc
        known = {
            "name",
            "control_rate_hz",
            "physics_substeps",
            "mjcf",
            "end_effector",
            "action_mode",
            "command_interface",
            "action_filter",
            "action_filter_cutoff_hz",
            "contract_version",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                f"{source}: unknown key(s) {unknown}; valid top-level keys: {sorted(known | {'joints', 'task', 'observation'})}"
            )
        if "name" not in data or "control_rate_hz" not in data or "physics_substeps" not in data:
            raise SpecError(f"{source}: 'name', 'control_rate_hz' and 'physics_substeps' are required")
        for key in ("control_rate_hz", "action_filter_cutoff_hz"):
            if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                data[key] = float(data[key])
        return cls(
            joints=joints,
            task=task,
            observation=observation,
            source_dir=source_dir,
            **{k: data[k] for k in data},
        )

    @classmethod
    def from_json(cls, text: str, source: str = "contract JSON") -> RobotSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{source} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=source)


def _floats(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise SpecError(f"{where} entries must be mappings with name/lower/upper/..., got {entry!r}")
    out = dict(entry)
    for key, value in out.items():
        if key != "name" and isinstance(value, int) and not isinstance(value, bool):
            out[key] = float(value)
    if "name" not in out:
        raise SpecError(f"{where} entry without a 'name': {entry!r}")
    missing = [
        k
        for k in ("lower", "upper", "velocity_limit", "default", "action_scale", "max_delta")
        if k not in out
    ]
    if missing:
        raise SpecError(f"{where} '{out['name']}' is missing {missing}")
    return out


def load_spec(path: str | Path) -> RobotSpec:
    """Load and validate a robot spec YAML (or a robot name shipped in models/, e.g. 'arm2')."""
    path = find_spec(path)
    try:
        with path.open() as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from exc
    return RobotSpec.from_dict(data, source_dir=str(path.parent.resolve()), source=str(path))


def models_dir() -> Path:
    """The shipped models/ folder: the source checkout, or share/mpo_ros/models when installed."""
    here = Path(__file__).resolve().parents[2] / "models"
    if here.is_dir():
        return here
    try:  # installed as a ROS 2 package
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("mpo_ros")) / "models"
    except Exception:
        return here


def find_spec(name_or_path: str | Path) -> Path:
    """Resolve 'arm2' -> models/arm2.yaml; pass real paths through."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SpecError(f"robot spec {path} does not exist")
        return path
    candidate = models_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    shipped = sorted(p.stem for p in models_dir().glob("*.yaml"))
    raise SpecError(f"unknown robot '{name_or_path}': give a spec YAML path or one of {shipped}")


def contract_differences(a: RobotSpec, b: RobotSpec, names: tuple[str, str] = ("a", "b")) -> list[str]:
    """Every field where two contracts differ, as ``"joints[0].upper: a 2.0, b 2.5"`` lines (empty: equal).

    Used wherever two sources of one contract meet (environment, datasets, a checkpoint being resumed): a
    user needs the whole list to see whether a dataset was converted with another spec, not the first hit.
    Folder and MJCF location are not part of the contract's meaning and are not compared.
    """
    left, right = a.to_dict(), b.to_dict()
    for data in (left, right):
        data.pop("mjcf", None)
    out: list[str] = []
    _diff(left, right, "", names, out)
    return out


def _diff(x: Any, y: Any, path: str, names: tuple[str, str], out: list[str]) -> None:
    if isinstance(x, dict) and isinstance(y, dict):
        for key in sorted(set(x) | set(y), key=str):
            _diff(x.get(key), y.get(key), f"{path}.{key}" if path else str(key), names, out)
    elif isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _diff(u, v, f"{path}[{i}]", names, out)
    elif x != y:
        out.append(f"{path}: {names[0]} {x!r}, {names[1]} {y!r}")
