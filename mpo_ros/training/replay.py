"""Replay buffers that keep episode structure, so n-step and Retrace targets can be formed at sample time.

A :class:`ReplayBuffer` is a preallocated numpy ring of transitions ``(obs, action, reward, next_obs,
terminated)`` with an episode id per slot. Sampling returns short sequences starting at uniformly drawn
transitions, with a mask that is 1 while the sequence stays inside the starting episode: the learner turns
these into n-step (or Retrace) targets, so a single stored episode serves any ``n_step``.

Online data is added step by step with :meth:`ReplayBuffer.add`; logged data (e.g. converted rosbags) whole
episodes at a time with :meth:`ReplayBuffer.add_episode`. :class:`MixedReplay` draws fixed fractions of every
batch from several buffers (RLPD, Ball et al. 2023, samples 50 % online / 50 % offline).

Shapes: B batch, L sequence length, O observation dims, D action dims, T episode length.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpo_ros.errors import CheckpointError, DatasetError
from mpo_ros.mpo.batch import SequenceBatch

__all__ = ["MixedReplay", "ReplayBuffer", "SequenceBatch"]


class ReplayBuffer:
    """Fixed-capacity FIFO replay of transitions grouped into episodes.

    ``seed`` drives the buffer's own numpy ``Generator`` (saved with :meth:`state_dict`), so sampling is
    reproducible and independent of other consumers of randomness.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, seed: int = 0) -> None:
        if capacity <= 0:
            raise ValueError(f"replay capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.observations = np.zeros((capacity, obs_dim), np.float32)
        self.next_observations = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, act_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.log_probs = np.full(capacity, np.nan, np.float32)
        self.episode_ids = np.full(capacity, -1, np.int64)
        self.position = 0  # next slot to write
        self.size = 0
        self.episode = 0  # id given to the transitions of the episode being written
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    # --- writing ---------------------------------------------------------------------------------------

    def add(
        self,
        observation: np.ndarray,
        action: np.ndarray,
        reward: float,
        next_observation: np.ndarray,
        terminated: bool,
        truncated: bool,
        log_prob: float = float("nan"),
    ) -> None:
        """Append one transition; ``terminated`` or ``truncated`` closes the current episode."""
        i = self.position
        self.observations[i] = observation
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_observations[i] = next_observation
        self.terminated[i] = float(terminated)
        self.log_probs[i] = log_prob
        self.episode_ids[i] = self.episode
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        if terminated or truncated:
            self.episode += 1

    def end_episode(self) -> None:
        """Close the episode being written without a terminal (e.g. a run stopped mid-episode)."""
        if self.size and self.episode_ids[(self.position - 1) % self.capacity] == self.episode:
            self.episode += 1

    def add_episode(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: bool,
        truncated: bool = True,
        log_probs: np.ndarray | None = None,
    ) -> None:
        """Append a whole episode: ``observations`` [T+1, O] (including the final one), ``actions`` [T, D],
        ``rewards`` [T]. ``terminated``: the last step reached a true terminal (no bootstrap from the final
        observation); otherwise the episode was cut (time limit, end of recording) and targets bootstrap.
        ``truncated`` is kept for symmetry with gymnasium; an episode always closes after its last step.
        """
        del truncated  # every added episode is closed; only `terminated` changes the targets
        observations = np.asarray(observations, np.float32)
        actions = np.asarray(actions, np.float32).reshape(len(actions), -1)
        rewards = np.asarray(rewards, np.float32).reshape(-1)
        steps = len(rewards)
        if observations.shape != (steps + 1, self.obs_dim) or actions.shape != (steps, self.act_dim):
            raise DatasetError(
                f"episode arrays do not fit this replay (obs_dim={self.obs_dim}, act_dim={self.act_dim}): got "
                f"observations {observations.shape} (want ({steps + 1}, {self.obs_dim}): T+1 rows, the final "
                f"observation included), actions {actions.shape} (want ({steps}, {self.act_dim})), "
                f"rewards {rewards.shape}"
            )
        if steps == 0:
            return
        if steps > self.capacity:
            raise DatasetError(f"episode of {steps} steps does not fit a replay of capacity {self.capacity}")
        self.end_episode()
        slots = (self.position + np.arange(steps)) % self.capacity
        self.observations[slots] = observations[:-1]
        self.next_observations[slots] = observations[1:]
        self.actions[slots] = actions
        self.rewards[slots] = rewards
        self.terminated[slots] = 0.0
        self.terminated[slots[-1]] = float(terminated)
        self.log_probs[slots] = np.nan if log_probs is None else np.asarray(log_probs, np.float32)
        self.episode_ids[slots] = self.episode
        self.position = int((self.position + steps) % self.capacity)
        self.size = min(self.size + steps, self.capacity)
        self.episode += 1

    def new_episode_id(self) -> int:
        """A fresh episode id for :meth:`add_segment`: each actor's episode gets its own, so sequences never
        run from one actor's transitions into another's that happen to sit in the next slots."""
        self.end_episode()
        episode = self.episode
        self.episode += 1
        return episode

    def add_segment(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_observations: np.ndarray,
        terminated: np.ndarray,
        log_probs: np.ndarray,
        episode_id: int,
    ) -> None:
        """Append T consecutive transitions of one episode (``episode_id`` from :meth:`new_episode_id`).

        Several streams (Ray actors) interleave their segments; a sampled sequence stays inside one
        episode id, so it ends where another stream's segment begins, like a truncated episode: the target
        bootstraps from the last step it holds.
        """
        steps = len(rewards)
        if steps == 0:
            return
        if steps > self.capacity:
            raise DatasetError(f"segment of {steps} steps does not fit a replay of capacity {self.capacity}")
        slots = (self.position + np.arange(steps)) % self.capacity
        self.observations[slots] = observations
        self.next_observations[slots] = next_observations
        self.actions[slots] = np.asarray(actions, np.float32).reshape(steps, self.act_dim)
        self.rewards[slots] = rewards
        self.terminated[slots] = np.asarray(terminated, np.float32)
        self.log_probs[slots] = log_probs
        self.episode_ids[slots] = episode_id
        self.position = int((self.position + steps) % self.capacity)
        self.size = min(self.size + steps, self.capacity)

    # --- sampling --------------------------------------------------------------------------------------

    def sample(self, batch_size: int, length: int) -> SequenceBatch:
        """``batch_size`` sequences of ``length`` steps starting at uniformly drawn stored transitions."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        start = self.rng.integers(0, self.size, size=batch_size)
        if self.size == self.capacity:
            start = (start + self.position) % self.capacity  # any slot; offset keeps the draw uniform
        return self.sequences(start, length)

    def sequences(self, start: np.ndarray, length: int) -> SequenceBatch:
        """The sequences of ``length`` steps starting at the slots ``start`` [B] (what :meth:`sample` draws).

        ``mask`` keeps each sequence inside the run it starts in: the same episode id, contiguous, and
        written. ``near_start`` marks starts that have fewer than ``length`` earlier transitions of their run
        behind them (looking back across the same boundaries), i.e. states no full-length sequence ends on.
        """
        start = np.asarray(start, dtype=np.int64)
        offsets = np.arange(length)
        idx = (start[:, None] + offsets[None, :]) % self.capacity
        episode = self.episode_ids[idx]
        mask = episode == episode[:, :1]
        back = (start[:, None] - 1 - offsets[None, :]) % self.capacity  # the `length` slots before
        same_run = self.episode_ids[back] == episode[:, :1]
        if self.size < self.capacity:
            mask &= (start[:, None] + offsets[None, :]) < self.size
            same_run &= (start[:, None] - 1 - offsets[None, :]) >= 0
        else:
            # the oldest slot's predecessor is the newest write: another run even within one episode id
            same_run &= np.logical_and.accumulate(back != (self.position - 1) % self.capacity, axis=1)
        mask = np.logical_and.accumulate(mask, axis=1).astype(np.float32)
        near_start = (~same_run.all(axis=1)).astype(np.float32)
        return SequenceBatch(
            observations=self.observations[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_observations=self.next_observations[idx],
            terminated=self.terminated[idx],
            mask=mask,
            behaviour_log_probs=self.log_probs[idx],
            near_start=near_start,
        )

    # --- persistence -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Arrays in insertion order (oldest first, only the filled part) plus counters and RNG state."""
        order = (np.arange(self.size) + (self.position if self.size == self.capacity else 0)) % self.capacity
        return {
            "capacity": self.capacity,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "episode": self.episode,
            "observations": self.observations[order],
            "next_observations": self.next_observations[order],
            "actions": self.actions[order],
            "rewards": self.rewards[order],
            "terminated": self.terminated[order],
            "log_probs": self.log_probs[order],
            "episode_ids": self.episode_ids[order],
            "rng_state": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (int(state["obs_dim"]), int(state["act_dim"])) != (self.obs_dim, self.act_dim):
            raise CheckpointError(
                f"saved replay holds obs_dim={state['obs_dim']}, act_dim={state['act_dim']}; this run has "
                f"obs_dim={self.obs_dim}, act_dim={self.act_dim}: resume with the same environment"
            )
        n = len(state["rewards"])
        keep = slice(max(0, n - self.capacity), n)
        size = keep.stop - keep.start
        for name in ("observations", "next_observations", "actions", "rewards", "terminated", "log_probs"):
            getattr(self, name)[:size] = np.asarray(state[name])[keep]
        self.episode_ids[:] = -1
        self.episode_ids[:size] = np.asarray(state["episode_ids"])[keep]
        self.size = size
        self.position = size % self.capacity
        self.episode = int(state["episode"])
        self.rng.bit_generator.state = state["rng_state"]

    def save(self, path: str | Path) -> None:
        """Write to ``path`` (.npz) atomically: a crash leaves the previous file intact."""
        path = Path(path)
        state = self.state_dict()
        arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
        meta = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
        buffer = io.BytesIO()
        np.savez(buffer, __meta__=np.array(repr(meta)), **arrays)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with tmp.open("wb") as fh:
                fh.write(buffer.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a full disk must not stay full because of our leftover
            raise CheckpointError(
                f"cannot write the replay {path}: {exc.strerror or exc}; free space (or choose another --out) "
                "and resume from the previous checkpoint"
            ) from exc
        os.replace(tmp, path)

    def load(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"replay file {path} is missing; cannot resume without losing experience")
        try:
            with np.load(path, allow_pickle=False) as data:
                state: dict[str, Any] = {k: data[k] for k in data.files if k != "__meta__"}
                meta = _literal(str(data["__meta__"]))
        except (OSError, ValueError, EOFError, KeyError, SyntaxError, zipfile.BadZipFile) as exc:
            raise CheckpointError(
                f"replay file {path} is damaged ({type(exc).__name__}: {exc}); restore it from a backup or start "
                "a new run (export does not need it: `mpo-ros export` still works on this run)"
            ) from exc
        state.update(meta)
        self.load_state_dict(state)


def _literal(text: str) -> dict[str, Any]:
    import ast

    value = ast.literal_eval(text)
    if not isinstance(value, dict):
        raise CheckpointError("replay file metadata is corrupt")
    return value


class MixedReplay:
    """Samples fixed fractions of each batch from several buffers (e.g. 50 % online, 50 % logged data).

    Per batch, buffer i contributes ``round(ratio_i * B)`` sequences (the last non-empty buffer takes the
    rounding remainder). While a buffer is still empty its share goes to the non-empty ones, so training can
    start on logged data before the first online step; once every buffer holds data the ratios are exact.
    Each buffer keeps its own RNG; the mixer holds none.
    """

    def __init__(self, buffers: Sequence[ReplayBuffer], ratios: Sequence[float]) -> None:
        if len(buffers) != len(ratios) or not buffers:
            raise ValueError(
                f"need one ratio per buffer, got {len(buffers)} buffers and {len(ratios)} ratios"
            )
        if any(r < 0 for r in ratios) or sum(ratios) <= 0:
            raise ValueError(f"ratios must be non-negative with a positive sum, got {list(ratios)}")
        total = float(sum(ratios))
        self.buffers = list(buffers)
        self.ratios = [r / total for r in ratios]

    def __len__(self) -> int:
        return sum(len(b) for b in self.buffers)

    def counts(self, batch_size: int) -> list[int]:
        """How many sequences each buffer contributes to a batch of ``batch_size``."""
        live = [r if len(b) else 0.0 for b, r in zip(self.buffers, self.ratios, strict=True)]
        if sum(live) == 0:
            raise ValueError("cannot sample: every buffer of the mixed replay is empty")
        total = sum(live)
        counts = [round(batch_size * r / total) for r in live]
        last = max(i for i, r in enumerate(live) if r > 0)
        counts[last] += batch_size - sum(counts)
        return counts

    def rng_states(self) -> list[dict[str, Any]]:
        """Every buffer's sampling RNG state: an exact resume needs the logged buffers' too, which unlike
        the online buffer are rebuilt from the datasets rather than loaded from the checkpoint."""
        return [buf.rng.bit_generator.state for buf in self.buffers]

    def set_rng_states(self, states: Sequence[dict[str, Any]]) -> None:
        if len(states) != len(self.buffers):
            raise ValueError(f"got {len(states)} RNG states for {len(self.buffers)} buffers")
        for buf, state in zip(self.buffers, states, strict=True):
            buf.rng.bit_generator.state = state

    def sample(self, batch_size: int, length: int) -> SequenceBatch:
        parts = [
            buf.sample(n, length)
            for buf, n in zip(self.buffers, self.counts(batch_size), strict=True)
            if n > 0
        ]
        return SequenceBatch.concatenate(parts)
