"""Shared fixtures of the data tests: the real bags (never copied into the repo) and sim bags."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpo_ros.contract.spec import RobotSpec, load_spec

REAL_BAGS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "real_bags"


@pytest.fixture(scope="session")
def real_bags() -> Path:
    if not (REAL_BAGS / "tb3_walker_gazebo").is_dir():
        pytest.skip(f"real bag fixtures not present at {REAL_BAGS}")
    return REAL_BAGS


@pytest.fixture(scope="session")
def arm2() -> RobotSpec:
    return load_spec("arm2")
