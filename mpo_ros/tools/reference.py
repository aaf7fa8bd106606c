"""Generate the README's configuration reference from the command dataclasses.

The CLI flags, YAML keys and ROS parameters are the dataclass fields, so the reference is produced from
them rather than typed by hand: `python -m mpo_ros.tools.reference` prints it, and a test fails when the README's
copy drifts from the code.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys

__all__ = ["COMMAND_CONFIGS", "render"]

BEGIN = "<!-- BEGIN CONFIG REFERENCE (python -m mpo_ros.tools.reference) -->"
END = "<!-- END CONFIG REFERENCE -->"

# command as a user types it -> "module:ConfigClass"
COMMAND_CONFIGS: dict[str, str] = {
    "mpo-ros train": "mpo_ros.training.config:TrainConfig",
    "mpo-ros eval": "mpo_ros.training.evaluate:EvalConfig",
    "mpo-ros export": "mpo_ros.training.export:ExportConfig",
    "mpo-ros bag2data": "mpo_ros.data.convert:Bag2DataConfig",
    "mpo-ros serve / policy_node (ROS parameters)": "mpo_ros.ros.policy_node:PolicyNodeConfig",
    "mpo-ros sim-robot / sim_node (ROS parameters)": "mpo_ros.ros.sim_node:SimNodeConfig",
}


def _load(target: str) -> type:
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        return "(required)"
    return f"`{value!r}`"


def render() -> str:
    """Markdown: one table per command; key = YAML key / ROS parameter, flag = CLI spelling."""
    lines = [BEGIN, ""]
    for command, target in COMMAND_CONFIGS.items():
        cls = _load(target)
        lines += [f"#### `{command}`", "", "| key | flag | default | meaning |", "|---|---|---|---|"]
        for field in dataclasses.fields(cls):
            if field.metadata.get("cli", True) is False:
                continue
            help_text = str(field.metadata.get("help", "")).replace("|", "\\|")
            flag = "--" + field.name.replace("_", "-")
            lines.append(f"| `{field.name}` | `{flag}` | {_default(field)} | {help_text} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render() + "\n")
