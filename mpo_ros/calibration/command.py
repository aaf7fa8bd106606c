"""`mpo-ros calibrate`: fit the simulator to a robot's logs (real2sim) with mujoco.sysid.

    mpo-ros calibrate --bag excite_bag/ --robot arm2 --out calib/
    mpo-ros train --env-kwargs '{robot: calib/calibrated.yaml, randomize: calib/profile.yaml}' ...

Reads rosbag2 recordings (--bag; what `mpo-ros excite` records) or converted datasets (--data),
splits them into continuous segments, holds out the end of each for validation, fits the chosen
parameters (see mpo_ros.calibration.fit) and writes the outputs of mpo_ros.calibration.outputs.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mpo_ros.calibration.fit import (
    DEFAULT_PARAMETERS,
    JOINT_QUANTITIES,
    LATENCY,
    FitResult,
    fit,
    parameter_names,
)
from mpo_ros.calibration.logs import (
    LogSegment,
    LogTopics,
    check_excitation,
    load_bag_segments,
    load_dataset_segments,
    split_train_validation,
)
from mpo_ros.calibration.outputs import write_outputs
from mpo_ros.contract.spec import RobotSpec, load_spec
from mpo_ros.errors import CalibrationError, ConfigError

__all__ = ["CalibrateConfig", "add_arguments", "calibrate", "run"]

log = logging.getLogger(__name__)


@dataclass
class CalibrateConfig:
    """Options of `mpo-ros calibrate` (one field per flag)."""

    robot: str
    out: str
    bag: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    # Quantities (armature, damping, frictionloss, kp, kv, latency) or '<joint>/<quantity>'.
    params: list[str] = field(default_factory=lambda: list(DEFAULT_PARAMETERS))
    joint_states_topic: str = "/joint_states"
    command_topic: str = "/forward_position_controller/commands"
    # Fraction of each segment's end held out for validation.
    validation_fraction: float = 0.25
    # Segments shorter than this are skipped; the whole training set must be 4x as long.
    min_segment_seconds: float = 2.0
    # Profile ranges for what the logs do not identify.
    base_profile: str = "train"
    # Narrowest relative half-width of a fitted range in profile.yaml.
    min_relative_range: float = 0.05
    max_iterations: int = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = CalibrateConfig(robot="", out="")
    parser.add_argument("--robot", required=True, help="robot spec YAML or shipped name (e.g. arm2)")
    parser.add_argument("--out", required=True, help="output folder (calibrated.yaml, parameters.json, ...)")
    parser.add_argument(
        "--bag", nargs="+", default=[], help="rosbag2 recording(s) with /joint_states + commands"
    )
    parser.add_argument(
        "--data", nargs="+", default=[], help="converted dataset folder(s) (mpo-ros bag2data)"
    )
    parser.add_argument(
        "--params",
        nargs="+",
        default=defaults.params,
        help=f"what to fit: {[*list(JOINT_QUANTITIES), LATENCY]} (all joints) or '<joint>/<quantity>'",
    )
    parser.add_argument("--joint-states-topic", default=defaults.joint_states_topic)
    parser.add_argument("--command-topic", default=defaults.command_topic)
    parser.add_argument("--validation-fraction", type=float, default=defaults.validation_fraction)
    parser.add_argument("--min-segment-seconds", type=float, default=defaults.min_segment_seconds)
    parser.add_argument("--base-profile", default=defaults.base_profile, help="ranges of unfitted quantities")
    parser.add_argument("--min-relative-range", type=float, default=defaults.min_relative_range)
    parser.add_argument("--max-iterations", type=int, default=defaults.max_iterations)


def run(args: argparse.Namespace) -> int:
    config = CalibrateConfig(
        **{k: v for k, v in vars(args).items() if k in CalibrateConfig.__dataclass_fields__}
    )
    result = calibrate(config)
    print(
        f"validation RMSE {result.validation_rmse_before:.4g} rad -> {result.validation_rmse_after:.4g} rad; "
        f"latency {result.latency_s * 1e3:.1f} ms; outputs in {config.out}"
    )
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0


def calibrate(config: CalibrateConfig) -> FitResult:
    """Load, check, fit and write; raises CalibrationError naming what the logs cannot support."""
    if not config.bag and not config.data:
        raise ConfigError("give the logs to calibrate from: --bag DIR... or --data DIR...")
    spec = load_spec(config.robot)
    spec.require_position_interface(
        "mpo-ros calibrate",
        "The fit replays logged position commands through <position> servos (kp, kv); velocity commands and "
        "<velocity> servos are not modelled yet. Calibrate a position-controlled configuration of the robot, "
        "or tune the velocity servos' kv, joint damping and friction by hand against a recording.",
    )
    names = parameter_names(spec, config.params)
    segments = _load(config, spec)
    train, validation = split_train_validation(segments, config.validation_fraction)
    total = sum(s.duration for s in train)
    needed = 4 * config.min_segment_seconds
    if total < needed:
        raise CalibrationError(
            f"only {total:.1f} s of usable log for training (need >= {needed:.1f} s) to fit {names}; record "
            "longer excitation (mpo-ros excite --duration 60)"
        )
    check_excitation(spec, train, names)
    log.info(
        "fitting %s on %d segment(s), %.1f s (validation %.1f s)",
        names,
        len(train),
        total,
        sum(s.duration for s in validation),
    )
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    result = fit(spec, train, validation, names, config.max_iterations, html_report=out / "sysid_report.html")
    sources = [str(p) for p in config.bag + config.data]
    write_outputs(spec, result, out, config.base_profile, config.min_relative_range, sources)
    return result


def _load(config: CalibrateConfig, spec: RobotSpec) -> list[LogSegment]:
    topics = LogTopics(config.joint_states_topic, config.command_topic)
    segments: list[LogSegment] = []
    for path in config.bag:
        segments += load_bag_segments(path, spec, topics, config.min_segment_seconds)
    for path in config.data:
        segments += load_dataset_segments(path, spec, config.min_segment_seconds)
    if not segments:
        raise CalibrationError(
            f"no continuous stretch of at least {config.min_segment_seconds} s in {config.bag + config.data}; "
            "the logs are too short or full of gaps"
        )
    return segments
