"""Config plumbing: defaults < YAML < flags, unknown keys rejected with the valid ones listed."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from mpo_ros.config import add_arguments, from_args, from_dict, load_yaml, option, save_yaml
from mpo_ros.errors import ConfigError


@dataclass
class ToyConfig:
    steps: int = option(100, "environment steps")
    learning_rate: float = option(3e-4, "step size")
    device: str = option("cpu", "torch device", choices=["cpu", "cuda"])
    full_covariance: bool = option(False, "Cholesky covariance")
    hidden: tuple[int, ...] = option((256, 256), "layer sizes")
    resume: str | None = option(None, "run to resume")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_arguments(parser, ToyConfig)
    return parser.parse_args(argv)


def test_defaults_when_nothing_given() -> None:
    assert from_args(ToyConfig, _parse([])) == ToyConfig()


def test_yaml_overrides_defaults_and_flags_override_yaml(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\nlearning_rate: 1\nhidden: [8, 8]\n")
    cfg = from_args(ToyConfig, _parse(["--steps", "9", "--full-covariance"]), config_file=path)
    assert cfg.steps == 9  # flag beats YAML
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)  # YAML beats default
    assert cfg.hidden == (8, 8)
    assert cfg.full_covariance is True


def test_bool_flag_accepts_explicit_values() -> None:
    assert from_args(ToyConfig, _parse(["--full-covariance", "false"])).full_covariance is False


def test_choices_are_enforced_by_the_parser() -> None:
    with pytest.raises(SystemExit):
        _parse(["--device", "tpu"])


def test_unknown_yaml_key_names_the_valid_ones(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key.*'stepz'.*valid keys"):
        from_dict(ToyConfig, {"stepz": 3})


def test_yaml_must_be_a_mapping(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_saved_config_loads_back_equal(tmp_path) -> None:
    cfg = ToyConfig(steps=5, hidden=(4,), resume="runs/x")
    save_yaml(cfg, tmp_path / "run" / "config.yaml")
    assert from_dict(ToyConfig, load_yaml(tmp_path / "run" / "config.yaml")) == cfg
