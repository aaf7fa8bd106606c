"""A secretly perturbed arm2 ("the real robot") and excitation logs recorded from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from calibration_truth import LATENCY_STEPS, PERTURBATION

from mpo_ros.calibration.record import record_sim_excitation
from mpo_ros.calibration.robots import scaled_values, write_robot
from mpo_ros.calibration.signals import ExcitationConfig
from mpo_ros.contract.spec import RobotSpec, load_spec


@pytest.fixture(scope="session")
def nominal_spec() -> RobotSpec:
    return load_spec("arm2")


@pytest.fixture(scope="session")
def real_robot(tmp_path_factory: pytest.TempPathFactory, nominal_spec: RobotSpec) -> tuple[RobotSpec, dict]:
    """The perturbed arm2 (its MJCF written beside a copy of the contract) and its true values."""
    truth = scaled_values(nominal_spec, PERTURBATION)
    path = write_robot(nominal_spec, truth, tmp_path_factory.mktemp("real_robot"), "arm2_real")
    return load_spec(path), truth


@pytest.fixture(scope="session")
def excitation_bag(tmp_path_factory: pytest.TempPathFactory, real_robot: tuple[RobotSpec, dict]) -> Path:
    """20 s of multisine excitation of the real robot with one period of latency and sensor noise."""
    spec, _ = real_robot
    path = tmp_path_factory.mktemp("logs") / "excite"
    record_sim_excitation(
        spec, path, ExcitationConfig(duration=20.0), latency_steps=LATENCY_STEPS, position_noise=0.001
    )
    return path
