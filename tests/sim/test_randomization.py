"""Domain randomisation: profiles load strictly, change the model, are reproducible, held-out is wider."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mpo_ros_sim.randomization import RandomizationProfile, load_profile
from mpo_ros_sim.robot_sim import RobotSim

from mpo_ros.contract.spec import load_spec
from mpo_ros.errors import ConfigError


def _physics(sim: RobotSim) -> dict[str, np.ndarray]:
    m, b = sim.model, sim.binding
    return {
        "mass": m.body_mass[b.body_ids].copy(),
        "inertia": m.body_inertia[b.body_ids].copy(),
        "damping": m.dof_damping[b.dof_address].copy(),
        "friction": m.dof_frictionloss[b.dof_address].copy(),
        "kp": m.actuator_gainprm[b.actuator_id, 0].copy(),
        "kp_bias": -m.actuator_biasprm[b.actuator_id, 1].copy(),
        "kv": -m.actuator_biasprm[b.actuator_id, 2].copy(),
    }


def test_shipped_profiles_load_and_heldout_is_wider_than_train() -> None:
    train, heldout = load_profile("train"), load_profile("heldout")
    assert load_profile("none") is None and load_profile(None) is None
    assert heldout.contains(train)
    assert not train.contains(heldout)
    # Every randomised quantity is actually randomised in train, and strictly wider in held-out.
    for key in RandomizationProfile.range_names():
        t, h = getattr(train, key), getattr(heldout, key)
        if key != "goal_scale":
            assert t.high > t.low, key
        assert (h.high - h.low) > (t.high - t.low), key


@pytest.mark.parametrize("robot", ["arm2", "arm6"])
def test_randomize_changes_masses_damping_and_gains(robot: str) -> None:
    sim = RobotSim(load_spec(robot), load_profile("train"), seed=0)
    nominal = _physics(sim)
    sample = sim.randomize(np.random.default_rng(1))
    changed = _physics(sim)
    for key in nominal:
        assert not np.allclose(nominal[key], changed[key]), key
    np.testing.assert_allclose(changed["mass"], nominal["mass"] * sample.mass_scale)
    np.testing.assert_allclose(changed["kp"], changed["kp_bias"])  # still a position servo
    np.testing.assert_allclose(changed["kv"], nominal["kv"] * sample.actuator_kv_scale)
    np.testing.assert_allclose(changed["friction"], nominal["friction"] + sample.joint_friction)
    # Draws never compound: a second draw starts from the nominal model again.
    sim.randomize(np.random.default_rng(2))
    second = _physics(sim)
    sim.randomize(np.random.default_rng(1))
    np.testing.assert_allclose(_physics(sim)["mass"], changed["mass"])
    assert not np.allclose(second["mass"], changed["mass"])
    # Without a profile the nominal robot is restored.
    sim.profile = None
    sim.randomize(np.random.default_rng(3))
    for key, value in _physics(sim).items():
        np.testing.assert_allclose(value, nominal[key], err_msg=key)


def test_randomisation_is_reproducible_per_seed() -> None:
    spec, profile = load_spec("arm6"), load_profile("heldout")
    a = RobotSim(spec, profile)
    b = RobotSim(spec, profile)
    a.randomize(np.random.default_rng(42))
    b.randomize(np.random.default_rng(42))
    for key, value in _physics(a).items():
        np.testing.assert_array_equal(value, _physics(b)[key], err_msg=key)
    assert a.dynamics.latency_steps == b.dynamics.latency_steps


def test_samples_stay_inside_the_profile_ranges() -> None:
    profile = load_profile("heldout")
    rng = np.random.default_rng(0)
    samples = [profile.sample(rng, num_bodies=4, num_joints=6) for _ in range(300)]
    masses = np.concatenate([s.mass_scale for s in samples])
    assert profile.mass_scale.low <= masses.min() and masses.max() <= profile.mass_scale.high
    latencies = {s.latency_steps for s in samples}
    assert latencies == set(range(int(profile.latency_steps.low), int(profile.latency_steps.high) + 1))
    assert all(0 <= s.latency_fraction <= profile.latency_fraction.high for s in samples)


def test_randomised_dynamics_change_the_motion() -> None:
    spec = load_spec("arm2")
    nominal, randomised = RobotSim(spec, seed=0), RobotSim(spec, load_profile("heldout"), seed=0)
    randomised.randomize(np.random.default_rng(11))
    traces = []
    for sim in (nominal, randomised):
        sim.reset()
        sim.apply_command(np.array([0.8, -0.8]))
        positions = []
        for _ in range(15):
            sim.step(spec.physics_substeps)
            positions.append(sim.joint_positions)
        traces.append(np.array(positions))
    assert np.abs(traces[0] - traces[1]).max() > 0.01


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mass_scale: [0.8, 1.2]\nmas_scale: [1, 2]\n", r"unknown randomisation key\(s\) \['mas_scale'\]"),
        ("mass_scale: [1.2, 0.8]\n", "low 1.2 > high 0.8"),
        ("mass_scale: [0.0, 1.0]\n", "mass_scale must be > 0"),
        ("joint_friction: [-0.1, 0.1]\n", "must be >= 0"),
        ("latency_steps: [0, 1.5]\n", "whole control periods"),
        ("latency_fraction: [0, 1.0]\n", "fraction of one"),
        ("control_jitter: [0, 1.0]\n", "control_jitter must be < 1"),
        ("mass_scale: [1, 2, 3]\n", r"\[low, high\]"),
        ("mass_scale: fast\n", r"\[low, high\]"),
        ("- mass_scale\n", "expected a mapping"),
    ],
)
def test_profile_loader_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_profile(path)


def test_profile_from_a_path_and_scalar_values(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("latency_steps: 2\nmass_scale: [0.9, 1.1]\n")
    profile = load_profile(path)
    assert profile.name == "mine"
    assert profile.latency_steps.low == profile.latency_steps.high == 2
    with pytest.raises(ConfigError, match=r"not found.*train"):
        load_profile("trian")
