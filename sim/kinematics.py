"""Forward kinematics of a robot contract's end effector, for relabelling logged data.

The bag converter has joint positions from /joint_states but no end-effector positions; it calls
`end_effector_positions` to compute them with the same MJCF and site the simulator uses, then
`mpo_ros.contract.tasks.reward` to relabel rewards. Kinematics only (no dynamics), so link masses and the
randomisation profile do not matter here.
"""

from __future__ import annotations

import json
from functools import lru_cache

import mujoco
import numpy as np
from mpo_ros_sim.model import ContractBinding, bind, load_model

from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ContractError

__all__ = ["end_effector_positions"]


@lru_cache(maxsize=8)
def _model_for(spec_json: str, source_dir: str) -> tuple[mujoco.MjModel, ContractBinding]:
    spec = RobotSpec.from_dict(json.loads(spec_json), source_dir=source_dir)
    model = load_model(spec)
    return model, bind(spec, model)


def end_effector_positions(spec: RobotSpec, joint_positions: np.ndarray) -> np.ndarray:
    """End-effector site positions [T, goal_dim] (m) for joint positions [T, n] (rad, contract order).

    A single configuration [n] gives [goal_dim]. Joints that are not in the contract stay at the
    MJCF's reference pose.
    """
    positions = np.asarray(joint_positions, dtype=np.float64)
    single = positions.ndim == 1
    positions = np.atleast_2d(positions)
    if positions.ndim != 2 or positions.shape[1] != spec.num_joints:
        raise ContractError(
            f"joint_positions must have shape [T, {spec.num_joints}] in the order {list(spec.joint_names)}, "
            f"got {np.shape(joint_positions)}"
        )
    if not np.all(np.isfinite(positions)):
        raise ContractError("joint_positions contains NaN or inf; drop or repair those samples first")
    model, binding = _model_for(spec.to_json(), spec.source_dir)
    data = mujoco.MjData(model)
    out = np.empty((len(positions), binding.goal_dim))
    for row, q in enumerate(positions):
        data.qpos[binding.qpos_address] = q
        mujoco.mj_kinematics(model, data)
        out[row] = data.site_xpos[binding.site_id, : binding.goal_dim]
    return out[0] if single else out
