"""A run's metrics: ``metrics.csv`` (fixed header, appended across resumes) and TensorBoard.

Names follow CleanRL's prefixes: ``loss/*``, ``dual/*``, ``kl_rel/*`` (the learner's), ``train/*`` (the
loop's), ``actors/*`` (distributed acting), ``eval/*`` (deterministic evaluation).
"""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["ACTOR_KEYS", "EVAL_KEYS", "TRAIN_KEYS", "MetricsSink"]

EVAL_KEYS = ["eval/return", "eval/return_std", "eval/length", "eval/success_rate"]
TRAIN_KEYS = ["train/episode_return", "train/episode_length", "train/episodes", "train/steps_per_s"]
ACTOR_KEYS = ["actors/restarts", "actors/policy_lag", "actors/waiting_s"]


class MetricsSink:
    """metrics.csv + TensorBoard; a resumed run drops the rows logged after its checkpoint first."""

    def __init__(self, out: Path, keys: list[str], resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.header = ["step", "updates", "wall_s", *TRAIN_KEYS, *keys, *EVAL_KEYS]
        self.path = out / "metrics.csv"
        fresh = resume_step is None or not self.path.is_file()
        if not fresh:
            # Appending keeps the file's own columns (a resumed run may log a different set, e.g. after
            # switching --actors), so rows never shift under the header.
            self.header = self._truncate_after(resume_step or 0) or self.header
        self.file = self.path.open("w" if fresh else "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.header, extrasaction="ignore")
        if fresh:
            self.writer.writeheader()
        self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> list[str]:
        """Drop rows logged after the checkpoint we resume from (they will be logged again); returns the
        file's header."""
        with self.path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = list(reader.fieldnames or self.header)
        with self.path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            writer.writerows(r for r in rows if int(float(r["step"])) <= step)
        return header

    def write(self, step: int, values: dict[str, float]) -> None:
        self.writer.writerow({"step": step, **values})
        self.file.flush()
        for key, value in values.items():
            if "/" in key:
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        self.file.close()
        self.tb.close()
