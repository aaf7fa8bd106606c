"""A velocity robot through the training pipeline: train (a few hundred steps) -> export -> the policy file
carries the velocity contract and drives the velocity robot through the node's control step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from velocity_robot import write_velocity_robot

from mpo_ros import cli
from mpo_ros.contract.spec import contract_differences, load_spec

TINY = ["--policy-hidden", "16", "--critic-hidden", "16", "--batch-size", "16", "--num-samples", "4",
        "--eval-episodes", "1", "--progress", "false", "--threads", "1"]  # fmt: skip


@pytest.mark.timeout(300)
def test_train_and_export_a_velocity_robot(tmp_path: Path) -> None:
    spec_path = write_velocity_robot(tmp_path / "robot")
    spec = load_spec(spec_path)
    run = tmp_path / "run"
    argv = ["train", "--robot", str(spec_path), "--steps", "300", "--warmup-steps", "100", "--eval-every", "0",
            "--out", str(run), *TINY]  # fmt: skip
    assert cli.main(argv) == 0
    policy_path = tmp_path / "arm2v.onnx"
    assert (
        cli.main(["export", "--run", str(run), "--out", str(policy_path), "--parity-observations", "1000"])
        == 0
    )

    from mpo_ros.robot.controller import PolicyController
    from mpo_ros.robot.onnx_policy import OnnxPolicy
    from mpo_ros.robot.supervisor import Supervisor

    policy = OnnxPolicy(policy_path, require_contract=True)
    assert policy.spec.command_interface == "velocity"
    assert contract_differences(policy.spec, spec) == []
    supervisor = Supervisor(spec)
    controller = PolicyController(policy, supervisor)
    supervisor.accept_joint_state(["shoulder", "elbow"], [-0.7, 1.5], [0.0, 0.0])
    supervisor.accept_goal([0.3, 0.0])
    assert supervisor.enable(True)[0]
    commands = np.array([controller.tick()[0] for _ in range(10)])
    arrays = spec.joint_arrays
    assert np.all(np.abs(commands) <= arrays.velocity_limit)
    assert np.all(np.abs(np.diff(np.vstack([np.zeros(2), commands]), axis=0)) <= arrays.max_delta + 1e-9)
