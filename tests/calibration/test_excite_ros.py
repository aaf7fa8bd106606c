"""`mpo-ros excite` against `mpo-ros sim-robot`: real rclpy processes on a private ROS domain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from mpo_ros.calibration.command import CalibrateConfig, calibrate
from mpo_ros.calibration.logs import LogTopics, load_bag_segments
from mpo_ros.contract.spec import RobotSpec, load_spec
from mpo_ros.data.bag_reader import open_bag
from mpo_ros.ros import processes

REPO = Path(__file__).resolve().parents[2]
DOMAIN = processes.free_domain_id(salt=37)


def _excite(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mpo_ros.cli", "excite", *args],
        cwd=REPO,
        env=processes.ros_env(DOMAIN),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("clock", ["wall", "sim"])
def test_excite_runs_against_sim_robot_and_returns_to_the_start_pose(tmp_path: Path, clock: str) -> None:
    spec = load_spec("arm2")
    sim_time = ["--use-sim-time"] if clock == "sim" else []
    sim = processes.NodeProcess(
        "sim-robot",
        ["--robot", "arm2", "--goal-period", "0", *sim_time],
        tmp_path / "sim.log",
        DOMAIN,
        cwd=REPO,
    )
    try:
        assert sim.wait_for_log("robot 'arm2'", timeout=60), sim.log()
        bag = tmp_path / "excite"
        done = _excite(
            ["--robot", "arm2", "--record", str(bag), "--duration", "3", "--ramp-seconds", "0.5", *sim_time],
            timeout=120,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    finally:
        sim.stop()
    assert (bag / "metadata.yaml").is_file()  # closed properly
    with open_bag(bag) as opened:
        _, first_ns, _ = next(iter(opened.messages([LogTopics().joint_states])))
    assert (first_ns < 3600 * 10**9) == (
        clock == "sim"
    )  # sim time starts at 0, the wall clock in 1970 + 56 y
    segments = load_bag_segments(bag, spec, LogTopics(), min_seconds=1.0)
    commands = np.concatenate([s.commands for s in segments])
    positions = np.concatenate([s.positions for s in segments])
    # The safety filter's slew limit holds on every published step, and the joints really moved.
    assert np.all(np.abs(np.diff(commands, axis=0)) <= spec.joint_arrays.max_delta + 1e-9)
    assert np.all(np.std(positions, axis=0) > 0.02)
    # Ends where it started (sim-robot starts at the default pose) and stays in the joint limits.
    np.testing.assert_allclose(commands[-1], commands[0], atol=1e-3)
    assert np.all(commands >= spec.joint_arrays.lower) and np.all(commands <= spec.joint_arrays.upper)
    assert sum(s.duration for s in segments) > 3.0


def test_excite_without_joint_states_stops_and_closes_the_recording(tmp_path: Path) -> None:
    bag = tmp_path / "nothing"
    done = _excite(
        ["--robot", "arm2", "--record", str(bag), "--duration", "2", "--start-timeout", "1.5"], timeout=60
    )
    assert done.returncode == 1
    assert "no /joint_states" in done.stdout + done.stderr
    assert (bag / "metadata.yaml").is_file()


def test_excite_then_calibrate_recovers_a_perturbed_sim_robot(
    tmp_path: Path, real_robot: tuple[RobotSpec, dict]
) -> None:
    # The whole ROS round trip: sim-robot runs the secretly perturbed arm2 (on /clock, at a quarter of real
    # time so commands do not miss physics ticks on a loaded machine), excite records, calibrate fits.
    spec, truth = real_robot
    sim = processes.NodeProcess(
        "sim-robot",
        [
            *("--robot", str(Path(spec.source_dir) / f"{spec.name}_real.yaml"), "--goal-period", "0"),
            *("--use-sim-time", "--realtime-factor", "0.25"),
        ],
        tmp_path / "sim.log",
        DOMAIN,
        cwd=REPO,
    )
    try:
        assert sim.wait_for_log("robot 'arm2'", timeout=60), sim.log()
        bag = tmp_path / "excite"
        done = _excite(
            ["--robot", "arm2", "--record", str(bag), "--duration", "6", "--use-sim-time"], timeout=180
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    finally:
        sim.stop()
    result = calibrate(
        CalibrateConfig(
            robot="arm2",
            out=str(tmp_path / "calib"),
            bag=[str(bag)],
            params=["damping", "kp", "armature", "latency"],
            min_segment_seconds=1.0,
        )
    )
    for name, true_value in truth.items():
        assert abs(result.parameters[name].value - true_value) <= 0.10 * true_value, (
            name,
            result.parameters[name],
        )
    assert round(result.latency_s / spec.control_period) == 0  # sim-robot adds no latency
