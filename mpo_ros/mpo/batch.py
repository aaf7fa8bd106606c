"""The learner's input: short sequences of transitions (numpy), produced by any replay.

It lives with the algorithm, not with the replay, so ``mpo/`` depends on nothing of the training engine:
whatever stores experience (an in-process ring, Ray actors' streams, datasets) hands the learner this.

Shapes: B batch, L sequence length, O observation dims, D action dims.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["SequenceBatch"]


class SequenceBatch(NamedTuple):
    """Sequences of L steps starting at sampled transitions (numpy arrays, float32 unless noted)."""

    observations: np.ndarray  # [B, L, O]
    actions: np.ndarray  # [B, L, D]
    rewards: np.ndarray  # [B, L]
    next_observations: np.ndarray  # [B, L, O]
    terminated: np.ndarray  # [B, L] 1.0 where the MDP truly ended after this step
    mask: np.ndarray  # [B, L] 1.0 for steps in the same episode as step 0 (a prefix)
    behaviour_log_probs: np.ndarray  # [B, L] log mu(a|s) of the acting policy; NaN when unknown
    # [B] 1.0 where step 0 lies within the first L steps of its stored run (an episode, or the part of one
    # that is contiguous in the store): no full-length sequence of the same run ends on it, so a learner that
    # fits the policy on bootstrap states s_{t+L} must fit these states at step 0 instead or never see them
    near_start: np.ndarray

    @staticmethod
    def concatenate(batches: Sequence[SequenceBatch]) -> SequenceBatch:
        return SequenceBatch(*(np.concatenate(parts, axis=0) for parts in zip(*batches, strict=True)))
