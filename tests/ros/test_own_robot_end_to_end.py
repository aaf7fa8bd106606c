"""Bring your own robot, end to end, with no code change: a robot defined only by files outside the
repository (the 3-link "trident" the test writes) goes through

    robot init -> robot check -> train --robot -> eval -> export -> inspect -> sim-robot --robot policy.onnx + serve
    (recorded) -> bag2data --robot policy.onnx -> train --data (offline) -> eval

through the CLI, in separate processes for the ROS 2 part.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")  # trains and exports: not in the Jazzy venv, which runs only the robot side

from own_robot import write_trident
from ros_helpers import NodeProcess, Probe

from mpo_ros import cli
from mpo_ros.contract.resolve import contract_hash
from mpo_ros.contract.spec import RobotSpec, contract_differences, load_spec
from mpo_ros.training.state import load_checkpoint

pytestmark = pytest.mark.ros

TINY = ["--policy-hidden", "16", "--critic-hidden", "16", "--batch-size", "16", "--num-samples", "4",
        "--eval-episodes", "1", "--progress", "false", "--threads", "1"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_robot_from_outside_the_repository_goes_through_every_command(
    tmp_path: Path, capsys, probe: Probe
) -> None:
    robot_dir = tmp_path / "my_robot"
    mjcf = write_trident(robot_dir)
    spec_path = robot_dir / "trident.yaml"
    assert cli.main(["robot", "init", "--mjcf", str(mjcf), "--end-effector", "tip", "--keyframe", "ready",
                     "--out", str(spec_path)]) == 0  # fmt: skip
    assert cli.main(["robot", "check", str(spec_path)]) == 0
    spec = load_spec(spec_path)

    run = tmp_path / "runs" / "trident"
    argv = ["train", "--robot", str(spec_path), "--steps", "400", "--warmup-steps", "100", "--eval-every", "0",
            "--out", str(run), *TINY]  # fmt: skip
    assert cli.main(argv) == 0
    meta = load_checkpoint(run)["metadata"]
    assert meta["env_id"] == "mpo_ros_sim:Reach-v0" and meta["robot"] == "trident"
    assert meta["contract_sha256"] == contract_hash(spec) and meta["mjcf_path"] == str(mjcf.resolve())

    capsys.readouterr()
    assert cli.main(["eval", "--policy", str(run), "--episodes", "2"]) == 0
    assert "mpo_ros_sim:Reach-v0" in capsys.readouterr().out

    deploy = tmp_path / "deploy"  # the policy travels alone, with its MJCF next to it
    deploy.mkdir()
    policy = deploy / "trident.onnx"
    assert cli.main(["export", "--run", str(run), "--out", str(policy), "--parity-observations", "1000"]) == 0
    shutil.copy(mjcf, deploy / "trident.xml")
    capsys.readouterr()
    assert cli.main(["inspect", str(policy)]) == 0
    printed = capsys.readouterr().out
    assert "trident" in printed and "j1" in printed

    bag = tmp_path / "bags" / "rec"
    _record_over_ros(spec_path, policy, bag, tmp_path, probe)

    data = tmp_path / "data" / "trident"
    assert (
        cli.main(["bag2data", str(bag), "--robot", str(policy), "--out", str(data), "--progress", "false"])
        == 0
    )
    stored = RobotSpec.from_dict(json.loads((data / "meta.json").read_text())["robot_spec"])
    assert contract_differences(stored, spec) == []  # the contract came from the policy file

    offline = tmp_path / "runs" / "offline"
    assert cli.main(["train", "--data", str(data), "--steps", "20", "--out", str(offline), *TINY]) == 0
    assert load_checkpoint(offline)["metadata"]["contract_sha256"] == contract_hash(spec)
    assert cli.main(["eval", "--policy", str(offline), "--episodes", "1"]) == 0
    assert yaml.safe_load(spec_path.read_text())["name"] == "trident"


def _record_over_ros(spec_path: Path, policy: Path, bag: Path, tmp_path: Path, probe: Probe) -> None:
    """sim-robot simulates the robot from the policy file's contract (its MJCF found beside it) and records;
    serve drives it with the same file (it needs nothing else); both stop cleanly, the recording closed."""
    import signal

    sim = NodeProcess(
        "sim-robot",
        ["--robot", str(spec_path), "--goal-period", "1.0", "--record", str(bag)],
        tmp_path / "sim.log",
    )
    serve = NodeProcess("serve", ["--policy", str(policy)], tmp_path / "serve.log")
    try:
        assert probe.wait_until(lambda: len(probe.commands) > 10, 60), serve.log() + sim.log()
        ok, message = probe.set_enabled(True)
        assert ok, message + serve.log()
        probe.spin_for(3.0)
        sim.proc.send_signal(signal.SIGINT)
        assert sim.proc.wait(15) == 0, sim.log()
        assert (bag / "metadata.yaml").is_file(), sim.log()
    finally:
        sim.stop()
        serve.stop()
    assert len(probe.commands) > 50 and all(len(c) == 3 for _, c in probe.commands[-10:])
