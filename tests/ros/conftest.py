"""Fixtures of the ROS 2 tests: policies to serve, the probe node, and process cleanup."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import REPO, Probe
from reach_policy import export_reach_policy

SHIPPED_POLICY = REPO / "models" / "arm2_reach.onnx"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.ros)


@pytest.fixture(scope="session")
def ik_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An analytic-IK reach controller for arm2, exported through mpo_ros.export."""
    from mpo_ros.spec import load_spec

    return export_reach_policy(load_spec("arm2"), tmp_path_factory.mktemp("policies") / "arm2_ik.onnx")


@pytest.fixture(scope="session")
def reach_policy(ik_policy: Path) -> Path:
    """The shipped trained policy once the lead has added it, else the IK controller."""
    return SHIPPED_POLICY if SHIPPED_POLICY.is_file() else ik_policy


@pytest.fixture()
def probe():
    node = Probe()
    try:
        yield node
    finally:
        node.close()
