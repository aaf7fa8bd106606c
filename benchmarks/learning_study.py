"""MPO vs SB3 SAC over several seeds per task: mean +- std of final and best returns, a curve plot per task,
and the gap to the strongest published 100k-step figures.

    python benchmarks/learning_study.py

Reads what benchmarks/learning.py (learning_<task>_s<seed>.json) and benchmarks/sac_baseline.py
(sac_<task>_s<seed>.json) wrote, and the previous default's runs (learning_<task>_s<seed>_<label>.json with
--previous-label). It measures nothing itself. Only complete runs (the whole step budget) enter the means;
partial runs are listed with the step they reached, so the table is honest while the study is still running
(it is chunked across sittings). Writes benchmarks/results/learning_study.json and <task>_study.png, and
prints the README table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
# MR.Q (Fujimoto et al., ICLR 2025), gym v4 at 100k environment steps, 10 seeds: the strongest published
# figures at this budget we know of, for orientation (different gym version and evaluation protocol).
MRQ_100K = {"Hopper-v5": 2249.0, "HalfCheetah-v5": 7872.0, "Walker2d-v5": 3127.0}


def _runs(prefix: str, task: str, label: str) -> dict[int, dict[str, Any]]:
    name = task.split("-")[0].lower()
    suffix = f"_{label}" if label else ""
    pattern = re.compile(rf"{prefix}_{name}_s(\d+){re.escape(suffix)}\.json$")
    runs = {}
    for path in sorted(RESULTS.glob(f"{prefix}_{name}_s*.json")):
        match = pattern.match(path.name)
        if match:
            runs[int(match.group(1))] = json.loads(path.read_text())
    return runs


def _mean_std(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(runs: dict[int, dict[str, Any]], steps: int) -> dict[str, Any]:
    """Means over the complete runs (all ``steps`` done); partial runs are reported, not averaged."""
    complete = {s: r for s, r in runs.items() if r["budget"]["env_steps_done"] >= steps}
    partial = {s: r["budget"]["env_steps_done"] for s, r in runs.items() if s not in complete}
    finals = [float(r["figures"]["final_eval_return"]) for r in complete.values()]
    bests = [float(r["figures"]["best_eval_return"]) for r in complete.values()]
    return {
        "seeds_complete": sorted(complete),
        "seeds_partial": {str(s): done for s, done in sorted(partial.items())},
        "final": _mean_std(finals),
        "best": _mean_std(bests),
        "final_per_seed": {
            str(s): float(r["figures"]["final_eval_return"]) for s, r in sorted(complete.items())
        },
    }


def _plot(task: str, contenders: dict[str, dict[int, dict[str, Any]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for (name, runs), color in zip(contenders.items(), ("C0", "C1", "C2"), strict=False):
        curves = [dict((int(s), float(v)) for s, v in r["figures"]["eval_curve"]) for r in runs.values()]
        if not curves:
            continue
        for curve in curves:
            xs = sorted(curve)
            ax.plot(xs, [curve[x] for x in xs], color=color, alpha=0.25, lw=0.8)
        common = sorted(set.intersection(*(set(c) for c in curves)))
        if common:
            values = np.array([[c[x] for x in common] for c in curves])
            mean, std = values.mean(0), values.std(0)
            ax.plot(common, mean, color=color, lw=2, label=f"{name} (mean of {len(curves)} seeds)")
            ax.fill_between(common, mean - std, mean + std, color=color, alpha=0.15)
    if task in MRQ_100K:
        ax.axhline(MRQ_100K[task], color="grey", ls="--", lw=1, label="MR.Q at 100k (gym v4, 10 seeds)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic evaluation return")
    ax.set_title(task)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _cell(stats: dict[str, float | None]) -> str:
    return "-" if stats["mean"] is None else f"{stats['mean']:.0f} +- {stats['std']:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument(
        "--previous-label", default="sequence_start", help="label of the previous default's runs"
    )
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    table: dict[str, Any] = {}
    lines = [
        "| task | MPO final | MPO best | SAC final | SAC best | seeds (MPO / SAC) | MPO - SAC (final) | MR.Q 100k |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in args.tasks:
        contenders = {
            "MPO (default)": _runs("learning", task, ""),
            "SB3 SAC": _runs("sac", task, ""),
            "MPO (previous default)": _runs("learning", task, args.previous_label),
        }
        stats = {name: summarise(runs, args.steps) for name, runs in contenders.items()}
        mpo, sac = stats["MPO (default)"], stats["SB3 SAC"]
        gap = (
            mpo["final"]["mean"] - sac["final"]["mean"]
            if mpo["final"]["mean"] is not None and sac["final"]["mean"] is not None
            else None
        )
        table[task] = {"contenders": stats, "mpo_minus_sac_final": gap, "mrq_100k": MRQ_100K.get(task)}
        seeds = f"{len(mpo['seeds_complete'])} / {len(sac['seeds_complete'])}"
        lines.append(
            f"| {task} | {_cell(mpo['final'])} | {_cell(mpo['best'])} | {_cell(sac['final'])} | "
            f"{_cell(sac['best'])} | {seeds} | {'-' if gap is None else f'{gap:+.0f}'} | "
            f"{MRQ_100K.get(task, float('nan')):.0f} |"
        )
        if not args.no_plots:
            _plot(
                task,
                {k: v for k, v in contenders.items() if v},
                RESULTS / f"{task.split('-')[0].lower()}_study.png",
            )
    result = {
        "what": "MPO (mpo_ros defaults) vs SB3 SAC (standard settings): deterministic evaluation return at "
        f"{args.steps} environment steps, mean +- std over the complete seeds",
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "protocol": "5 deterministic episodes every 10k env steps (benchmarks/learning.py, sac_baseline.py); "
        "final = last evaluation, best = best evaluation; std is the sample std over seeds",
        "tasks": table,
        "table_markdown": "\n".join(lines),
    }
    (RESULTS / "learning_study.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines))
    for task, entry in table.items():
        for name, s in entry["contenders"].items():
            if s["seeds_partial"]:
                print(f"{task} {name}: partial seeds {s['seeds_partial']} (step reached)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
