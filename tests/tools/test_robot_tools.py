"""`mpo-ros robot init | check` on a robot the test writes itself (not arm2, arm6 or ur5e)."""

from __future__ import annotations

import yaml
from own_robot import write_trident

from mpo_ros import cli
from mpo_ros.contract.spec import load_spec


def test_init_writes_a_contract_that_checks_and_simulates(tmp_path, capsys) -> None:
    mjcf = write_trident(tmp_path / "robot")
    out = tmp_path / "robot" / "trident.yaml"
    argv = ["robot", "init", "--mjcf", str(mjcf), "--end-effector", "tip", "--keyframe", "ready", "--rate", "100",
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    data = yaml.safe_load(out.read_text())
    assert [j["name"] for j in data["joints"]] == ["j1", "j2", "j3"]
    assert [j["default"] for j in data["joints"]] == [-0.5, 1.2, 0.6]  # the keyframe
    assert data["joints"][1]["lower"] == -2.2 and data["joints"][1]["upper"] == 2.2  # the MJCF range
    # 100 Hz is 4 substeps of 2.5 ms; the slew limit is velocity_limit / rate.
    assert data["control_rate_hz"] == 100.0 and data["physics_substeps"] == 4
    assert abs(data["joints"][0]["max_delta"] - 3.141592653589793 / 100) < 1e-6
    assert data["mjcf"] == "trident.xml" and len(data["task"]["goal_low"]) == 2  # planar: x-y goals
    assert cli.main(["robot", "check", str(out)]) == 0
    assert "ok" in capsys.readouterr().out
    # The written contract drives a simulated robot as is.
    from mpo_ros_sim.robot_sim import RobotSim

    spec = load_spec(out)
    sim = RobotSim(spec)
    sim.reset()
    sim.step()
    assert sim.joint_positions.shape == (3,)
    # init never overwrites.
    assert cli.main(argv) == 2


def test_check_lists_every_problem_with_its_fix(tmp_path, capsys) -> None:
    mjcf = write_trident(tmp_path / "robot")
    mjcf.write_text(
        mjcf.read_text().replace('<position joint="j3" kp="6" kv="0.4"', '<velocity joint="j3" kv="0.4"')
    )
    out = tmp_path / "robot" / "trident.yaml"
    good = tmp_path / "good.yaml"
    write_trident(tmp_path / "good_robot")
    assert cli.main(["robot", "init", "--mjcf", str(tmp_path / "good_robot" / "trident.xml"), "--end-effector", "tip",
                     "--out", str(good)]) == 0  # fmt: skip
    data = yaml.safe_load(good.read_text())
    data["mjcf"] = "trident.xml"
    data["joints"][0]["name"] = "shoulder"  # not in the MJCF
    data["joints"][1]["upper"] = 3.0  # wider than the MJCF range
    data["physics_substeps"] = 7  # 57 Hz, not the 50 Hz the contract says
    out.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert cli.main(["robot", "check", str(out)]) == 2
    printed = capsys.readouterr().out
    assert "4 problem(s)" in printed
    assert "joint 'shoulder' is not in the MJCF" in printed
    assert "joint 'j2': spec limits [-2.2, 3.0] exceed the MJCF range" in printed
    assert (
        "joint 'j3' is driven by a velocity actuator, but the contract's command_interface is 'position'"
        in printed
    )
    assert "control_rate_hz 50.0 is not what the MJCF timestep 0.0025 s x physics_substeps 7" in printed
    assert "set physics_substeps: 8" in printed
    # Contract-level problems are listed together too.
    data = yaml.safe_load(good.read_text())
    data["joints"][0]["default"] = 9.0
    data["joints"][1]["max_delta"] = -1.0
    data["control_rate_hz"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert cli.main(["robot", "check", str(bad)]) == 2
    printed = capsys.readouterr().out
    assert "3 problem(s)" in printed and "default pose 9.0 lies outside" in printed
    assert "max_delta must be > 0" in printed and "control_rate_hz must be in (0, 10000]" in printed
