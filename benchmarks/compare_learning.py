"""MPO vs SB3 SAC on one gym MuJoCo task: a curve PNG and a markdown table from the two results files.

    python benchmarks/compare_learning.py --env HalfCheetah-v5 --seed 0

Reads benchmarks/results/learning_<env>_s<seed>.json (benchmarks/learning.py) and
benchmarks/results/sac_<env>_s<seed>.json (benchmarks/sac_baseline.py), writes
benchmarks/results/<env>_mpo_vs_sac.png and prints the README table. It measures nothing itself: it only
puts two runs made on the same machine side by side, and refuses runs whose step budgets differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(kind: str, env: str, seed: int) -> dict:
    path = RESULTS / f"{kind}_{env.split('-')[0].lower()}_s{seed}.json"
    if not path.is_file():
        raise SystemExit(
            f"missing {path}: run benchmarks/{'learning' if kind == 'learning' else 'sac_baseline'}.py"
        )
    return json.loads(path.read_text())


def _curve(result: dict) -> dict[int, float]:
    return {int(step): float(value) for step, value in result["figures"]["eval_curve"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    mpo, sac = _load("learning", args.env, args.seed), _load("sac", args.env, args.seed)
    budgets = {r["budget"]["env_steps_done"] for r in (mpo, sac)}
    if len(budgets) != 1:
        print(
            f"warning: step budgets differ ({sorted(budgets)}); comparing the common steps", file=sys.stderr
        )
    curves = {"MPO (mpo_ros defaults)": _curve(mpo), "SB3 SAC": _curve(sac)}
    steps = sorted(set.intersection(*(set(c) for c in curves.values())))
    print("| env steps | " + " | ".join(f"{s // 1000}k" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for name, curve in curves.items():
        print(f"| {name} | " + " | ".join(f"{curve[s]:.0f}" for s in steps) + " |")
    for name, result in (("MPO", mpo), ("SAC", sac)):
        fig = result["figures"]
        print(f"{name}: final {fig['final_eval_return']:.0f}, best {fig['best_eval_return']:.0f} "
              f"at {result['budget']['env_steps_done']} env steps")  # fmt: skip

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, curve in curves.items():
        xs = sorted(curve)
        ax.plot(xs, [curve[x] for x in xs], marker="o", label=name)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (deterministic)")
    ax.set_title(f"{args.env}, seed {args.seed}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = RESULTS / f"{args.env.split('-')[0].lower()}_mpo_vs_sac.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
