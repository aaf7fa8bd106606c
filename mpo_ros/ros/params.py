"""One config dataclass -> ROS parameters, CLI flags and ros__parameters YAML, one name each.

The nodes declare one ROS parameter per dataclass field (with the field's help as its description),
`mpo-ros serve` / `mpo-ros sim-robot` add one ``--flag`` per field (config.add_arguments), and the
files in config/ hold the same keys under ``<node>: ros__parameters:``. Values are checked by the
dataclass's ``validate()`` whether they come from a flag, a file, ``--ros-args -p`` or ``ros2 param set``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mpo_ros.config import from_dict
from mpo_ros.errors import ConfigError

__all__ = [
    "BUILTIN_PARAMETERS",
    "add_node_arguments",
    "check_parameter_values",
    "check_ros_arguments",
    "cli_parameter_overrides",
    "config_from_cli",
    "declare_config",
    "node_parameters_from_file",
    "parameter_overrides",
]

T = TypeVar("T")

# Parameters rclpy declares on every node: accepted in files and -p, not ours to check.
BUILTIN_PARAMETERS = ("use_sim_time", "start_type_description_service")

_ROS_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


def node_parameters_from_file(path: str | Path, node_name: str) -> dict[str, Any]:
    """The ``ros__parameters`` of `node_name` (or of ``/**``) in a ROS 2 params file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist")
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    values: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = data.get(key)
        if isinstance(section, dict):
            params = section.get("ros__parameters")
            if not isinstance(params, dict):
                raise ConfigError(f"{path}: '{key}' must hold a 'ros__parameters' mapping")
            values.update(params)
    if not values and data:
        raise ConfigError(f"{path} has no '{node_name}: ros__parameters:' section; it has {sorted(data)}")
    return values


def config_from_cli(cls: type[T], args: argparse.Namespace, node_name: str) -> T:
    """Defaults < ``--params-file`` (ros__parameters format) < explicit flags; validated."""
    values: dict[str, Any] = {}
    params_file = getattr(args, "params_file", None)
    if params_file:
        values.update(node_parameters_from_file(params_file, node_name))
        check_parameter_values(cls, values, f"params file {params_file}", node_name)
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
    config = from_dict(cls, values, source=str(params_file) if params_file else "command line")
    config.validate()  # type: ignore[attr-defined]
    return config


def add_node_arguments(parser: argparse.ArgumentParser, cls: type, example_file: str, node_name: str) -> None:
    """`--params-file`, `--use-sim-time`, and one flag per field of `cls`."""
    from mpo_ros.config import add_arguments

    parser.add_argument(
        "--params-file",
        default=None,
        help=f"ROS 2 params file (e.g. {example_file}, the `{node_name}: ros__parameters:` section); "
        "flags override it",
    )
    parser.add_argument(
        "--use-sim-time", action="store_true", help="ROS time from /clock (the sim node publishes it)"
    )
    add_arguments(parser, cls)


def cli_parameter_overrides(cls: type, args: argparse.Namespace, node_name: str) -> list[Parameter]:
    """The node's parameters from the command line (see `config_from_cli`), plus use_sim_time."""
    overrides = parameter_overrides(config_from_cli(cls, args, node_name))
    if getattr(args, "use_sim_time", False):
        overrides.append(Parameter("use_sim_time", value=True))
    return overrides


def parameter_overrides(config: Any) -> list[Parameter]:
    """The resolved config as ROS parameter overrides for ``Node(parameter_overrides=...)``."""
    return [Parameter(f.name, value=getattr(config, f.name)) for f in dataclasses.fields(config)]


def declare_config(node: Node, cls: type[T], mutable: tuple[str, ...] = ()) -> T:
    """Declare one parameter per field of `cls` and return the validated config they hold.

    Fields not in `mutable` are read-only (changing a topic or the policy file needs a restart).
    A set of a mutable parameter is checked with ``cls.validate()`` before it is accepted; the node
    reads the new value through the callback it registers itself.
    """
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = hints[field.name]
        description = field.metadata.get("help", "")
        if "choices" in field.metadata:
            description += f" (one of {list(field.metadata['choices'])})"
        descriptor = ParameterDescriptor(
            name=field.name,
            type=_ROS_TYPES[tp],
            description=description,
            read_only=field.name not in mutable,
            # `-p rate_hz:=500` arrives as an integer; accept it for float fields and convert.
            dynamic_typing=tp is float,
        )
        try:
            node.declare_parameter(field.name, getattr(defaults, field.name), descriptor)
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            raise ConfigError(
                f"parameter '{field.name}' of node '{node.get_name()}' must be a {tp.__name__}: {exc}"
            ) from None
    unknown = sorted(
        name
        for name in getattr(node, "_parameter_overrides", {})
        if name not in {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        and name not in BUILTIN_PARAMETERS
        and not name.startswith("qos_overrides.")
    )
    if unknown:
        # rclpy keeps overrides it was given for parameters a node never declares, and ignores them.
        raise ConfigError(
            f"unknown parameter(s) {unknown} for node '{node.get_name()}' (from --ros-args or a params "
            f"file); valid keys: {sorted(f.name for f in dataclasses.fields(cls))}"  # type: ignore[arg-type]
        )
    config = _read(node, cls)
    node.add_on_set_parameters_callback(lambda params: _check_set(node, cls, params))
    return config


def _coerce(cls: type, name: str, value: Any) -> Any:
    tp = typing.get_type_hints(cls)[name]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        raise ConfigError(f"parameter '{name}' must be a {tp.__name__}, got {value!r}")
    return value


def _read(node: Node, cls: type[T]) -> T:
    values = {
        f.name: _coerce(cls, f.name, node.get_parameter(f.name).value)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }
    config = cls(**values)
    config.validate()  # type: ignore[attr-defined]
    return config


def _check_set(node: Node, cls: type, params: list[Parameter]) -> SetParametersResult:
    values = {
        f.name: node.get_parameter(f.name).value
        for f in dataclasses.fields(cls)
        if node.has_parameter(f.name)
    }
    try:
        for param in params:
            if param.name in values:
                values[param.name] = _coerce(cls, param.name, param.value)
        if len(values) == len(dataclasses.fields(cls)):
            cls(**values).validate()
    except (ConfigError, TypeError, ValueError) as exc:
        return SetParametersResult(successful=False, reason=str(exc))
    return SetParametersResult(successful=True)


def check_parameter_values(cls: type, values: dict[str, Any], source: str, node_name: str) -> None:
    """Refuse unknown keys and wrongly typed or invalid values from one source, in one line.

    The line names the key, the source (a params file, ``-p``) and the valid keys, so a typo such as
    ``state_timout`` cannot leave the default in force silently (rclpy ignores parameters a node
    never declares).
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names) - set(BUILTIN_PARAMETERS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown parameter(s) {unknown} for node '{node_name}'; valid keys: {sorted(names)}"
        )
    ours = {k: v for k, v in values.items() if k in names}
    try:
        coerced = {k: _coerce(cls, k, v) for k, v in ours.items()}
        config = dataclasses.replace(cls(), **coerced)
        config.validate()  # type: ignore[attr-defined]
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc} (node '{node_name}'; valid keys: {sorted(names)})") from None


def check_ros_arguments(cls: type, argv: list[str], node_name: str) -> None:
    """Check the ``--params-file`` files and ``-p name:=value`` of a ``--ros-args`` command line.

    Runs before rclpy starts, so a bad key or value ends the process with one line that names it
    (exit status 2) instead of being ignored or ending in a traceback.
    """
    for source, values in _ros_argument_values(argv, node_name):
        check_parameter_values(cls, values, source, node_name)


def _ros_argument_values(argv: list[str], node_name: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    in_ros_args = False
    tokens = iter(argv)
    for token in tokens:
        if token == "--ros-args":
            in_ros_args = True
        elif token == "--":
            in_ros_args = False
        elif in_ros_args and token == "--params-file":
            path = next(tokens, "")
            found.append((f"params file {path}", _sections_for(Path(path), node_name)))
        elif in_ros_args and token in ("-p", "--param"):
            assignment = next(tokens, "")
            name, sep, text = assignment.partition(":=")
            if not sep:
                raise ConfigError(f"-p {assignment}: write parameters as name:=value")
            # rclpy parses the value as YAML, so `-p rate_hz:=500` is an integer and `:=fast` a string.
            found.append((f"-p {assignment}", {name.rsplit(":", 1)[-1]: yaml.safe_load(text)}))
    return found


def _sections_for(path: Path, node_name: str) -> dict[str, Any]:
    """The ros__parameters that apply to `node_name` in any namespace: wildcard and ``[/ns]/name`` sections.

    More tolerant than `node_parameters_from_file` (a launch may hand one file to several nodes, or
    run this one in a namespace): sections for other nodes are left alone, not refused.
    """
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist")
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"params file {path} must map node names to 'ros__parameters:' sections")
    values: dict[str, Any] = {}
    for key, section in data.items():
        name = str(key).rstrip("/").rsplit("/", 1)[-1]
        if name != node_name and "*" not in str(key):
            continue
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ConfigError(f"params file {path}: '{key}' must hold a 'ros__parameters' mapping")
        values.update(params)
    return values
