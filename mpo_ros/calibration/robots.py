"""Write a robot with changed joint and servo parameters: an MJCF beside a contract YAML.

One function serves both directions of real2sim: `calibrate` writes the fitted robot, and the tests
and the benchmark write a secretly perturbed "real robot" to calibrate against. The contract is the
original one (same name, joints, limits, rate), so policies trained on the written robot keep the
real robot's contract; only its `mjcf` points at the new file. The MJCF is produced by `MjSpec`
(`to_xml`), so everything not overridden is the original model.
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import yaml
from mpo_ros_sim.model import bind, mjcf_path

from mpo_ros.contract.spec import RobotSpec, load_spec
from mpo_ros.errors import CalibrationError

__all__ = ["nominal_values", "scaled_values", "write_robot"]


def nominal_values(spec: RobotSpec) -> dict[str, float]:
    """{'<joint>/<quantity>': value} of every joint as the robot's MJCF has them (the fit's start)."""
    model = mujoco.MjModel.from_xml_path(str(mjcf_path(spec)))
    binding = bind(spec, model)
    out = {}
    for j, joint in enumerate(spec.joint_names):
        dof, act = int(binding.dof_address[j]), int(binding.actuator_id[j])
        out[f"{joint}/armature"] = float(model.dof_armature[dof])
        out[f"{joint}/damping"] = float(model.dof_damping[dof])
        out[f"{joint}/frictionloss"] = float(model.dof_frictionloss[dof])
        out[f"{joint}/kp"] = float(model.actuator_gainprm[act, 0])
        out[f"{joint}/kv"] = float(-model.actuator_biasprm[act, 2])
    return out


def scaled_values(spec: RobotSpec, scales: dict[str, float]) -> dict[str, float]:
    """{'<joint>/<quantity>': value} = nominal x scale for every joint, e.g. {'damping': 1.6}."""
    nominal = nominal_values(spec)
    return {
        f"{joint}/{quantity}": nominal[f"{joint}/{quantity}"] * factor
        for joint in spec.joint_names
        for quantity, factor in scales.items()
    }


def write_robot(
    spec: RobotSpec, values: dict[str, float], out_dir: str | Path, stem: str, header: str = ""
) -> Path:
    """Write `<stem>.xml` (MJCF with `values` applied) and `<stem>.yaml` (the contract); return the YAML."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = mjcf_path(spec)
    mjspec = mujoco.MjSpec.from_file(str(source))
    model = mjspec.compile()
    binding = bind(spec, model)
    for name, value in values.items():
        joint, quantity = name.split("/")
        if joint not in spec.joint_names:
            raise CalibrationError(f"cannot write '{name}': no joint '{joint}' in robot '{spec.name}'")
        if quantity == "damping":
            mjspec.joint(joint).damping[0] = float(value)  # [linear, higher-order terms]
            continue
        if quantity in ("armature", "frictionloss"):
            setattr(mjspec.joint(joint), quantity, float(value))
            continue
        actuator = mjspec.actuators[int(binding.actuator_id[spec.joint_names.index(joint)])]
        if quantity == "kp":
            actuator.gainprm[0] = float(value)
            actuator.biasprm[1] = -float(value)
        elif quantity == "kv":
            actuator.biasprm[2] = -float(value)
        else:
            raise CalibrationError(f"cannot write '{name}': unknown quantity '{quantity}'")
    # Assets stay where they were: point the copy's asset folders at the original's.
    if mjspec.meshes or mjspec.textures or mjspec.hfields:
        mjspec.meshdir = str((source.parent / mjspec.meshdir).resolve())
        mjspec.texturedir = str((source.parent / mjspec.texturedir).resolve())
    (out / f"{stem}.xml").write_text(mjspec.to_xml())
    contract = spec.to_dict()
    contract["mjcf"] = f"{stem}.xml"
    path = out / f"{stem}.yaml"
    path.write_text(header + yaml.safe_dump(contract, sort_keys=False))
    load_spec(path)  # refuse to leave behind a robot that does not load
    return path
