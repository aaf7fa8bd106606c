"""Fixtures of the ROS 2 tests: policies to serve, the probe node, and process cleanup."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ros_helpers import Probe

# `make test-jazzy` runs these tests in a venv without torch: the analytic-IK policy is exported in
# the main venv (`python tests/ros/reach_policy.py OUT`) and handed over through this variable.
IK_POLICY_ENV = "MPO_ROS_TEST_IK_POLICY"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.ros)


@pytest.fixture(scope="session")
def ik_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An analytic-IK reach controller for arm2, exported through mpo_ros.training.export."""
    given = os.environ.get(IK_POLICY_ENV)
    if given:
        assert Path(given).is_file(), f"{IK_POLICY_ENV}={given} does not exist"
        return Path(given)
    from reach_policy import export_reach_policy

    from mpo_ros.contract.spec import load_spec

    return export_reach_policy(load_spec("arm2"), tmp_path_factory.mktemp("policies") / "arm2_ik.onnx")


@pytest.fixture()
def probe():
    node = Probe()
    try:
        yield node
    finally:
        node.close()
