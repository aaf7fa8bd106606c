"""Command configs: one dataclass per command, shared by the CLI, YAML files and ROS parameters.

A field's ``metadata["help"]`` is its documentation; the CLI shows it in ``--help`` and the README's
configuration reference is generated from the same text, so one name means one thing everywhere.
Precedence (lowest to highest): dataclass defaults < ``--config file.yaml`` < explicit CLI flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mpo_ros.errors import ConfigError

__all__ = [
    "add_arguments",
    "from_args",
    "from_dict",
    "load_yaml",
    "option",
    "save_yaml",
    "to_dict",
]

T = TypeVar("T")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with documentation; mutable defaults are wrapped in a factory."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(
            default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kwargs}
        )
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip Optional[...]; return (type, optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per dataclass field (defaults left as None so YAML can sit in between)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get("cli", True) is False:
            continue
        tp, _ = _base_type(hints[field.name])
        help_text = field.metadata.get("help", "")
        default = (
            field.default
            if field.default is not dataclasses.MISSING
            else (
                field.default_factory()  # type: ignore[misc]
                if field.default_factory is not dataclasses.MISSING
                else None
            )
        )
        kwargs: dict[str, Any] = {"default": None, "help": f"{help_text} (default: {default})"}
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        if tp is bool:
            kwargs.update(type=_parse_bool, metavar="BOOL", nargs="?", const=True)
        elif typing.get_origin(tp) in (list, tuple):
            (elem,) = typing.get_args(tp)[:1]
            kwargs.update(type=elem, nargs="*")
        elif tp in (int, float, str):
            kwargs.update(type=tp)
        else:
            kwargs.update(type=str)
        parser.add_argument(_flag(field.name), dest=field.name, **kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a (possibly nested) config dataclass, ready for YAML."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Build ``cls`` from a dict, rejecting unknown keys with the list of known ones."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {source}; valid keys are {sorted(names)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    converted: dict[str, Any] = {}
    problems = []
    for key, value in values.items():
        try:
            converted[key] = _typed(key, value, hints[key], fields[key].metadata.get("choices"))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"invalid {source}: " + "; ".join(problems))
    try:
        return cls(**converted)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {source}: {exc}") from exc


def _typed(key: str, value: Any, hint: Any, choices: Any = None) -> Any:
    """``value`` checked against the field's type: a YAML ``"false"`` is not a boolean, 3000.7 is not a step
    count, ``true`` is not a number. One message names the key, the value and what is allowed."""
    tp, optional = _base_type(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: null is not allowed (expected {_type_name(tp)})")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"{key}: {value!r} is not a list (expected a list of {_type_name(typing.get_args(tp)[0])})"
            )
        element = typing.get_args(tp)[0]
        items = [_typed(f"{key}[{i}]", v, element) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: {value!r} is not a boolean (write true or false, without quotes)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _choice(key, value, choices)
        if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
            return _choice(key, int(value), choices)
        raise ConfigError(f"{key}: {value!r} is not a whole number")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _choice(key, float(value), choices)
        raise ConfigError(f"{key}: {value!r} is not a number")
    if tp is str:
        if isinstance(value, str):
            return _choice(key, value, choices)
        raise ConfigError(f"{key}: {value!r} is not a string")
    return value


def _choice(key: str, value: Any, choices: Any) -> Any:
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with path.open() as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{where}: invalid YAML ({problem}); fix the file or pass the option as a flag"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value, got {type(data).__name__}")
    return data


def from_args(
    cls: type[T],
    args: argparse.Namespace,
    config_file: str | Path | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults, then ``base`` (e.g. a resumed run's own config), then the YAML file, then flags given on
    the command line."""
    values: dict[str, Any] = dict(base or {})
    if config_file is not None:
        values.update(load_yaml(config_file))
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        given = getattr(args, field.name, None)
        if given is not None:
            values[field.name] = given
    return from_dict(cls, values, source=str(config_file) if config_file else "command line")


def save_yaml(config: Any, path: str | Path) -> None:
    """Write the resolved config next to a run (atomically, so a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        yaml.safe_dump(to_dict(config), fh, sort_keys=False)
    tmp.replace(path)
