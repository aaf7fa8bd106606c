"""Offline training from logged data: MPO with the ABM prior vs behaviour cloning vs the data itself.

One behaviour dataset is made the way a user would: a noisy scripted controller drives the arm2
reach environment, a bag is recorded (BagRecorder, MCAP) and converted (`bag2data`). Then, on that
same dataset, with the same networks, learning rate and number of gradient updates (the offline
recipe sim/recipes/arm2_offline.yaml):

- ``behaviour``       the data's own success: final-step success rate of the recorded episodes;
- ``bc``              behaviour cloning: the policy network fitted by maximum likelihood on all logged
                      actions (the prior loss with f == 1), the normaliser fitted on the data;
- ``mpo_abm``         `mpo-ros train --data` (offline MPO with the ABM prior, mpo/abm.py);
- ``mpo_plain``       the same without a prior (pi_old in the E-step: the baseline ABM fixes),
                      only with --plain.

Evaluation: the deterministic policy clamp(mean) in the simulated robot for --eval-episodes
episodes with fixed seeds (the same goals for every contender), success = is_success at the last
step. Each contender runs once per --seeds value; few seeds are data points, not a conclusion.

Run:  python benchmarks/offline.py [--noise 0.3] [--episodes 40] [--updates 1500] [--seeds 0 1 2] [--plain]
Writes benchmarks/results/offline.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mpo_ros.config import from_dict, load_yaml
from mpo_ros.contract.spec import load_spec
from mpo_ros.data.convert import Bag2DataConfig, convert_bags
from mpo_ros.data.dataset import load_dataset
from mpo_ros.data.scripted import record_scripted_bag
from mpo_ros.mpo.abm import prior_loss
from mpo_ros.mpo.learner import MPOConfig, MPOLearner
from mpo_ros.training.envs import make_env
from mpo_ros.training.loop import TrainConfig, train
from mpo_ros.training.loop import evaluate_learner as evaluate
from mpo_ros.training.sources import observe_datasets

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "offline.json"
ENV_ID = "mpo_ros_sim:Arm2Reach-v0"
EVAL_SEED = 10_000
RECIPE = ROOT / "sim" / "recipes" / "arm2_offline.yaml"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "numpy", "mujoco", "gymnasium", "rosbags"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def recipe(args: argparse.Namespace, **overrides: object) -> TrainConfig:
    """The offline recipe with this run's budget (updates) and evaluation."""
    values = {**load_yaml(RECIPE), "steps": args.updates, "eval_every": 0, **overrides}
    values["eval_episodes"] = args.eval_episodes
    return from_dict(TrainConfig, values, source=str(RECIPE))


def behaviour_cloning(dataset_path: Path, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """Fit the policy to every logged action (the recipe's network, lr, batch), then evaluate it."""
    torch.manual_seed(seed)
    dataset = load_dataset(dataset_path, mmap=False)
    options = recipe(args)
    learner = MPOLearner(dataset.obs_dim, dataset.act_dim, MPOConfig.from_any(options))
    observe_datasets(learner, [dataset])
    optimizer = torch.optim.Adam(learner.policy.parameters(), lr=options.policy_lr)
    obs = torch.as_tensor(dataset.observations)
    actions = torch.as_tensor(dataset.actions)
    rng = np.random.default_rng(seed)
    ones = torch.ones(options.batch_size)
    for _ in range(args.updates):
        index = torch.as_tensor(rng.integers(0, len(dataset), options.batch_size))
        loss = prior_loss(learner.policy(learner.normalize(obs[index])), actions[index], ones)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    env = make_env(ENV_ID)
    try:
        return evaluate(learner, env, args.eval_episodes, seed=EVAL_SEED)
    finally:
        env.close()


def offline_mpo(
    dataset_path: Path, out: Path, args: argparse.Namespace, seed: int, prior: str
) -> dict[str, float]:
    config = recipe(
        args,
        data=[str(dataset_path)],
        out=str(out),
        seed=seed,
        log_every=max(args.updates // 10, 1),
        behaviour_prior=prior,
    )
    result = train(config)
    # train() evaluates with seed + 1e6; re-evaluate on the shared goals so all contenders see the same.
    from mpo_ros.training.state import load_policy

    module, _ = load_policy(out)
    env = make_env(ENV_ID)
    try:
        returns, successes = [], []
        for i in range(args.eval_episodes):
            obs, info = env.reset(seed=EVAL_SEED + i)
            total, done = 0.0, False
            while not done:
                with torch.no_grad():
                    action = module(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
                obs, reward, terminated, truncated, info = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
            successes.append(float(info["is_success"]))
    finally:
        env.close()
    return {
        "eval/return": float(np.mean(returns)),
        "eval/return_std": float(np.std(returns)),
        "eval/success_rate": float(np.mean(successes)),
        "train_eval/return": result.get("eval/return"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--episodes", type=int, default=40, help="behaviour episodes recorded (75 steps each)"
    )
    parser.add_argument("--noise", type=float, default=0.3, help="behaviour controller noise (action units)")
    parser.add_argument("--updates", type=int, default=1500, help="gradient updates per contender")
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--plain", action="store_true", help="also run offline MPO without a prior")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]  # the machine is shared: say how busy it was
    spec = load_spec("arm2")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bag, data = Path(tmp) / "behaviour_bag", Path(tmp) / "behaviour"
        rollouts = record_scripted_bag(spec, bag, episodes=args.episodes, seed=123, noise=args.noise)
        _, summary = convert_bags(
            Bag2DataConfig(bags=[str(bag)], robot="arm2", out=str(data), progress=False)
        )
        results["behaviour"] = {
            "final_success_rate": rollouts.final_success_rate,
            "mean_return": rollouts.mean_return,
            "dataset_final_success_rate": summary["final_success_rate"],  # relabelled by bag2data
            "dataset_steps": summary["steps"],
            "dataset_episodes": summary["episodes"],
        }
        print("behaviour", results["behaviour"], flush=True)
        contenders = ["bc", "mpo_abm"] + (["mpo_plain"] if args.plain else [])
        for name in contenders:
            runs = []
            for seed in args.seeds:
                started = time.perf_counter()
                if name == "bc":
                    evaluation = behaviour_cloning(data, args, seed)
                else:
                    prior = "abm" if name == "mpo_abm" else "none"
                    evaluation = offline_mpo(data, Path(tmp) / f"{name}_{seed}", args, seed, prior)
                runs.append({"seed": seed, "wall_s": time.perf_counter() - started, **evaluation})
                print(name, runs[-1], flush=True)
            successes = [r["eval/success_rate"] for r in runs]
            results[name] = {
                "runs": runs,
                "success_rate_mean": float(np.mean(successes)),
                "success_rate_min": float(np.min(successes)),
                "success_rate_max": float(np.max(successes)),
                "return_mean": float(np.mean([r["eval/return"] for r in runs])),
                "wall_s_mean": float(np.mean([r["wall_s"] for r in runs])),
            }
    report = {
        "what": "offline training on one logged behaviour dataset (arm2 reach): MPO+ABM vs BC vs plain MPO "
        "vs the data",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "protocol": {
            "behaviour": f"slew-limited P-controller toward the IK solution + N(0, {args.noise}) action noise",
            "behaviour_episodes": args.episodes,
            "updates": args.updates,
            "recipe": str(RECIPE.relative_to(ROOT)),
            "recipe_values": load_yaml(RECIPE),
            "bc": "the recipe's policy network, batch size and policy_lr, Adam on the Gaussian NLL of all actions",
            "evaluation": f"{args.eval_episodes} episodes, deterministic clamp(mean), seeds {EVAL_SEED}+i, "
            "success = is_success at the final step",
            "seeds": args.seeds,
            "note": "a few seeds on one dataset are data points, not a conclusion",
            "config_resolved": dataclasses.asdict(MPOConfig.from_any(recipe(args))),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
