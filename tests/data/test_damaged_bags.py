"""Damaged storage: truncated, garbage, missing metadata. Clear errors or partial data with counts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mpo_ros.data import messages
from mpo_ros.data.bag_reader import open_bag, read_streams
from mpo_ros.data.convert import Bag2DataConfig, convert_bags
from mpo_ros.data.dataset import load_dataset
from mpo_ros.data.recorder import BagRecorder
from mpo_ros.data.scripted import record_scripted_bag
from mpo_ros.errors import BagError

STORE = messages.typestore("kilted")


def _bag(tmp_path, storage: str, count: int = 5000):
    path = tmp_path / f"bag_{storage}"
    with BagRecorder(path, storage=storage) as rec:
        for i in range(count):
            rec.write("/joint_states", messages.joint_state(STORE, i, ["a"], [float(i)]), 1000 + i)
    return path


def _storage_file(path):
    (file,) = [p for p in path.iterdir() if p.suffix in (".db3", ".mcap")]
    return file


def _truncate(file, fraction: float) -> None:
    size = file.stat().st_size
    with file.open("r+b") as fh:
        fh.truncate(int(size * fraction))


def test_truncated_mcap_keeps_the_first_part_with_counts(tmp_path):
    path = _bag(tmp_path, "mcap", 20000)
    _truncate(_storage_file(path), 0.5)
    with open_bag(path) as bag:
        states = read_streams(bag, ["/joint_states"])["/joint_states"].finish()
        report = bag.report
    assert report.partial
    assert 0 < len(states) < 20000
    assert report.messages_read["/joint_states"] == len(states)
    # What survived is the beginning of the recording, complete and in order.
    assert np.array_equal(states.positions[:, 0], np.arange(len(states)))
    assert any("salvaged" in note and "cut at byte" in note for note in report.notes)


def test_truncated_sqlite_gives_a_clear_error(tmp_path):
    path = _bag(tmp_path, "sqlite3")
    _truncate(_storage_file(path), 0.5)
    with pytest.raises(BagError, match=r"bag_sqlite3.*(malformed|corrupt|not a rosbag2)"):
        open_bag(path)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_garbage_storage_gives_a_clear_error(tmp_path, storage):
    path = _bag(tmp_path, storage, 10)
    _storage_file(path).write_bytes(b"\x00garbage" * 512)
    with pytest.raises(BagError, match="can be read"):
        open_bag(path)


def test_not_a_bag_at_all(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        open_bag(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match=r"neither metadata\.yaml"):
        open_bag(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        open_bag(tmp_path / "notes.txt")


def test_missing_metadata_is_recovered_from_the_storage_file(tmp_path):
    path = _bag(tmp_path, "sqlite3", 100)
    (path / "metadata.yaml").unlink()
    with open_bag(path) as bag:
        assert bag.topics["/joint_states"].count == 100
        assert any("metadata.yaml missing" in note for note in bag.report.notes)


def test_corrupt_messages_are_counted_and_skipped(tmp_path):
    path = tmp_path / "bag"
    with BagRecorder(path, storage="sqlite3") as rec:
        for i in range(20):
            rec.write("/joint_states", messages.joint_state(STORE, i, ["a"], [float(i)]), 1000 + i)
        rec.write_serialized("/joint_states", messages.JOINT_STATE, b"\x00\x01\x00\x00\xff\xff", 2000)
        rec.write_serialized("/joint_states", messages.JOINT_STATE, b"junk", 2001)
    with open_bag(path) as bag:
        states = read_streams(bag, ["/joint_states"])["/joint_states"].finish()
        assert bag.report.decode_errors == {"/joint_states": 2}
    assert len(states) == 20


def test_conversion_of_a_truncated_recording_keeps_the_readable_episodes(tmp_path, arm2):
    good = tmp_path / "good"
    record_scripted_bag(arm2, good, storage="mcap", episodes=6, seed=3)
    cut = tmp_path / "cut"
    shutil.copytree(good, cut)
    _truncate(_storage_file(cut), 0.6)
    config = Bag2DataConfig(
        bags=[str(good), str(cut)], robot=arm2.name, out=str(tmp_path / "ds"), progress=False
    )
    path, summary = convert_bags(config)
    dataset = load_dataset(path)
    assert summary["partial_bags"] == [str(cut)]
    assert 6 < summary["episodes"] < 12  # six from the good bag plus the readable part of the cut one
    assert len(dataset) == summary["steps"]
    cut_source = dataset.meta["sources"][1]
    assert cut_source["report"]["partial"] and cut_source["files"][0]["size"] > 0
