"""Zero-order hold, staleness and episode cuts on hand-made streams."""

from __future__ import annotations

import numpy as np

from mpo_ros.data.align import align_steps, hold_index, split_segments
from mpo_ros.data.streams import CommandStream, JointStateStream, PointStream

MS = 1_000_000


def _states(times_ms, positions):
    positions = np.asarray(positions, float)
    n = len(times_ms)
    t = np.asarray(times_ms, np.int64) * MS
    return JointStateStream(t, t, ("shoulder", "elbow"), positions, np.zeros((n, 2)), np.full((n, 2), np.nan))


def _commands(times_ms):
    n = len(times_ms)
    return CommandStream(np.asarray(times_ms, np.int64) * MS, None, np.zeros((n, 2)))


def _goals(times_ms, points):
    t = np.asarray(times_ms, np.int64) * MS
    return PointStream(t, t, np.asarray(points, float))


def test_hold_index_takes_the_latest_of_repeated_stamps():
    events = np.array([10, 20, 20, 20, 30])
    assert hold_index(events, np.array([5, 10, 19, 20, 25, 30, 99])).tolist() == [-1, 0, 0, 3, 3, 4, 4]


def test_steps_without_fresh_state_or_goal_are_dropped_and_counted(arm2):
    states = _states([0, 20, 40, 200], [[0.0, 0.0], [0.1, 0.0], [np.nan, 0.0], [0.3, 0.0]])
    goals = _goals([30], [[0.3, 0.1, 0.0]])
    commands = _commands([-5, 21, 41, 61, 120, 201, 221])
    steps = align_steps(arm2, commands, states, goals, max_state_age_s=0.05)
    # -5: no state yet; 21: no goal yet; 41: NaN state; 61: held 40 -> NaN; 120: state 80 ms old.
    assert steps.dropped == {"no_state_yet": 1, "nan_state": 2, "stale_state": 1, "no_goal_yet": 1}
    assert (steps.time_ns // MS).tolist() == [201, 221]
    assert np.allclose(steps.joint_positions[:, 0], [0.3, 0.3])
    assert np.allclose(steps.state_age_s, [0.001, 0.021])
    assert np.allclose(steps.goal, [[0.3, 0.1], [0.3, 0.1]])


def test_segments_cut_at_gaps_goal_changes_jumps_and_holes(arm2):
    times = [0, 20, 40, 60, 140, 160, 180, 200, 220, 240]
    positions = [[0.01 * i, 0.0] for i in range(10)]
    positions[8:] = [[2.0, 0.0], [2.01, 0.0]]  # a teleport: a sim reset
    states = _states(times, positions)
    goals = _goals([0, 170], [[0.3, 0.1, 0], [0.4, 0.0, 0]])
    commands = _commands([t + 1 for t in times])
    steps = align_steps(arm2, commands, states, goals, max_state_age_s=0.05)
    bounds, reasons = split_segments(arm2, steps, max_gap_periods=1.5)
    assert bounds == [(0, 4), (4, 6), (6, 8), (8, 10)]
    assert reasons == {"gap": 1, "goal_change": 1, "state_jump": 1}
