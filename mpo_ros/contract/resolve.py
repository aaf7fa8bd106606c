"""``--robot NAME | SPEC.yaml | POLICY.onnx``: one way for every command to name a robot.

A shipped name (``arm2``) or a spec YAML is loaded as is; an exported policy carries its contract in its
metadata, but not its MJCF, which simulation needs: it is looked for at ``--mjcf``, next to the ONNX file,
then in the package's ``models/``, and the error lists every place tried. No table of known robots.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mpo_ros.contract.spec import RobotSpec, load_spec, models_dir
from mpo_ros.errors import SpecError

__all__ = ["contract_hash", "locate_mjcf", "mjcf_location", "read_policy_contract", "resolve_robot"]


def resolve_robot(text: str | RobotSpec, mjcf: str | Path | None = None, need_mjcf: bool = True) -> RobotSpec:
    """The robot contract named by ``text``; ``mjcf`` overrides where its MJCF is (``--mjcf``)."""
    if isinstance(text, RobotSpec):
        spec = text
    elif not text:
        raise SpecError("give the robot with --robot <name | spec.yaml | policy.onnx>")
    elif str(text).endswith(".onnx"):
        spec = read_policy_contract(text)
    else:
        spec = load_spec(text)
    if not need_mjcf and mjcf is None:
        return spec
    near = [Path(str(text)).resolve().parent] if isinstance(text, (str, Path)) else []
    return locate_mjcf(spec, mjcf, near)


def locate_mjcf(spec: RobotSpec, mjcf: str | Path | None = None, near: list[Path] | None = None) -> RobotSpec:
    """``spec`` with a folder its MJCF resolves in: ``mjcf`` (given), the spec's own folder, an absolute
    path, the ``near`` folders (next to a policy file, a recorded path), then the package's models/."""
    if mjcf is not None:
        path = Path(mjcf).resolve()
        if not path.is_file():
            raise SpecError(f"--mjcf {mjcf} does not exist")
        return dataclasses.replace(spec, mjcf=str(path), source_dir=str(path.parent))
    if spec.source_dir and spec.mjcf_path.is_file():
        return spec
    if spec.mjcf and Path(spec.mjcf).is_absolute() and Path(spec.mjcf).is_file():
        return spec
    tried = []
    for folder in [*(near or []), models_dir()]:
        candidate = (
            Path(folder) / Path(spec.mjcf).name if Path(spec.mjcf).is_absolute() else Path(folder) / spec.mjcf
        )
        tried.append(str(candidate))
        if spec.mjcf and candidate.is_file():
            return dataclasses.replace(
                spec,
                mjcf=candidate.name if not Path(spec.mjcf).is_absolute() else str(candidate),
                source_dir=str(candidate.parent),
            )
    raise SpecError(
        f"robot '{spec.name}': its MJCF '{spec.mjcf}' was not found; tried {tried}. Pass --mjcf <file.xml> "
        "or put the MJCF next to the policy file"
    )


def read_policy_contract(path: str | Path) -> RobotSpec:
    """The robot contract inside an exported policy (metadata only: the checksum is verified, the graph is
    not run)."""
    import onnxruntime as ort

    from mpo_ros.contract.policy_file import decode_metadata

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"policy file {path} does not exist")
    file_bytes = path.read_bytes()
    try:
        session = ort.InferenceSession(file_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for non-ONNX bytes
        raise SpecError(
            f"{path} is not a loadable ONNX file ({exc}); re-export it with `mpo-ros export`"
        ) from exc
    props = dict(session.get_modelmeta().custom_metadata_map)
    metadata = decode_metadata(props, str(path), file_bytes=file_bytes)
    if metadata.robot_spec is None:
        raise SpecError(f"{path} carries no robot contract (a plain gym policy); pass the robot's spec YAML")
    return metadata.robot_spec


def contract_hash(spec: RobotSpec) -> str:
    """sha256 of the contract's canonical JSON without the MJCF's location (provenance: which contract)."""
    import hashlib
    import json

    data = spec.to_dict()
    data.pop("mjcf", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def mjcf_location(spec: RobotSpec | None) -> str | None:
    """Where this spec's MJCF was found (absolute), recorded in checkpoints, datasets and ONNX provenance so
    a contract read back later can find it again; None when the spec has no folder (read from JSON)."""
    if spec is None or not spec.mjcf:
        return None
    if spec.source_dir or Path(spec.mjcf).is_absolute():
        return str(spec.mjcf_path.resolve())
    return None
