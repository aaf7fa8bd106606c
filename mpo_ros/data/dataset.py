"""Training datasets on disk: versioned, memory-mappable, written atomically.

Layout of ``data/<name>/`` (format_version 1), step-indexed like D4RL / Minari's flattened view:

=========================  ==============  ==========================================================
file                       dtype, shape    meaning
=========================  ==============  ==========================================================
``observations.npy``       float32 [N, O]  observation at the step (observation.build_observation)
``actions.npy``            float32 [N, A]  action in [-1, 1] units (observation.command_to_action);
                                           logged commands outside the range keep |a| > 1
``rewards.npy``            float32 [N]     reward relabelled with mpo_ros.contract.tasks.reward
``next_observations.npy``  float32 [N, O]  observation at the following step
``terminated.npy``         bool [N]        true terminal state (value 0 after it); reach: never
``truncated.npy``          bool [N]        episode cut without a terminal state (bootstrap after)
``success.npy``            bool [N]        tasks.success at the next state
``timestamps.npy``         int64 [N]       receive time (ns) of the step's command in its bag
``episode_starts.npy``     int64 [E]       first step of each episode; episode e spans
                                           [starts[e], starts[e+1]) (the last one ends at N)
``meta.json``              JSON            format_version, robot contract, observation names,
                                           source bags (files with size and sha256), counts,
                                           the conversion summary and config
=========================  ==============  ==========================================================

Why flat .npy and not one HDF5 file per dataset (Minari): replay samples transitions uniformly, so a
flat step index is what it needs; ``np.load(mmap_mode="r")`` maps a dataset larger than memory with
no extra dependency; `next_observations` costs twice the observation storage but keeps sampling a
single gather (episode-indexed layouts need an index shift per sample and care at episode ends).
Each episode's last step has ``truncated or terminated`` set, so episodes can also be rebuilt.

A dataset is written into a temporary sibling folder and renamed into place, so a crash never leaves
a half-written dataset under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import DatasetError

__all__ = [
    "ARRAYS",
    "FORMAT_VERSION",
    "Dataset",
    "check_writable_dataset_path",
    "load_dataset",
    "write_dataset",
]

FORMAT_VERSION = 1

# name -> (dtype, number of dimensions); step arrays have N rows, episode_starts E.
ARRAYS: dict[str, tuple[str, int]] = {
    "observations": ("float32", 2),
    "actions": ("float32", 2),
    "rewards": ("float32", 1),
    "next_observations": ("float32", 2),
    "terminated": ("bool", 1),
    "truncated": ("bool", 1),
    "success": ("bool", 1),
    "timestamps": ("int64", 1),
    "episode_starts": ("int64", 1),
}


@dataclass
class Dataset:
    """A loaded dataset: arrays (memory-mapped by default) plus meta.json."""

    path: Path
    meta: dict[str, Any]
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray
    timestamps: np.ndarray
    episode_starts: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts)

    @property
    def robot_spec(self) -> RobotSpec | None:
        spec = self.meta.get("robot_spec")
        return None if spec is None else RobotSpec.from_dict(spec, source=f"{self.path}/meta.json")

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def episode_bounds(self) -> list[tuple[int, int]]:
        """Half-open step ranges [start, end) of every episode."""
        ends = np.append(self.episode_starts[1:], len(self))
        return [(int(a), int(b)) for a, b in zip(self.episode_starts, ends, strict=True)]

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode."""
        if not len(self):
            return np.zeros(0)
        return np.add.reduceat(np.asarray(self.rewards, dtype=np.float64), self.episode_starts)


def _check(arrays: dict[str, np.ndarray], where: str) -> None:
    missing = sorted(set(ARRAYS) - set(arrays))
    if missing:
        raise DatasetError(f"{where}: missing array(s) {missing}; re-create it with `mpo-ros bag2data`")
    n = len(arrays["rewards"])
    for name, (dtype, ndim) in ARRAYS.items():
        array = arrays[name]
        if array.dtype != np.dtype(dtype) or array.ndim != ndim:
            raise DatasetError(
                f"{where}: {name} is {array.dtype} with {array.ndim} dims; expected {dtype}, {ndim}"
            )
        if name != "episode_starts" and len(array) != n:
            raise DatasetError(f"{where}: {name} has {len(array)} rows but rewards has {n}")
    if arrays["observations"].shape != arrays["next_observations"].shape:
        raise DatasetError(f"{where}: observations and next_observations differ in shape")
    starts = arrays["episode_starts"]
    if n and (len(starts) == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= n):
        raise DatasetError(f"{where}: episode_starts must start at 0 and increase strictly below {n}")


def write_dataset(
    path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], overwrite: bool = False
) -> Path:
    """Write arrays + meta.json atomically (temporary folder, then rename) and return the path."""
    path = Path(path)
    arrays = {
        name: np.ascontiguousarray(arrays[name], dtype=ARRAYS[name][0]) for name in ARRAYS if name in arrays
    }
    _check(arrays, str(path))
    check_writable_dataset_path(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        full_meta = {
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "num_steps": len(arrays["rewards"]),
            "num_episodes": len(arrays["episode_starts"]),
            "obs_dim": int(arrays["observations"].shape[1]),
            "act_dim": int(arrays["actions"].shape[1]),
            **meta,
        }
        (tmp / "meta.json").write_text(
            json.dumps(full_meta, indent=2, allow_nan=False, default=_json_default)
        )
        for file in tmp.iterdir():
            with file.open("rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def check_writable_dataset_path(path: str | Path, overwrite: bool) -> None:
    """``--out`` may be new, or (with ``--overwrite``) an existing *dataset*; never anything else.

    ``--overwrite`` once replaced whatever folder it was given (a bag being converted, a training run);
    a folder is a dataset only if its meta.json says so (``format_version``) and it holds the arrays.
    """
    path = Path(path)
    if not path.exists():
        return
    if not overwrite:
        raise DatasetError(f"{path} exists already; choose another --out or pass --overwrite")
    meta = path / "meta.json"
    is_dataset = False
    if path.is_dir() and meta.is_file() and (path / "rewards.npy").is_file():
        try:
            is_dataset = "format_version" in json.loads(meta.read_text())
        except (OSError, ValueError):
            is_dataset = False
    if not is_dataset:
        held = sorted(p.name for p in path.iterdir())[:6] if path.is_dir() else ["(a file)"]
        raise DatasetError(
            f"--overwrite replaces only an mpo_ros dataset, and {path} is not one (no meta.json with "
            f"format_version and arrays; it holds {held}); choose another --out"
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in meta.json")


def load_dataset(path: str | Path, mmap: bool = True) -> Dataset:
    """Load a dataset written by `mpo-ros bag2data`; arrays are memory-mapped unless mmap=False."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise DatasetError(f"{path} is not a dataset (no meta.json); create one with `mpo-ros bag2data`")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{meta_path} is not valid JSON ({exc}); re-create the dataset") from exc
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise DatasetError(
            f"{path} has dataset format {version!r}; this mpo_ros reads format {FORMAT_VERSION}. "
            "Re-convert the bags with this version's `mpo-ros bag2data`"
        )
    arrays: dict[str, np.ndarray] = {}
    for name in ARRAYS:
        file = path / f"{name}.npy"
        if not file.is_file():
            raise DatasetError(f"{path}: {file.name} is missing; re-create the dataset")
        try:
            arrays[name] = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DatasetError(f"{file} is unreadable ({exc}); re-create the dataset") from exc
    _check(arrays, str(path))
    if meta.get("num_steps") != len(arrays["rewards"]):
        raise DatasetError(
            f"{path}: meta.json says {meta.get('num_steps')} steps, arrays hold {len(arrays['rewards'])}"
        )
    return Dataset(path=path, meta=meta, **arrays)
