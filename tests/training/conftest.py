"""Fixtures of the training tests: the arm2 contract and a small dataset converted from a scripted bag."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpo_ros.contract.spec import RobotSpec, load_spec


@pytest.fixture(scope="session")
def arm2() -> RobotSpec:
    return load_spec("arm2")


@pytest.fixture(scope="session")
def behaviour(tmp_path_factory, arm2) -> Path:
    """6 scripted arm2 episodes recorded to rosbag2 and converted with the shipped contract."""
    from mpo_ros.data.convert import Bag2DataConfig, convert_bags
    from mpo_ros.data.scripted import record_scripted_bag

    tmp = tmp_path_factory.mktemp("behaviour")
    record_scripted_bag(arm2, tmp / "bag", episodes=6, seed=11)
    path, _ = convert_bags(
        Bag2DataConfig(bags=[str(tmp / "bag")], robot="arm2", out=str(tmp / "ds"), progress=False)
    )
    return Path(path)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray per test module (num_cpus=2, no dashboard), reused by every train() in it: the
    training engine joins an initialised Ray instead of starting its own (and leaves it running)."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
