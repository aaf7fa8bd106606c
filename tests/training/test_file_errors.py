"""Every file error names the file and the fix; temporary files are removed on failure; export does not
need the replay. (Each case used to end in a traceback: BadZipFile, KeyError, FileExistsError, ...)"""

from __future__ import annotations

import errno
import os
import pickle
import re

import pytest
import torch

from mpo_ros import cli
from mpo_ros.errors import CheckpointError
from mpo_ros.training.replay import ReplayBuffer
from mpo_ros.training.state import atomic_torch_save, load_checkpoint

torch.set_num_threads(1)
BASE = ["train", "--env", "Pendulum-v1", "--warmup-steps", "50", "--policy-hidden", "8", "--critic-hidden", "8",
        "--batch-size", "8", "--num-samples", "3", "--eval-episodes", "1", "--eval-every", "0",
        "--progress", "false", "--threads", "1"]  # fmt: skip


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run"
    assert cli.main([*BASE, "--steps", "60", "--out", str(out)]) == 0
    return out


def test_a_truncated_replay_is_named_and_export_does_without_it(run, tmp_path, caplog) -> None:
    replay = next((run / "checkpoints").glob("replay-*.npz"))
    replay.write_bytes(replay.read_bytes()[:500])
    assert cli.main(["train", "--out", str(run), "--resume", "--steps", "80"]) == 2
    assert f"replay file {replay} is damaged" in caplog.text and "start a new run" in caplog.text
    assert cli.main(["export", "--run", str(run), "--parity-observations", "1000"]) == 0
    assert "cannot read replay" in caplog.text and (run / "policy.onnx").is_file()


def test_a_checkpoint_with_missing_parts_is_refused_by_name(run, caplog) -> None:
    latest = run / "checkpoints" / "latest.pt"
    checkpoint = load_checkpoint(latest)
    del checkpoint["loop"], checkpoint["rng"]
    torch.save(checkpoint, latest)
    assert cli.main(["train", "--out", str(run), "--resume", "--steps", "80"]) == 2
    assert f"{latest} lacks ['loop', 'rng']" in caplog.text
    del checkpoint["learner"]["policy"]
    torch.save(checkpoint, latest)
    assert cli.main(["export", "--run", str(run)]) == 2
    assert "holds no usable policy" in caplog.text


def test_a_pickled_object_is_refused_without_repeating_torchs_advice(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as fh:
        pickle.dump({"learner": os.getcwd, "metadata": {}}, fh)  # a callable: needs full unpickling
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "mpo_ros never loads it" in str(info.value) and "weights_only=False" not in str(info.value)


def test_run_and_export_destinations_are_checked(run, tmp_path, caplog) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert cli.main([*BASE, "--steps", "60", "--out", str(a_file)]) == 2
    assert f"cannot write the run folder {a_file}" in caplog.text
    folder = tmp_path / "exports"
    folder.mkdir()
    assert cli.main(["export", "--run", str(run), "--out", str(folder)]) == 2
    assert "is a folder; give the .onnx file to write" in caplog.text
    assert cli.main(["export", "--run", str(run), "--tolerance", "-1"]) == 2
    assert "tolerance=-1.0 must lie in (0, 1)" in caplog.text
    latest = str(run / "checkpoints" / "latest.pt")
    assert (
        cli.main(["export", "--run", str(run), "--checkpoint", latest, "--out", str(tmp_path / "p.onnx")])
        == 2
    )
    assert "give --run or --checkpoint, not both" in caplog.text
    assert not list(folder.iterdir()) and not (tmp_path / "p.onnx").exists()


def test_a_full_disk_leaves_no_temporary_file_and_names_the_file(tmp_path, monkeypatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    target = tmp_path / "latest.pt"
    with pytest.raises(
        CheckpointError, match=re.escape(f"cannot write the checkpoint {target}: No space left")
    ):
        atomic_torch_save({"x": 1}, target)
    replay = ReplayBuffer(10, 2, 1)
    with pytest.raises(CheckpointError, match=r"cannot write the replay .*No space left"):
        replay.save(tmp_path / "replay-0.npz")
    assert list(tmp_path.iterdir()) == []
