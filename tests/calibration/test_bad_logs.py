"""Logs that cannot identify a parameter are refused (or warned about) by name, never fitted silently."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from mpo_ros.calibration.command import CalibrateConfig, calibrate
from mpo_ros.calibration.logs import LogTopics, load_bag_segments
from mpo_ros.calibration.record import record_sim_excitation
from mpo_ros.calibration.signals import ExcitationConfig
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.data import messages
from mpo_ros.data.recorder import BagRecorder
from mpo_ros.errors import CalibrationError

TOPICS = LogTopics()
PERIOD_NS = 20_000_000


def _write_bag(path: Path, spec: RobotSpec, positions: np.ndarray, state_ns: np.ndarray) -> None:
    """A bag whose commands follow a sine and whose joint states are `positions` at `state_ns`."""
    store = messages.typestore("kilted")
    with BagRecorder(path) as bag:
        for k, t in enumerate(state_ns):
            bag.write(
                TOPICS.joint_states,
                messages.joint_state(
                    store, int(t), spec.joint_names, positions[k], np.zeros(spec.num_joints)
                ),
                int(t),
            )
            bag.write(TOPICS.command, messages.float64_multi_array(store, positions[k]), int(t) + 500_000)


def _sine_positions(spec: RobotSpec, steps: int) -> np.ndarray:
    t = np.arange(steps) * PERIOD_NS * 1e-9
    return spec.joint_arrays.default + 0.2 * np.sin(2 * np.pi * 0.5 * t)[:, None]


def test_too_short_log_is_refused(tmp_path: Path, nominal_spec: RobotSpec) -> None:
    bag = tmp_path / "short"
    record_sim_excitation(nominal_spec, bag, ExcitationConfig(duration=3.0, ramp_seconds=0.5))
    with pytest.raises(CalibrationError, match=r"s of usable log for training"):
        calibrate(CalibrateConfig(robot="arm2", out=str(tmp_path / "out"), bag=[str(bag)]))
    assert not (tmp_path / "out" / "parameters.json").exists()


def test_unexcited_joint_is_named_with_its_parameters(tmp_path: Path, nominal_spec: RobotSpec) -> None:
    bag = tmp_path / "shoulder_only"
    record_sim_excitation(nominal_spec, bag, ExcitationConfig(duration=12.0, joints=("shoulder",)))
    with pytest.raises(CalibrationError) as info:
        calibrate(CalibrateConfig(robot="arm2", out=str(tmp_path / "out"), bag=[str(bag)]))
    message = str(info.value)
    assert "joint 'elbow'" in message and "elbow/damping" in message and "elbow/kp" in message
    assert "shoulder/" not in message


def test_nan_positions_name_the_joint(tmp_path: Path, nominal_spec: RobotSpec) -> None:
    steps = 600
    positions = _sine_positions(nominal_spec, steps)
    positions[300, 1] = np.nan
    state_ns = 1_000_000_000 + np.arange(steps) * PERIOD_NS
    _write_bag(tmp_path / "nan", nominal_spec, positions, state_ns)
    with pytest.raises(CalibrationError, match=r"joint\(s\) \['elbow'\] is NaN.*t=6\.000 s"):
        load_bag_segments(tmp_path / "nan", nominal_spec, TOPICS, min_seconds=2.0)


def test_gaps_split_the_log_and_short_pieces_are_dropped(
    tmp_path: Path, nominal_spec: RobotSpec, caplog: pytest.LogCaptureFixture
) -> None:
    steps = 600  # 12 s
    positions = _sine_positions(nominal_spec, steps)
    state_ns = 1_000_000_000 + np.arange(steps) * PERIOD_NS
    state_ns[400:] += 2_000_000_000  # a 2 s pause after 8 s: 8 s, then 4 s
    _write_bag(tmp_path / "gap", nominal_spec, positions, state_ns)
    with caplog.at_level(logging.WARNING):
        segments = load_bag_segments(tmp_path / "gap", nominal_spec, TOPICS, min_seconds=2.0)
        # Each piece starts at the first state after its first command (one period in).
        assert [round(s.duration, 2) for s in segments] == [7.96, 3.96]
        assert "1 gap(s)" in caplog.text
        # With a 5 s minimum only the first piece survives; with 9 s none, which calibrate refuses.
        assert len(load_bag_segments(tmp_path / "gap", nominal_spec, TOPICS, min_seconds=5.0)) == 1
    with pytest.raises(CalibrationError, match="no continuous stretch"):
        calibrate(
            CalibrateConfig(
                robot="arm2", out=str(tmp_path / "out"), bag=[str(tmp_path / "gap")], min_segment_seconds=9.0
            )
        )


def test_missing_topic_names_the_topic(tmp_path: Path, nominal_spec: RobotSpec) -> None:
    bag = tmp_path / "states_only"
    store = messages.typestore("kilted")
    with BagRecorder(bag) as recorder:
        for k in range(10):
            t = 1_000_000_000 + k * PERIOD_NS
            msg = messages.joint_state(store, t, nominal_spec.joint_names, nominal_spec.joint_arrays.default)
            recorder.write(TOPICS.joint_states, msg, t)
    with pytest.raises(CalibrationError, match="/forward_position_controller/commands"):
        load_bag_segments(bag, nominal_spec, TOPICS, min_seconds=2.0)


def test_unknown_parameter_is_refused(tmp_path: Path, excitation_bag: Path) -> None:
    with pytest.raises(CalibrationError, match="unknown parameter 'stiffness'"):
        calibrate(
            CalibrateConfig(
                robot="arm2", out=str(tmp_path / "o"), bag=[str(excitation_bag)], params=["stiffness"]
            )
        )


def test_damping_and_kv_of_one_joint_are_refused_together(tmp_path: Path, excitation_bag: Path) -> None:
    # Both are a torque proportional to joint velocity: only their sum is in the logs.
    with pytest.raises(CalibrationError, match=r"shoulder/damping \+ shoulder/kv.*elbow/damping \+ elbow/kv"):
        calibrate(
            CalibrateConfig(
                robot="arm2",
                out=str(tmp_path / "o"),
                bag=[str(excitation_bag)],
                params=["damping", "kv", "kp"],
            )
        )
