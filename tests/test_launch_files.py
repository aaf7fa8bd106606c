"""Static checks of launch/ and config/ (launch and launch_ros cannot be installed here).

Each launch file must parse, start only executables that setup.py installs, set only parameters the
node declares, use only launch arguments it declares, and name params files that exist; every key in
config/*.yaml must be a parameter of the node it is filed under, with a value the node accepts.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from mpo_ros.config import from_dict
from mpo_ros.ros import policy_node, sim_node

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
CONFIG_FILES = sorted((REPO / "config").glob("*.yaml"))
# Parameters every rclpy node declares itself.
BUILTIN_PARAMETERS = {"use_sim_time", "start_type_description_service"}

NODES = {
    "mpo_policy": (policy_node.PolicyNodeConfig, "policy_node"),
    "mpo_sim": (sim_node.SimNodeConfig, "sim_node"),
}


def declared(node_name: str) -> set[str]:
    cls = NODES[node_name][0]
    return {f.name for f in dataclasses.fields(cls)} | BUILTIN_PARAMETERS


def console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            entry_points = ast.literal_eval(node.value)
            return dict(
                (part.strip() for part in line.split("=", 1)) for line in entry_points["console_scripts"]
            )
    raise AssertionError("setup.py has no entry_points")


def launch_nodes(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_there_are_launch_files_and_configs() -> None:
    assert {p.name for p in LAUNCH_FILES} >= {"policy.launch.py", "sim.launch.py"}
    assert {p.name for p in CONFIG_FILES} >= {"policy.yaml", "sim.yaml"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_starts_installed_executables_with_declared_parameters(path: Path) -> None:
    scripts = console_scripts()
    nodes = launch_nodes(path)
    assert nodes, f"{path.name} starts no Node"
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    for call in nodes:
        package = ast.literal_eval(keyword(call, "package"))
        executable = ast.literal_eval(keyword(call, "executable"))
        name = ast.literal_eval(keyword(call, "name"))
        assert package == "mpo_ros"
        assert executable in scripts, f"{path.name}: '{executable}' is not a console script in setup.py"
        assert NODES[name][1] == executable, f"{path.name}: node '{name}' runs '{executable}'"
        module = scripts[executable].split(":")[0]
        assert module == f"mpo_ros.ros.{executable}"
        parameters = keyword(call, "parameters")
        assert isinstance(parameters, ast.List)
        for item in parameters.elts:
            if isinstance(item, ast.Dict):
                keys = {ast.literal_eval(k) for k in item.keys}
                assert keys <= declared(name), f"{path.name}: undeclared {keys - declared(name)}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_arguments_are_declared_and_params_files_exist(path: Path) -> None:
    tree = ast.parse(path.read_text())
    declared_args, used_args = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            declared_args.add(ast.literal_eval(node.args[0]))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LaunchConfiguration":
            used_args.add(ast.literal_eval(node.args[0]))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".yaml"):
            assert (REPO / "config" / node.value).is_file(), f"{path.name} names missing {node.value}"
    assert used_args <= declared_args, f"{path.name}: undeclared launch arguments {used_args - declared_args}"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_keys_are_node_parameters_with_valid_values(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    assert data, f"{path.name} is empty"
    for node_name, section in data.items():
        assert node_name in NODES, f"{path.name}: unknown node '{node_name}'"
        params = section["ros__parameters"]
        assert set(params) <= declared(node_name), (
            f"{path.name}: undeclared {set(params) - declared(node_name)}"
        )
        cls = NODES[node_name][0]
        for key, value in params.items():
            field_type = {f.name: f.type for f in dataclasses.fields(cls)}.get(key)
            if field_type == "float":
                # ROS would refuse an int for a double without dynamic typing; keep files explicit.
                assert isinstance(value, float), f"{path.name}: {key} should be written as a float"
        from_dict(cls, {k: v for k, v in params.items() if k not in BUILTIN_PARAMETERS}).validate()


@pytest.mark.parametrize("node_name", sorted(NODES))
def test_cli_flags_mirror_parameters_one_to_one(node_name: str) -> None:
    cls = NODES[node_name][0]
    module = policy_node if node_name == "mpo_policy" else sim_node
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    dests = {a.dest for a in parser._actions} - {"help", "params_file", "use_sim_time"}
    assert dests == {f.name for f in dataclasses.fields(cls)}
    shipped = yaml.safe_load(
        (REPO / "config" / ("policy.yaml" if node_name == "mpo_policy" else "sim.yaml")).read_text()
    )
    assert set(shipped[node_name]["ros__parameters"]) == {f.name for f in dataclasses.fields(cls)}, (
        "the shipped config lists every parameter, so it doubles as their reference"
    )
