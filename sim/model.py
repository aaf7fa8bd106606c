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

from mpo_ros.contract.spec import RobotSpec, models_dir
from mpo_ros.errors import SpecError

__all__ = ["ContractBinding", "bind", "load_model", "mjcf_path"]

# Relative tolerance between the spec's control rate and 1 / (timestep * physics_substeps).
_RATE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ContractBinding:
    """Indices of the contract's joints (in contract order) inside one MjModel."""

    qpos_address: np.ndarray  # [n] int, into data.qpos
    dof_address: np.ndarray  # [n] int, into data.qvel / model.dof_*
    actuator_id: np.ndarray  # [n] int, the position actuator driving each joint
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


def mjcf_path(spec: RobotSpec) -> Path:
    """The spec's MJCF; a spec without a folder (e.g. read from ONNX metadata) looks in models/."""
    if spec.source_dir or Path(spec.mjcf).is_absolute():
        return spec.mjcf_path
    return models_dir() / spec.mjcf


def bind(spec: RobotSpec, model: mujoco.MjModel) -> ContractBinding:
    """Look up the contract's names in the model and check that the two agree."""
    qpos, dofs, actuators = [], [], []
    for joint in spec.joints:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint.name)
        if jid < 0:
            names = [model.joint(i).name for i in range(model.njnt)]
            raise SpecError(
                f"robot '{spec.name}': joint '{joint.name}' is not in {spec.mjcf}; it has {names}"
            )
        if int(model.jnt_type[jid]) not in (
            int(mujoco.mjtJoint.mjJNT_HINGE),
            int(mujoco.mjtJoint.mjJNT_SLIDE),
        ):
            raise SpecError(f"robot '{spec.name}': joint '{joint.name}' must be a hinge or slide joint")
        if model.jnt_limited[jid]:
            lo, hi = model.jnt_range[jid]
            if joint.lower < lo - 1e-9 or joint.upper > hi + 1e-9:
                raise SpecError(
                    f"robot '{spec.name}': joint '{joint.name}' limits [{joint.lower}, {joint.upper}] in the "
                    f"spec exceed the MJCF range [{lo}, {hi}]; narrow the spec or widen the MJCF"
                )
        driving = [
            a
            for a in range(model.nu)
            if int(model.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT)
            and model.actuator_trnid[a, 0] == jid
        ]
        if len(driving) != 1:
            raise SpecError(
                f"robot '{spec.name}': joint '{joint.name}' needs exactly one <position> actuator in "
                f"{spec.mjcf}, found {len(driving)}"
            )
        if int(model.actuator_gaintype[driving[0]]) != int(mujoco.mjtGain.mjGAIN_FIXED) or int(
            model.actuator_biastype[driving[0]]
        ) != int(mujoco.mjtBias.mjBIAS_AFFINE):
            raise SpecError(
                f"robot '{spec.name}': the actuator of joint '{joint.name}' must be a <position> servo "
                "(fixed gain kp, affine bias -kp q - kv qdot)"
            )
        qpos.append(model.jnt_qposadr[jid])
        dofs.append(model.jnt_dofadr[jid])
        actuators.append(driving[0])
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, spec.end_effector)
    if site < 0:
        names = [model.site(i).name for i in range(model.nsite)]
        raise SpecError(
            f"robot '{spec.name}': end_effector site '{spec.end_effector}' is not in {spec.mjcf}; sites: {names}"
        )
    if not 1 <= spec.task.goal_dim <= 3:
        raise SpecError(f"robot '{spec.name}': a reach goal has 1 to 3 coordinates, got {spec.task.goal_dim}")
    rate = 1.0 / (model.opt.timestep * spec.physics_substeps)
    if abs(rate - spec.control_rate_hz) > _RATE_TOLERANCE * spec.control_rate_hz:
        raise SpecError(
            f"robot '{spec.name}': control_rate_hz {spec.control_rate_hz} does not match the MJCF timestep "
            f"{model.opt.timestep} s x physics_substeps {spec.physics_substeps} (= {rate:.6g} Hz)"
        )
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
