"""Replay: episode structure, n-step sequences (also across the ring's wrap-around), persistence, mixing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpo_ros.errors import DatasetError
from mpo_ros.mpo.losses import n_step_return
from mpo_ros.training.replay import MixedReplay, ReplayBuffer

OBS, ACT = 3, 2


def _episode(start: float, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations [T+1] whose first entry counts steps, so every sampled row says where it came from."""
    obs = np.zeros((steps + 1, OBS), np.float32)
    obs[:, 0] = start + np.arange(steps + 1)
    actions = np.tile(np.linspace(-1, 1, ACT, dtype=np.float32), (steps, 1))
    rewards = (start + np.arange(steps)).astype(np.float32)
    return obs, actions, rewards


def test_sequences_follow_the_episode_and_stop_at_its_end() -> None:
    replay = ReplayBuffer(100, OBS, ACT, seed=0)
    replay.add_episode(*_episode(0, 4), terminated=True)
    replay.add_episode(*_episode(100, 6), terminated=False)
    batch = replay.sample(256, 3)
    assert batch.observations.shape == (256, 3, OBS) and batch.mask.shape == (256, 3)
    for i in range(256):
        first = batch.observations[i, 0, 0]
        base, offset = (0, first) if first < 100 else (100, first - 100)
        length = 4 if base == 0 else 6
        valid = int(min(3, length - offset))
        np.testing.assert_array_equal(batch.mask[i], [1.0] * valid + [0.0] * (3 - valid))
        np.testing.assert_array_equal(batch.rewards[i, :valid], first + np.arange(valid))
        np.testing.assert_array_equal(batch.next_observations[i, :valid, 0], first + 1 + np.arange(valid))
        ends_here = offset + valid == length
        assert batch.terminated[i, valid - 1] == float(base == 0 and ends_here)
    assert np.isnan(batch.behaviour_log_probs).all()


def test_step_by_step_adds_equal_add_episode() -> None:
    obs, actions, rewards = _episode(0, 5)
    a = ReplayBuffer(20, OBS, ACT, seed=1)
    a.add_episode(obs, actions, rewards, terminated=True)
    b = ReplayBuffer(20, OBS, ACT, seed=1)
    for t in range(5):
        b.add(obs[t], actions[t], rewards[t], obs[t + 1], terminated=t == 4, truncated=False)
    for x, y in zip(a.sample(32, 4), b.sample(32, 4), strict=True):
        np.testing.assert_array_equal(x, y)


def test_ring_wraps_and_sequences_never_cross_into_older_data() -> None:
    replay = ReplayBuffer(10, OBS, ACT, seed=2)
    for k in range(5):  # 5 episodes of 3 steps into a 10-slot ring: the oldest are overwritten
        replay.add_episode(*_episode(10 * k, 3), terminated=False)
    assert len(replay) == 10
    batch = replay.sample(500, 4)
    starts = batch.observations[:, 0, 0]
    assert starts.min() >= 12  # episode 1's first step (obs 10, 11) was overwritten; 12 survives
    valid = batch.mask.sum(1)
    np.testing.assert_array_equal(valid, 3 - (starts % 10))


def test_n_step_targets_from_replay_match_the_closed_form() -> None:
    gamma = 0.9
    replay = ReplayBuffer(50, OBS, ACT, seed=3)
    replay.add_episode(*_episode(0, 2), terminated=True)  # rewards 0, 1
    replay.add_episode(*_episode(10, 2), terminated=False)  # rewards 10, 11, truncated
    batch = replay.sample(64, 3)
    tensors = [torch.from_numpy(x) for x in (batch.rewards, batch.mask, batch.terminated)]
    bootstrap = torch.full((64,), 100.0)
    target = n_step_return(*tensors, bootstrap, gamma).numpy()
    expected = {0.0: 0 + gamma * 1, 1.0: 1.0, 10.0: 10 + gamma * 11 + gamma**2 * 100, 11.0: 11 + gamma * 100}
    for first, got in zip(batch.rewards[:, 0], target, strict=True):
        assert got == pytest.approx(expected[float(first)], rel=1e-6)


def test_add_episode_rejects_mismatched_arrays_with_the_expected_shapes() -> None:
    replay = ReplayBuffer(10, OBS, ACT)
    obs, actions, rewards = _episode(0, 4)
    with pytest.raises(DatasetError, match="T\\+1 rows"):
        replay.add_episode(obs[:-1], actions, rewards, terminated=False)
    with pytest.raises(DatasetError, match="does not fit"):
        replay.add_episode(*_episode(0, 11), terminated=False)


def test_save_load_round_trip_restores_data_counters_and_rng(tmp_path) -> None:
    replay = ReplayBuffer(8, OBS, ACT, seed=4)
    for k in range(4):
        replay.add_episode(*_episode(10 * k, 3), terminated=k % 2 == 0, log_probs=np.full(3, -1.0 * k))
    replay.add(np.ones(OBS), np.zeros(ACT), 5.0, np.ones(OBS), terminated=False, truncated=False)
    replay.save(tmp_path / "r.npz")
    restored = ReplayBuffer(8, OBS, ACT, seed=99)
    restored.load(tmp_path / "r.npz")
    assert (restored.size, restored.episode) == (replay.size, replay.episode)
    for x, y in zip(replay.sample(64, 3), restored.sample(64, 3), strict=True):
        np.testing.assert_array_equal(x, y)
    # the in-progress episode continues after the load
    for buf in (replay, restored):
        buf.add(np.ones(OBS), np.zeros(ACT), 6.0, np.ones(OBS), terminated=True, truncated=False)
    for x, y in zip(replay.sample(64, 3), restored.sample(64, 3), strict=True):
        np.testing.assert_array_equal(x, y)


def test_mixed_replay_draws_fixed_fractions_and_covers_empty_sources() -> None:
    online = ReplayBuffer(100, OBS, ACT, seed=5)
    offline = ReplayBuffer(100, OBS, ACT, seed=6)
    offline.add_episode(*_episode(1000, 20), terminated=False)
    mixed = MixedReplay([online, offline], [0.5, 0.5])
    assert mixed.counts(256) == [0, 256]  # online still empty: logged data fills the batch
    online.add_episode(*_episode(0, 20), terminated=False)
    assert mixed.counts(256) == [128, 128]
    batch = mixed.sample(256, 2)
    from_offline = batch.observations[:, 0, 0] >= 1000
    assert from_offline.sum() == 128 and batch.mask.shape == (256, 2)
    assert MixedReplay([online, offline], [1, 3]).counts(10) == [2, 8]
    with pytest.raises(ValueError, match="one ratio per buffer"):
        MixedReplay([online], [0.5, 0.5])


def test_mixed_replay_rng_states_round_trip_and_reject_a_wrong_count() -> None:
    buffers = []
    for seed in (0, 1):
        buf = ReplayBuffer(100, 3, 2, seed=seed)
        rng = np.random.default_rng(seed)
        buf.add_episode(rng.normal(size=(31, 3)), rng.uniform(-1, 1, (30, 2)), rng.normal(size=30), False)
        buffers.append(buf)
    mixed = MixedReplay(buffers, [0.5, 0.5])
    states = mixed.rng_states()
    first = mixed.sample(8, 2)
    mixed.set_rng_states(states)
    again = mixed.sample(8, 2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="2 buffers"):
        mixed.set_rng_states(states[:1])


def _near_start_by_state(replay: ReplayBuffer, length: int) -> dict[float, float]:
    """near_start of the sequence starting at every stored slot, keyed by the slot's observation."""
    batch = replay.sequences(np.arange(replay.capacity)[: len(replay)], length)
    return dict(zip(batch.observations[:, 0, 0].tolist(), batch.near_start.tolist(), strict=True))


def test_near_start_marks_the_first_length_steps_of_every_episode() -> None:
    replay = ReplayBuffer(100, OBS, ACT, seed=0)
    replay.add_episode(*_episode(0, 7), terminated=True)
    replay.add_episode(*_episode(100, 2), terminated=False)  # shorter than the sequence length
    replay.add_episode(*_episode(200, 5), terminated=False)
    flags = _near_start_by_state(replay, 3)
    expected = {**{float(i): float(i < 3) for i in range(7)}, 100.0: 1.0, 101.0: 1.0,
                **{200.0 + i: float(i < 3) for i in range(5)}}  # fmt: skip
    assert flags == expected
    assert replay.sample(64, 3).near_start.shape == (64,)


def test_near_start_looks_back_across_the_ring_and_not_into_the_newest_writes() -> None:
    """Once the ring wraps, the oldest stored slot is the start of what remains of its episode (its true
    start was overwritten): nothing is stored behind it, so no sequence ends on its first steps."""
    replay = ReplayBuffer(10, OBS, ACT, seed=0)
    replay.add_episode(*_episode(0, 6), terminated=False)  # slots 0-5
    replay.add_episode(*_episode(100, 7), terminated=False)  # slots 6-9, then 0-2: wraps; oldest slot is 3
    flags = _near_start_by_state(replay, 2)
    assert flags == {
        3.0: 1.0,
        4.0: 1.0,
        5.0: 0.0,
        100.0: 1.0,
        101.0: 1.0,
        **{100.0 + i: 0.0 for i in range(2, 7)},
    }


def test_near_start_treats_an_interleaved_segment_as_a_new_run() -> None:
    """Ray actors interleave segments of their episodes: a sequence is cut where another stream's segment
    begins, so the first steps of each segment are near a start even though the episode began earlier."""
    replay = ReplayBuffer(50, OBS, ACT, seed=0)
    a, b = replay.new_episode_id(), replay.new_episode_id()
    for base, episode in ((0, a), (100, b), (4, a)):
        obs = np.zeros((4, OBS), np.float32)
        obs[:, 0] = base + np.arange(4)
        next_obs = obs + np.array([1.0, 0.0, 0.0], np.float32)
        replay.add_segment(
            obs, np.zeros((4, ACT)), np.zeros(4), next_obs, np.zeros(4), np.full(4, np.nan), episode
        )
    flags = _near_start_by_state(replay, 2)
    assert [flags[float(x)] for x in (0, 1, 2, 3, 100, 101, 102, 103, 4, 5, 6, 7)] == [1, 1, 0, 0] * 3
