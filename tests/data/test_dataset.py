"""Dataset files: round trip, memory mapping, atomic replacement, version and shape checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mpo_ros.data.dataset import FORMAT_VERSION, load_dataset, write_dataset
from mpo_ros.errors import DatasetError


def _arrays(n=7, obs=3, act=2):
    rng = np.random.default_rng(0)
    truncated = np.zeros(n, bool)
    truncated[[2, n - 1]] = True
    return {
        "observations": rng.normal(size=(n, obs)),
        "actions": rng.uniform(-1, 1, (n, act)),
        "rewards": rng.normal(size=n),
        "next_observations": rng.normal(size=(n, obs)),
        "terminated": np.zeros(n, bool),
        "truncated": truncated,
        "success": np.zeros(n, bool),
        "timestamps": np.arange(n, dtype=np.int64),
        "episode_starts": np.array([0, 3]),
    }


def test_round_trip_is_memory_mapped_and_versioned(tmp_path):
    arrays = _arrays()
    path = write_dataset(tmp_path / "ds", arrays, {"note": "x"})
    dataset = load_dataset(path)
    assert isinstance(dataset.observations, np.memmap)
    assert dataset.observations.dtype == np.float32 and dataset.timestamps.dtype == np.int64
    assert np.allclose(dataset.rewards, arrays["rewards"].astype(np.float32))
    assert dataset.episode_bounds() == [(0, 3), (3, 7)]
    assert np.allclose(
        dataset.episode_returns(), [arrays["rewards"][:3].sum(), arrays["rewards"][3:].sum()], atol=1e-5
    )
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["num_steps"] == 7 and meta["note"] == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folder left behind


def test_existing_dataset_is_kept_unless_overwrite(tmp_path):
    write_dataset(tmp_path / "ds", _arrays(), {})
    with pytest.raises(DatasetError, match="--overwrite"):
        write_dataset(tmp_path / "ds", _arrays(9), {})
    write_dataset(tmp_path / "ds", _arrays(9), {}, overwrite=True)
    assert len(load_dataset(tmp_path / "ds")) == 9
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_failed_write_leaves_nothing(tmp_path):
    arrays = _arrays()
    arrays["rewards"] = arrays["rewards"][:-1]
    with pytest.raises(DatasetError, match="rows"):
        write_dataset(tmp_path / "ds", arrays, {})
    assert not list(tmp_path.iterdir())


def test_unknown_version_and_missing_files_are_refused(tmp_path):
    path = write_dataset(tmp_path / "ds", _arrays(), {})
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="format"):
        load_dataset(path)
    meta["format_version"] = FORMAT_VERSION
    (path / "meta.json").write_text(json.dumps(meta))
    (path / "actions.npy").unlink()
    with pytest.raises(DatasetError, match=r"actions\.npy is missing"):
        load_dataset(path)
    with pytest.raises(DatasetError, match=r"no meta\.json"):
        load_dataset(tmp_path)
