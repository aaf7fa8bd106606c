"""Tools with a velocity robot: robot init/check, inspect's units, and the clear refusals of the tools that
handle position contracts only (excite, calibrate, the scripted recorder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from velocity_robot import MJCF, write_velocity_robot

from mpo_ros import cli
from mpo_ros.contract.spec import load_spec
from mpo_ros.errors import SpecError


def test_init_detects_velocity_servos_and_writes_a_velocity_contract(tmp_path: Path, capsys) -> None:
    mjcf = tmp_path / "arm2v.xml"
    mjcf.write_text(MJCF)
    out = tmp_path / "arm2v.yaml"
    argv = ["robot", "init", "--mjcf", str(mjcf), "--end-effector", "end_effector", "--velocity-limit", "3.2",
            "--acceleration-limit", "15", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    data = yaml.safe_load(out.read_text())
    assert data["command_interface"] == "velocity"
    shoulder, elbow = data["joints"]
    # The shoulder's ctrlrange (+-3) caps the requested 3.2 rad/s; the elbow's (+-3.5) does not.
    assert shoulder["velocity_limit"] == 3.0 and shoulder["action_scale"] == 3.0
    assert elbow["velocity_limit"] == 3.2 and elbow["action_scale"] == 3.2
    assert shoulder["max_delta"] == pytest.approx(15 / 50) and elbow["max_delta"] == pytest.approx(15 / 50)
    assert (shoulder["lower"], shoulder["upper"]) == (-2.2, 2.2)  # the joint range, not the ctrlrange
    assert "acceleration limit 15 rad/s^2" in out.read_text()
    capsys.readouterr()
    assert cli.main(["robot", "check", str(out)]) == 0, capsys.readouterr().out
    # The written contract drives the simulated velocity robot as is.
    from mpo_ros_sim.reach_env import RobotReachEnv

    env = RobotReachEnv(load_spec(out))
    env.reset(seed=0)
    env.step(np.ones(2))
    np.testing.assert_allclose(env.sim.actuator_targets, [0.3, 0.3])


def test_init_with_the_other_interface_finds_no_joint_and_check_lists_mismatches(
    tmp_path: Path, capsys, caplog
) -> None:
    mjcf = tmp_path / "arm2v.xml"
    mjcf.write_text(MJCF)
    argv = ["robot", "init", "--mjcf", str(mjcf), "--end-effector", "end_effector", "--interface", "position",
            "--out", str(tmp_path / "p.yaml")]  # fmt: skip
    assert cli.main(argv) == 2
    err = caplog.text  # the CLI logs an MpoRosError and exits 2
    assert "no joint driven by a <position> actuator" in err and "shoulder (velocity actuator)" in err
    spec_path = write_velocity_robot(tmp_path / "mismatch", command_interface="position")
    capsys.readouterr()
    assert cli.main(["robot", "check", str(spec_path)]) == 2
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and out.count("is driven by a velocity actuator") == 2


def test_inspect_prints_the_units_of_the_interface(tmp_path: Path, capsys) -> None:
    from mpo_ros.tools.inspect import _contract_lines

    text = "\n".join(_contract_lines(load_spec(write_velocity_robot(tmp_path))))
    assert "velocity command (rad/s) = action_scale * action" in text
    assert "scale and max_delta in rad/s" in text and "braking bound" in text
    position = "\n".join(_contract_lines(load_spec("arm2")))
    assert "command (rad) = default + action_scale * action" in position and "max_delta in rad" in position


def test_position_only_tools_refuse_a_velocity_contract(tmp_path: Path, caplog) -> None:
    spec_path = write_velocity_robot(tmp_path)
    assert cli.main(["excite", "--robot", str(spec_path), "--record", str(tmp_path / "bag")]) == 2
    err = caplog.text
    assert (
        "mpo-ros excite handles position contracts only, but robot 'arm2v' has command_interface: velocity"
        in err
    )
    assert "velocity excitation is not implemented" in err

    from mpo_ros.calibration.command import CalibrateConfig, calibrate

    with pytest.raises(
        SpecError, match=r"mpo-ros calibrate handles position contracts only.*not modelled yet"
    ):
        calibrate(CalibrateConfig(robot=str(spec_path), out=str(tmp_path / "cal"), bag=["unused"]))

    from mpo_ros.data.scripted import record_scripted_bag

    with pytest.raises(SpecError, match="the scripted recorder handles position contracts only"):
        record_scripted_bag(load_spec(spec_path), tmp_path / "scripted")
