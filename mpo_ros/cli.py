"""`mpo-ros <command>`: one entry point; each command lives in the module that does the work.

Commands are imported lazily so that `mpo-ros serve` on a robot never imports torch, and
`mpo-ros train` never imports rclpy.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mpo_ros.errors import MpoRosError

# command -> (module, one-line description). Each module defines
# `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("mpo_ros.training.loop", "train an MPO policy in simulation, from datasets, or both"),
    "eval": ("mpo_ros.training.evaluate", "evaluate a checkpoint or ONNX policy in simulation"),
    "export": ("mpo_ros.training.export", "export a checkpoint to a self-describing ONNX policy"),
    "robot": (
        "mpo_ros.tools.robot",
        "bring your own robot: `robot init` a contract from an MJCF, `robot check` it",
    ),
    "inspect": ("mpo_ros.tools.inspect", "print the contract and provenance of an ONNX policy"),
    "bag2data": ("mpo_ros.data.convert", "convert rosbag2 recordings into a training dataset"),
    "serve": ("mpo_ros.ros.policy_node", "run the ONNX policy as a ROS 2 node"),
    "sim-robot": ("mpo_ros.ros.sim_node", "run a MuJoCo robot behind ROS 2 topics"),
    "excite": (
        "mpo_ros.ros.excite_node",
        "drive a robot with a safe excitation signal and record it (rosbag2)",
    ),
    "calibrate": ("mpo_ros.calibration.command", "fit the simulator to a robot's logs (mujoco.sysid)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpo-ros", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_module, description) in COMMANDS.items():
        # Only the chosen command's module is imported (see main); here we add thin placeholders.
        sub.add_parser(name, help=description, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    known, rest = top.parse_known_args(argv)
    logging.basicConfig(
        level=known.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module_name, description = COMMANDS[known.command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"mpo-ros {known.command}", description=description)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except MpoRosError as exc:
        logging.getLogger("mpo_ros").error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
