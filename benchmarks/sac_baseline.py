"""Reference point for the MPO learning benchmark: stable-baselines3 SAC, same env, budget and evaluation.

    pip install -r requirements-bench.txt
    python benchmarks/sac_baseline.py --env Hopper-v5 --steps 100000 --seed 0

SAC runs with SB3's standard MuJoCo settings (the rl-zoo defaults: lr 3e-4, buffer 1e6, batch 256,
tau 0.005, gamma 0.99, learning_starts 10000 for Hopper/HalfCheetah in rl-zoo, train_freq 1, auto entropy).
Evaluation matches benchmarks/learning.py: the deterministic policy, --eval-episodes episodes every
--eval-every steps on a separate env instance. Results: benchmarks/results/sac_<env>_s<seed>.json,
rewritten after every evaluation so a killed run leaves an honest partial result.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback

RESULTS = Path(__file__).resolve().parent / "results"


def evaluate(model: SAC, env_id: str, episodes: int, seed: int) -> float:
    env = gym.make(env_id)
    returns = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            done, total = False, 0.0
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return float(np.mean(returns))


class EvalEvery(BaseCallback):
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        super().__init__()
        self.args, self.out = args, out
        self.curve: list[tuple[int, float]] = []
        self.started = time.monotonic()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.args.eval_every == 0:
            score = evaluate(self.model, self.args.env, self.args.eval_episodes, 10_000)
            self.curve.append((self.num_timesteps, score))
            self.write()
        return True

    def write(self) -> None:
        returns = [r for _, r in self.curve]
        done = self.curve[-1][0] if self.curve else 0
        result = {
            "what": f"stable-baselines3 SAC on {self.args.env}: evaluation return of the deterministic policy",
            "command": f"python benchmarks/sac_baseline.py --env {self.args.env} --steps {self.args.steps} "
            f"--seed {self.args.seed} --threads {self.args.threads}",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "python": platform.python_version(),
            },
            "versions": {
                "torch": torch.__version__,
                "gymnasium": gym.__version__,
                "stable_baselines3": __import__("stable_baselines3").__version__,
            },
            "budget": {
                "planned_env_steps": self.args.steps,
                "env_steps_done": done,
                "complete": done >= self.args.steps,
            },
            "seeds": [self.args.seed],
            "evaluation": f"{self.args.eval_episodes} episodes every {self.args.eval_every} env steps, deterministic",
            "figures": {
                "final_eval_return": returns[-1] if returns else None,
                "best_eval_return": max(returns) if returns else None,
                "eval_curve": self.curve,
                "wall_s": time.monotonic() - self.started,
            },
            "note": "one seed is a data point, not a conclusion; the machine was shared with other jobs",
        }
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(self.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--learning-starts", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"sac_{args.env.split('-')[0].lower()}_s{args.seed}.json"
    model = SAC(
        "MlpPolicy",
        gym.make(args.env),
        learning_starts=args.learning_starts,
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=args.steps, callback=EvalEvery(args, out))


if __name__ == "__main__":
    main()
