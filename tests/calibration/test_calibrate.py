"""Known-truth recovery: calibrate the nominal arm2 against logs of a secretly perturbed arm2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest
from calibration_truth import LATENCY_STEPS, PERTURBATION
from mpo_ros_sim.model import mjcf_path
from mpo_ros_sim.randomization import load_profile
from mpo_ros_sim.reach_env import RobotReachEnv

from mpo_ros.calibration.command import CalibrateConfig, calibrate
from mpo_ros.calibration.fit import FitResult, FittedParameter
from mpo_ros.calibration.outputs import calibrated_profile
from mpo_ros.contract.spec import RobotSpec, load_spec
from mpo_ros.data.convert import Bag2DataConfig, convert_bags
from mpo_ros.data.scripted import record_scripted_bag

REPO = Path(__file__).resolve().parents[2]


def test_recovers_perturbed_parameters_and_latency(
    tmp_path: Path, excitation_bag: Path, real_robot: tuple[RobotSpec, dict], nominal_spec: RobotSpec
) -> None:
    _, truth = real_robot
    result = calibrate(CalibrateConfig(robot="arm2", out=str(tmp_path / "out"), bag=[str(excitation_bag)]))
    for name, true_value in truth.items():
        fitted = result.parameters[name]
        assert abs(fitted.value - true_value) <= 0.10 * true_value, (name, fitted.value, true_value)
        # The start value (nominal) is outside 10 % of the truth, so this is a real recovery.
        assert abs(fitted.nominal - true_value) > 0.10 * true_value
    assert round(result.latency_s / nominal_spec.control_period) == LATENCY_STEPS
    assert result.validation_rmse_after < 0.3 * result.validation_rmse_before
    assert not result.warnings


def test_cli_writes_a_usable_robot_profile_and_report(
    tmp_path: Path, excitation_bag: Path, real_robot: tuple[RobotSpec, dict]
) -> None:
    _, truth = real_robot
    out = tmp_path / "calib"
    env = dict(os.environ, MUJOCO_GL="disable")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mpo_ros.cli", "calibrate", "--bag", str(excitation_bag)),
            *("--robot", "arm2", "--out", str(out), "--params", "damping", "kp", "armature", "latency"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((out / "parameters.json").read_text())
    assert set(document) == {"parameters", "latency_s", "validation_rmse"}
    assert set(document["parameters"]) == set(truth)
    for name, entry in document["parameters"].items():
        assert set(entry) == {"value", "nominal", "ci_low", "ci_high"}
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
        assert abs(entry["value"] - truth[name]) <= 0.10 * truth[name]
    assert document["validation_rmse"]["after"] < document["validation_rmse"]["before"]

    # calibrated.yaml is a robot spec whose MJCF carries the fitted values.
    calibrated = load_spec(out / "calibrated.yaml")
    model = mujoco.MjModel.from_xml_path(str(mjcf_path(calibrated)))
    for j, joint in enumerate(calibrated.joint_names):
        assert model.dof_damping[j] == pytest.approx(
            document["parameters"][f"{joint}/damping"]["value"], rel=1e-5
        )
        assert model.actuator_gainprm[j, 0] == pytest.approx(
            document["parameters"][f"{joint}/kp"]["value"], rel=1e-5
        )

    # profile.yaml is a randomisation profile carrying the latency, usable by the environment.
    profile = load_profile(out / "profile.yaml")
    assert profile is not None
    assert profile.latency_steps.low == profile.latency_steps.high == LATENCY_STEPS
    assert profile.joint_damping_scale.low < 1.0 < profile.joint_damping_scale.high
    env_ = RobotReachEnv(robot=str(out / "calibrated.yaml"), randomize=str(out / "profile.yaml"))
    try:
        env_.reset(seed=0)
        _, reward, *_ = env_.step(np.zeros(calibrated.action_dim, dtype=np.float32))
        assert np.isfinite(reward)
    finally:
        env_.close()
    assert (out / "report.png").stat().st_size > 10_000
    assert "validation" in (out / "report.md").read_text().lower()
    assert "<html" in (out / "sysid_report.html").read_text()[:2000].lower()

    # The chain continues: train --robot <calibrated> --randomize <profile> -> export (whose
    # parity check rebuilds the environment from the calibrated contract and its MJCF) -> inspect.
    def cli(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "mpo_ros.cli", "--log-level", "WARNING", *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout

    cli(
        *("train", "--robot", str(out / "calibrated.yaml"), "--env-kwargs", f"{{randomize: {out / 'profile.yaml'}}}"),
        *("--steps", "300", "--warmup-steps", "150", "--eval-every", "0", "--batch-size", "32"),
        *("--policy-hidden", "16", "16", "--critic-hidden", "16", "16", "--out", str(tmp_path / "run")),
    )  # fmt: skip
    exported = cli("export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "calibrated.onnx"))
    # The checkpoint's contract names calibrated.xml without a folder; export finds it where training did.
    assert "from rolling the policy in mpo_ros_sim:Reach-v0" in exported, exported
    shown = cli("inspect", str(tmp_path / "calibrated.onnx"))
    assert "status      OK" in shown and "50 Hz" in shown, shown


def test_perturbation_is_large_enough_to_matter() -> None:
    # Guards the known-truth test: every perturbed quantity moves by more than the 10 % tolerance.
    assert all(abs(factor - 1.0) > 0.1 for factor in PERTURBATION.values())


def test_recovers_parameters_from_a_converted_dataset(
    tmp_path: Path, real_robot: tuple[RobotSpec, dict]
) -> None:
    # Scripted reaches on the real robot, logged as a robot would and converted by bag2data.
    spec, truth = real_robot
    record_scripted_bag(spec, tmp_path / "bag", episodes=12, seed=3)
    dataset, _ = convert_bags(
        Bag2DataConfig(bags=[str(tmp_path / "bag")], robot="arm2", out=str(tmp_path / "ds"), progress=False)
    )
    result = calibrate(
        CalibrateConfig(
            robot="arm2",
            out=str(tmp_path / "out"),
            data=[str(dataset)],
            params=["damping", "kp", "armature", "latency"],
            min_segment_seconds=1.0,  # reach episodes last 1.5 s
        )
    )
    for name, true_value in truth.items():
        assert abs(result.parameters[name].value - true_value) <= 0.10 * true_value, name
    assert round(result.latency_s / spec.control_period) == 0
    assert result.validation_rmse_after < 0.1 * result.validation_rmse_before


@pytest.mark.parametrize(
    "latency_periods,steps,fraction",
    [(0.98, 1, (0.0, 0.23)), (1.0, 1, (0.0, 0.25)), (0.5, 0, (0.25, 0.75)), (0.0, 0, (0.0, 0.25))],
)
def test_profile_latency_covers_the_fit(
    nominal_spec: RobotSpec, latency_periods: float, steps: int, fraction: tuple[float, float]
) -> None:
    period = nominal_spec.control_period
    latency = FittedParameter(
        "latency", latency_periods * period, 0.0, latency_periods * period, latency_periods * period, True
    )
    result = FitResult({"latency": latency}, latency.value, 0.01, 0.001)
    profile = calibrated_profile(nominal_spec, result, "none", 0.05)
    assert profile.latency_steps.low == profile.latency_steps.high == steps
    assert (profile.latency_fraction.low, profile.latency_fraction.high) == pytest.approx(fraction)
