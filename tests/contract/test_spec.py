"""Robot contract validation: every SpecError path of mpo_ros/contract/spec.py, and the shipped specs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mpo_ros.contract.spec import CONTRACT_VERSION, RobotSpec, find_spec, load_spec, models_dir
from mpo_ros.errors import SpecError


def _arm2() -> dict:
    return yaml.safe_load((models_dir() / "arm2.yaml").read_text())


def _with(path: tuple, value, remove: bool = False) -> dict:
    data = copy.deepcopy(_arm2())
    target = data
    for key in path[:-1]:
        target = target[key]
    if remove:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize("robot", ["arm2", "arm6"])
def test_shipped_specs_load_and_round_trip_through_json(robot: str) -> None:
    spec = load_spec(robot)
    assert spec.name == robot
    assert spec.mjcf_path.is_file()
    again = RobotSpec.from_json(spec.to_json())
    assert again == spec
    assert again.to_json() == spec.to_json()
    assert spec.episode_steps == round(spec.task.episode_seconds * spec.control_rate_hz)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("joints", 0, "lower"), 3.0, "must be below upper"),
        (("joints", 0, "lower"), float("nan"), "finite number"),
        (("joints", 0, "default"), 9.0, "outside its limits"),
        (("joints", 0, "action_scale"), 0.0, "action_scale must be > 0"),
        (("joints", 0, "max_delta"), -0.1, "max_delta must be > 0"),
        (("joints", 0, "velocity_limit"), 0.0, "velocity_limit must be > 0"),
        (("joints", 1, "name"), "shoulder", "unique"),
        (("joints",), [], "at least one joint"),
        (("joints",), ["shoulder"], "must be mappings"),
        (("control_rate_hz",), 0.0, "control_rate_hz"),
        (("control_rate_hz",), 20000.0, "control_rate_hz"),
        (("physics_substeps",), 0, "physics_substeps"),
        (("physics_substeps",), 2.5, "physics_substeps"),
        (("observation",), ["joint_positions", "torques"], "unknown observation block"),
        (("observation",), ["goal", "goal"], "each block once"),
        (("observation",), [], "each block once"),
        (("action_mode",), "velocity", "action_mode"),
        (("contract_version",), CONTRACT_VERSION + 1, "contract version"),
        (("task", "goal_high"), [0.4], "one bound per goal dimension"),
        (("task", "goal_high"), [0.1, 0.25], "exceeds goal_high"),
        (("task", "success_threshold"), 0.0, "must be > 0"),
        (("task", "episode_seconds"), -1.0, "must be > 0"),
        (("task", "colour"), "red", "unknown task key"),
        (("task", "goal_low"), "abc", "could not convert"),
        (("gripper",), True, "unknown key"),
    ],
)
def test_invalid_spec_is_rejected_with_a_helpful_message(path: tuple, value, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        RobotSpec.from_dict(_with(path, value), source="test")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("joints",), "missing required key"),
        (("task",), "missing required key"),
        (("observation",), "missing required key"),
        (("task", "goal_low"), "missing required key"),
        (("joints", 0, "upper"), "is missing"),
        (("joints", 0, "name"), "without a 'name'"),
        (("name",), "are required"),
        (("physics_substeps",), "are required"),
    ],
)
def test_missing_keys_are_named(path: tuple, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        RobotSpec.from_dict(_with(path, None, remove=True), source="test")


def test_top_level_must_be_a_mapping_and_json_must_parse() -> None:
    with pytest.raises(SpecError, match="expected a mapping"):
        RobotSpec.from_dict(["arm2"])  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="not valid JSON"):
        RobotSpec.from_json("{not json")


def test_find_and_load_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"unknown robot 'arm99'.*arm2"):
        find_spec("arm99")
    with pytest.raises(SpecError, match="does not exist"):
        find_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    good = tmp_path / "copy.yaml"
    good.write_text(yaml.safe_dump(_arm2()))
    assert load_spec(good).source_dir == str(tmp_path.resolve())


def test_command_interface_and_goal_frame_are_part_of_the_contract() -> None:
    import dataclasses

    from mpo_ros.contract.spec import RobotSpec, load_spec

    ur5e = load_spec("ur5e")
    assert ur5e.command_interface == "position" and ur5e.task.goal_frame == "base_link"
    data = ur5e.to_dict()
    assert RobotSpec.from_dict(data) == ur5e  # round trip through the JSON the ONNX file carries
    data["command_interface"] = "effort"
    with pytest.raises(SpecError, match="command_interface 'effort' is not supported"):
        RobotSpec.from_dict(data)
    older = ur5e.to_dict()
    del older["command_interface"], older["task"]["goal_frame"]  # a contract written before these fields
    assert RobotSpec.from_dict(older) == dataclasses.replace(ur5e, source_dir="")
