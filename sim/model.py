"""Load a robot's MJCF and bind it to the robot contract by name.

Everything in the simulator addresses MuJoCo arrays through a `ContractBinding`, built here once:
joints, actuators and the end-effector site are looked up by the names in the contract, never by
index, and the binding refuses an MJCF that disagrees with the contract (a missing joint, a control
rate that the timestep and substeps do not produce, joint limits wider than the MJCF allows).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import mujoco
import numpy as np

from mpo_ros.contract.spec import COMMAND_INTERFACES, JointSpec, RobotSpec, models_dir
from mpo_ros.errors import SpecError

__all__ = ["ContractBinding", "actuator_kind", "bind", "contract_problems", "load_model", "mjcf_path"]

# Relative tolerance between the spec's control rate and 1 / (timestep * physics_substeps).
_RATE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ContractBinding:
    """Indices of the contract's joints (in contract order) inside one MjModel."""

    qpos_address: np.ndarray  # [n] int, into data.qpos
    dof_address: np.ndarray  # [n] int, into data.qvel / model.dof_*
    actuator_id: np.ndarray  # [n] int, the servo (position or velocity, per the contract) driving each joint
    site_id: int  # end-effector site
    goal_dim: int  # leading coordinates of the site position that the task tracks
    body_ids: np.ndarray  # bodies with mass (everything but the world and mocap bodies)


@lru_cache(maxsize=16)
def _compiled(path: str) -> mujoco.MjModel:
    try:
        return mujoco.MjModel.from_xml_path(path)
    except ValueError as exc:
        raise SpecError(f"MJCF {path} does not compile: {exc}") from exc


def load_model(spec: RobotSpec) -> mujoco.MjModel:
    """A fresh MjModel for the spec (each simulator owns one, so randomisation never leaks)."""
    path = mjcf_path(spec)
    if not spec.mjcf or not path.is_file():
        raise SpecError(
            f"robot '{spec.name}': MJCF file '{spec.mjcf}' not found at {path}; set 'mjcf' in the spec "
            "to a path relative to the spec YAML"
        )
    return copy.deepcopy(_compiled(str(path.resolve())))


def _driving_actuators(model: mujoco.MjModel, joint_id: int) -> list[int]:
    return [
        a
        for a in range(model.nu)
        if int(model.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT)
        and model.actuator_trnid[a, 0] == joint_id
    ]


def actuator_kind(model: mujoco.MjModel, actuator: int) -> str:
    """'position' (gain kp, bias -kp q - kv qdot), 'velocity' (gain kv, bias -kv qdot), 'motor' or 'other'.

    MuJoCo's <position> and <velocity> shortcuts both compile to a fixed gain and an affine bias; only the
    bias coefficients tell a position servo (biasprm[1] = -kp) from a velocity servo (biasprm[1] = 0).
    """
    gain_fixed = int(model.actuator_gaintype[actuator]) == int(mujoco.mjtGain.mjGAIN_FIXED)
    bias = int(model.actuator_biastype[actuator])
    kp, b1, b2 = (
        model.actuator_gainprm[actuator, 0],
        model.actuator_biasprm[actuator, 1],
        model.actuator_biasprm[actuator, 2],
    )
    if gain_fixed and bias == int(mujoco.mjtBias.mjBIAS_AFFINE):
        if b1 < 0 and np.isclose(kp, -b1):
            return "position"
        if b1 == 0 and b2 < 0 and np.isclose(kp, -b2):
            return "velocity"
        return "other"
    if gain_fixed and bias == int(mujoco.mjtBias.mjBIAS_NONE):
        return "motor"
    return "other"


def contract_problems(spec: RobotSpec, model: mujoco.MjModel) -> list[str]:
    """Every way the MJCF disagrees with the contract, each with its fix (``mpo-ros robot check``)."""
    problems = []
    joint_names = [model.joint(i).name for i in range(model.njnt)]
    for joint in spec.joints:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint.name)
        if jid < 0:
            problems.append(
                f"joint '{joint.name}' is not in the MJCF (it has {joint_names}); rename it in the spec"
            )
            continue
        if int(model.jnt_type[jid]) not in (
            int(mujoco.mjtJoint.mjJNT_HINGE),
            int(mujoco.mjtJoint.mjJNT_SLIDE),
        ):
            problems.append(
                f"joint '{joint.name}' must be a hinge or slide joint; drive only those from the contract"
            )
        if model.jnt_limited[jid]:
            lo, hi = model.jnt_range[jid]
            if joint.lower < lo - 1e-9 or joint.upper > hi + 1e-9:
                problems.append(
                    f"joint '{joint.name}': spec limits [{joint.lower}, {joint.upper}] exceed the MJCF range "
                    f"[{lo:.6g}, {hi:.6g}]; narrow the spec's lower/upper or widen the MJCF range"
                )
        problems += _actuator_problems(spec, model, joint, jid)
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, spec.end_effector) < 0:
        sites = [model.site(i).name for i in range(model.nsite)]
        problems.append(
            f"end_effector site '{spec.end_effector}' is not in the MJCF (sites: {sites}); add "
            "<site name=...> to the tool body or set end_effector in the spec"
        )
    if not 1 <= spec.task.goal_dim <= 3:
        problems.append(
            f"a reach goal has 1 to 3 coordinates, got {spec.task.goal_dim}; fix task.goal_low/high"
        )
    rate = 1.0 / (model.opt.timestep * spec.physics_substeps)
    if abs(rate - spec.control_rate_hz) > _RATE_TOLERANCE * spec.control_rate_hz:
        substeps = 1.0 / (model.opt.timestep * spec.control_rate_hz)
        fix = (
            f"set physics_substeps: {round(substeps)}"
            if abs(substeps - round(substeps)) < 1e-6 and round(substeps) >= 1
            else f'set the MJCF <option timestep="{1.0 / (spec.control_rate_hz * spec.physics_substeps):.6g}"/>'
        )
        problems.append(
            f"control_rate_hz {spec.control_rate_hz} is not what the MJCF timestep {model.opt.timestep} s x "
            f"physics_substeps {spec.physics_substeps} produce ({rate:.6g} Hz); {fix}"
        )
    return problems


# The MJCF actuator each command interface drives, and how to write one.
_SERVO_EXAMPLE = {"position": "kp=... kv=...", "velocity": "kv=..."}


def _actuator_problems(spec: RobotSpec, model: mujoco.MjModel, joint: JointSpec, jid: int) -> list[str]:
    """The joint's actuator must be the servo of the contract's interface: a velocity servo fed position
    targets (or the reverse) would read rad as rad/s and run the arm away."""
    interface = spec.command_interface
    example = f'<{interface} joint="{joint.name}" {_SERVO_EXAMPLE[interface]}>'
    driving = _driving_actuators(model, jid)
    if len(driving) != 1:
        return [
            f"joint '{joint.name}' needs exactly one <{interface}> actuator (the contract's command_interface), "
            f"found {len(driving)}; add one ({example}) or remove the extras"
        ]
    kind = actuator_kind(model, driving[0])
    if kind != interface:
        other = (
            f"or set command_interface: {kind} in the contract if the robot takes {kind} commands"
            if kind in COMMAND_INTERFACES
            else "MuJoCo's <position> and <velocity> servos are the supported actuators"
        )
        return [
            f"joint '{joint.name}' is driven by a {kind} actuator, but the contract's command_interface is "
            f"'{interface}'; use a <{interface}> actuator ({example}) in the MJCF, {other}"
        ]
    actuator = driving[0]
    if interface == "velocity" and model.actuator_ctrllimited[actuator]:
        low, high = (float(v) for v in model.actuator_ctrlrange[actuator])
        if low > -joint.velocity_limit or high < joint.velocity_limit:
            return [
                f"joint '{joint.name}': the velocity actuator's ctrlrange [{low:g}, {high:g}] is narrower than "
                f"+-velocity_limit {joint.velocity_limit:g} rad/s, so MuJoCo would clip commands the contract "
                f'allows; set ctrlrange="-{joint.velocity_limit:g} {joint.velocity_limit:g}" or lower '
                "velocity_limit"
            ]
    return []


def mjcf_path(spec: RobotSpec) -> Path:
    """The spec's MJCF; a spec without a folder (e.g. read from ONNX metadata) looks in models/."""
    if spec.source_dir or Path(spec.mjcf).is_absolute():
        return spec.mjcf_path
    return models_dir() / spec.mjcf


def bind(spec: RobotSpec, model: mujoco.MjModel) -> ContractBinding:
    """Look up the contract's names in the model and check that the two agree (every problem at once)."""
    problems = contract_problems(spec, model)
    if problems:
        raise SpecError(
            f"robot '{spec.name}': the MJCF {spec.mjcf} does not fit the contract ({len(problems)} problem(s)):\n  - "
            + "\n  - ".join(problems)
        )
    qpos, dofs, actuators = [], [], []
    for joint in spec.joints:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint.name)
        qpos.append(model.jnt_qposadr[jid])
        dofs.append(model.jnt_dofadr[jid])
        actuators.append(_driving_actuators(model, jid)[0])
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, spec.end_effector)
    bodies = np.array(
        [b for b in range(1, model.nbody) if model.body_mass[b] > 0 and model.body_mocapid[b] < 0], dtype=int
    )
    return ContractBinding(
        qpos_address=np.array(qpos, dtype=int),
        dof_address=np.array(dofs, dtype=int),
        actuator_id=np.array(actuators, dtype=int),
        site_id=int(site),
        goal_dim=spec.task.goal_dim,
        body_ids=bodies,
    )
