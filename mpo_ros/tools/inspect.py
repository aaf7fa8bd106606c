"""`mpo-ros inspect <file.onnx>`: what a policy file expects of the robot, and where it came from.

Prints the robot contract (joints with limits, control rate, observation layout, action scaling,
task) and provenance from the file's metadata, then whether the file passes the robot's own load
checks (:class:`mpo_ros.robot.onnx_policy.OnnxPolicy`). Exit status 0 when it does, 2 when it does not, so a
deployment script can gate on it. Needs only numpy + onnxruntime, like the robot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import onnxruntime as ort

from mpo_ros.contract.policy_file import NotOnnxError, decode_metadata
from mpo_ros.contract.spec import COMMAND_UNITS, RobotSpec
from mpo_ros.errors import PolicyFileError

__all__ = ["add_arguments", "describe", "format_report", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="ONNX policy file written by `mpo-ros export`")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def describe(path: str | Path) -> dict[str, Any]:
    """Everything `inspect` shows, as a JSON-ready dict.

    Raises PolicyFileError when the file is unreadable or has no mpo_ros metadata; a file that has
    metadata but fails a load check is described, with ``valid: false`` and the ``problem``.
    """
    from mpo_ros.robot.onnx_policy import OnnxPolicy

    path = Path(path)
    if not path.is_file():
        raise PolicyFileError(f"policy file {path} does not exist")
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise NotOnnxError(f"{path} is not a loadable ONNX model ({str(exc).strip()[:300]})") from exc
    metadata = decode_metadata(dict(session.get_modelmeta().custom_metadata_map), str(path))
    info: dict[str, Any] = {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "inputs": {i.name: list(i.shape) for i in session.get_inputs()},
        "outputs": {o.name: list(o.shape) for o in session.get_outputs()},
        **metadata.to_dict(),
    }
    try:
        OnnxPolicy(path, warmup_calls=1)
        info.update(valid=True, problem=None, deployable=metadata.robot_spec is not None)
    except PolicyFileError as exc:
        info.update(valid=False, problem=str(exc), deployable=False)
    return info


def format_report(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe`'s dict."""
    lines = [
        f"policy      {info['path']}  ({info['size_bytes'] / 1024:.1f} KiB, sha256 {info['sha256'][:16]}...)"
    ]
    status = "OK" if info["valid"] else f"INVALID: {info['problem']}"
    if info["valid"] and not info["deployable"]:
        status += " (no robot contract: evaluation only, the ROS node refuses it)"
    lines.append(f"status      {status}")
    graph = ", ".join(f"{k} {v}" for k, v in info["inputs"].items())
    graph += " -> " + ", ".join(f"{k} {v}" for k, v in info["outputs"].items())
    lines.append(f"graph       {graph}, metadata format {info['format_version']}")
    spec_data = info["robot_spec"]
    if spec_data is not None:
        lines += _contract_lines(RobotSpec.from_dict(spec_data))
    lines.append(
        f"observation ({len(info['observation_names'])} values, raw; the normaliser is in the graph)"
    )
    lines += [f"  {i:3d}  {name}" for i, name in enumerate(info["observation_names"])]
    lines.append("provenance")
    width = max((len(k) for k in info["provenance"]), default=0)
    lines += [f"  {k:<{width}}  {_short(v)}" for k, v in sorted(info["provenance"].items())]
    return "\n".join(lines)


def _action_lines(spec: RobotSpec) -> list[str]:
    """How an action becomes a command, in the units of the contract's interface."""
    if spec.velocity_commands:
        mapping = "velocity command (rad/s) = action_scale * action, action in [-1, 1];"
        bounds = (
            "clipped to +-velocity_limit, to +-max_delta (rad/s) per step, and to the braking bound that "
            "stops each joint inside [lower, upper]"
        )
    else:
        mapping = f"{spec.action_mode}: command (rad) = default + action_scale * action, action in [-1, 1];"
        bounds = "clipped to [lower, upper] and to +-max_delta (rad) per step"
    if spec.action_filter == "lowpass":
        filtered = (
            f"low-pass filtered (cutoff {spec.action_filter_cutoff_hz:g} Hz, alpha {spec.filter_alpha:.4f} per "
            f"step), then {bounds}"
        )
    else:
        filtered = f"no action filter; {bounds}"
    return [f"action      {mapping}", f"            {filtered}"]


def _contract_lines(spec: RobotSpec) -> list[str]:
    unit = COMMAND_UNITS[spec.command_interface]
    lines = [
        f"robot       {spec.name} (contract version {spec.contract_version})",
        f"control     {spec.control_rate_hz:g} Hz (period {spec.control_period * 1e3:g} ms), "
        f"{spec.physics_substeps} physics substeps per step in simulation",
        *_action_lines(spec),
        f"interface   {spec.command_interface} commands (ros2_control); goals in frame '{spec.task.goal_frame}'",
        f"joints      (lower/upper/default rad, vel_limit rad/s; scale and max_delta in {unit})",
        f"  {'name':<16} {'lower':>9} {'upper':>9} {'default':>9} {'scale':>9} {'max_delta':>9} {'vel_limit':>9}",
    ]
    for j in spec.joints:
        lines.append(
            f"  {j.name:<16} {j.lower:>9.4g} {j.upper:>9.4g} {j.default:>9.4g} {j.action_scale:>9.4g} "
            f"{j.max_delta:>9.4g} {j.velocity_limit:>9.4g}"
        )
    task = spec.task
    lines.append(
        f"task        {task.name}: goal in {list(task.goal_low)} .. {list(task.goal_high)}, success below "
        f"{task.success_threshold:g}, episode {task.episode_seconds:g} s ({spec.episode_steps} steps)"
    )
    if task.params:
        lines.append("            " + ", ".join(f"{k}={v:g}" for k, v in sorted(task.params.items())))
    return lines


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    info = describe(args.policy)
    if args.json:
        out.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
    else:
        out.write(format_report(info) + "\n")
    return 0 if info["valid"] else 2
