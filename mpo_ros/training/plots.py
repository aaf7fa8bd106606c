"""Learning curves from a run's metrics.csv (matplotlib, headless Agg backend)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

__all__ = ["plot_learning_curve", "read_metrics"]


def read_metrics(csv_path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Column name -> [(step, value)] for every non-empty cell of metrics.csv."""
    series: dict[str, list[tuple[int, float]]] = {}
    with Path(csv_path).open(newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(float(row["step"]))
            for key, text in row.items():
                if key == "step" or text in ("", None):
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if math.isfinite(value):
                    series.setdefault(key, []).append((step, value))
    return series


def plot_learning_curve(csv_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Evaluation return (deterministic policy) and training episode return against environment steps.

    Written to a temporary file and renamed, so a viewer never sees half a PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(csv_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, style, label in (
        ("train/episode_return", dict(alpha=0.4, lw=1), "training episodes (stochastic)"),
        ("eval/return", dict(marker="o", ms=3, lw=1.5), "evaluation (deterministic)"),
    ):
        points = series.get(key, [])
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=label, **style)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="best")
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(png_path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
