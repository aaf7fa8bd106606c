"""Sim -> bag -> dataset: alignment and reward relabelling against the simulator's own numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpo_ros import cli
from mpo_ros.contract.observation import (
    action_to_command,
    build_observation,
    command_to_action,
    observation_names,
)
from mpo_ros.data.convert import Bag2DataConfig, convert_bags
from mpo_ros.data.dataset import load_dataset
from mpo_ros.data.scripted import record_scripted_bag
from mpo_ros.errors import ContractError, DatasetError

EPISODES = 4


@pytest.mark.parametrize(
    "storage,command_type,cutoff_hz",
    [
        ("mcap", "float64_multi_array", 0.0),
        ("sqlite3", "joint_trajectory", 0.0),
        ("mcap", "float64_multi_array", 3.0),
    ],
)
def test_sim_recording_converts_to_the_transitions_the_sim_produced(
    tmp_path, arm2, storage, command_type, cutoff_hz
):
    """cutoff_hz > 0: the contract's low-pass filter; the converter must invert it to recover actions."""
    import dataclasses

    import yaml

    # Both ways explicitly (arm2 ships with a 3 Hz low-pass): no filter, and the filter inverted.
    arm2 = dataclasses.replace(
        arm2, action_filter="lowpass" if cutoff_hz else "none", action_filter_cutoff_hz=cutoff_hz
    )
    spec_file = tmp_path / "arm2_variant.yaml"
    data = arm2.to_dict()
    data["mjcf"] = str(arm2.mjcf_path.resolve())
    spec_file.write_text(yaml.safe_dump(json.loads(json.dumps(data))))
    bag = tmp_path / "bag"
    rollouts = record_scripted_bag(
        arm2, bag, storage=storage, episodes=EPISODES, seed=7, command_type=command_type
    )
    config = Bag2DataConfig(bags=[str(bag)], robot=str(spec_file), out=str(tmp_path / "ds"), progress=False)
    path, summary = convert_bags(config)
    data = load_dataset(path)
    steps = arm2.episode_steps

    # One episode per sim episode; its last command has no next state inside the episode.
    assert data.episode_bounds() == [(e * (steps - 1), (e + 1) * (steps - 1)) for e in range(EPISODES)]
    assert np.all(data.truncated[data.episode_starts[1:] - 1]) and data.truncated[-1]
    assert not data.terminated.any()
    assert int(data.truncated.sum()) == EPISODES
    assert summary["dropped_steps"] == {"segment_end": EPISODES}

    # Rewards and success relabelled from /joint_states equal what the sim computed from its own state.
    rewards = np.asarray(data.rewards).reshape(EPISODES, steps - 1)
    assert np.allclose(rewards, rollouts.rewards[:, :-1], atol=1e-5)
    assert np.array_equal(np.asarray(data.success).reshape(EPISODES, -1), rollouts.success[:, :-1])
    assert np.array_equal(
        np.asarray(data.timestamps).reshape(EPISODES, -1), rollouts.command_times_ns[:, :-1]
    )

    # Observations and actions are what the environment produced and was given (float32 rounding aside).
    shape = (EPISODES, steps - 1)
    assert np.allclose(
        np.asarray(data.observations).reshape(*shape, -1), rollouts.observations[:, :-1], atol=1e-5
    )
    assert np.allclose(np.asarray(data.actions).reshape(*shape, -1), rollouts.actions[:, :-1], atol=1e-6)
    obs = np.asarray(data.observations)
    names = observation_names(arm2)
    goal_cols = [i for i, n in enumerate(names) if n.startswith("goal/")]
    last_cols = [i for i, n in enumerate(names) if n.startswith("last_action/")]
    for e, (start, end) in enumerate(data.episode_bounds()):
        assert np.allclose(obs[start:end, goal_cols], rollouts.goals[e], atol=1e-6)
        if (
            not cutoff_hz
        ):  # with the filter, last_action is the executed (filtered) command, not the raw action
            assert np.allclose(obs[start + 1 : end, last_cols], data.actions[start : end - 1], atol=1e-6)
    within = ~np.asarray(data.truncated)
    assert np.allclose(data.next_observations[:-1][within[:-1]], obs[1:][within[:-1]])

    # Actions map back to the logged (limited) commands; the scripted controller stays in range.
    commands = action_to_command(arm2, np.asarray(data.actions, np.float64))
    assert np.allclose(command_to_action(arm2, commands), data.actions, atol=1e-6)
    assert summary["actions_out_of_range"] == 0

    meta = json.loads((path / "meta.json").read_text())
    assert meta["robot_spec"]["name"] == "arm2" and meta["observation_names"] == names
    (source,) = meta["sources"]
    assert len(source["files"]) == 2 and all(len(f["sha256"]) == 64 for f in source["files"])
    expected_return = rollouts.rewards[:, :-1].sum(axis=1).mean()
    assert summary["episode_return"]["mean"] == pytest.approx(expected_return, abs=1e-3)
    assert meta["summary"] == json.loads(json.dumps(summary))


def test_observation_matches_build_observation_of_the_held_state(tmp_path, arm2):
    bag = tmp_path / "bag"
    record_scripted_bag(arm2, bag, episodes=1, seed=1)
    path, _ = convert_bags(
        Bag2DataConfig(bags=[str(bag)], robot="arm2", out=str(tmp_path / "ds"), progress=False)
    )
    data = load_dataset(path)
    obs = np.asarray(data.observations)
    n = arm2.num_joints
    positions = obs[:, :n] + np.array([j.default for j in arm2.joints])
    rebuilt = build_observation(arm2, positions, obs[:, n : 2 * n], obs[:, 2 * n : 3 * n], obs[:, 3 * n :])
    assert np.allclose(rebuilt, obs, atol=1e-6)


def test_cli_converts_and_prints_a_summary(tmp_path, arm2, capsys, caplog):
    bag = tmp_path / "bag"
    record_scripted_bag(arm2, bag, storage="sqlite3", episodes=2, seed=2)
    out = tmp_path / "ds"
    assert cli.main(["bag2data", str(bag), "--robot", "arm2", "--out", str(out), "--progress", "false"]) == 0
    printed = capsys.readouterr().out
    assert f"dataset {out}" in printed and "episode return mean" in printed
    # Refuses to overwrite silently; --overwrite replaces.
    assert cli.main(["bag2data", str(bag), "--robot", "arm2", "--out", str(out), "--progress", "false"]) == 2
    assert (
        cli.main(
            ["bag2data", str(bag), "--robot", "arm2", "--out", str(out), "--overwrite", "--progress", "false"]
        )
        == 0
    )
    # --overwrite replaces only a dataset: never the source bag, nor a training run.
    run = tmp_path / "runs" / "A"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.pt").write_bytes(b"weights")
    for target in (bag, run):
        before = sorted(p.relative_to(target) for p in target.rglob("*"))
        argv = [
            "bag2data",
            str(bag),
            "--robot",
            "arm2",
            "--out",
            str(target),
            "--overwrite",
            "--progress",
            "false",
        ]
        assert cli.main(argv) == 2
        assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert "replaces only an mpo_ros dataset" in caplog.text


def test_bag_of_another_robot_is_refused_with_the_joint_names(tmp_path, arm2):
    bag = tmp_path / "bag"
    record_scripted_bag(arm2, bag, episodes=1, seed=1)
    arm6 = pytest.importorskip("mpo_ros.contract.spec").load_spec("arm6")
    config = Bag2DataConfig(bags=[str(bag)], robot="arm6", out=str(tmp_path / "ds"), progress=False)
    with pytest.raises(DatasetError, match=r"shoulder.*elbow") as info:
        convert_bags(config)
    assert arm6.joint_names[0] in str(info.value)
    assert not (tmp_path / "ds").exists()
    with pytest.raises(ContractError):
        from mpo_ros.data.bag_reader import open_bag
        from mpo_ros.data.convert import read_bag_streams

        with open_bag(bag) as opened:
            read_bag_streams(opened, arm6, config)


def test_stale_joint_states_are_dropped(tmp_path, arm2):
    bag = tmp_path / "bag"
    record_scripted_bag(arm2, bag, episodes=2, seed=1)
    # A max age below the 0.8 ms between state and command drops every step: nothing to write.
    config = Bag2DataConfig(
        bags=[str(bag)], robot="arm2", out=str(tmp_path / "ds"), progress=False, max_state_age=0.0005
    )
    with pytest.raises(DatasetError, match="nothing to write"):
        convert_bags(config)
