"""MPO learns the arm2 reach task from scratch on one CPU thread (the recipe in sim/recipes/).

Slow: trains for real (a few minutes on one core), then evaluates the deterministic policy on 50
episodes it never saw (seeds disjoint from training's evaluation seeds).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

import mpo_ros_sim  # noqa: E402

from mpo_ros.config import from_dict  # noqa: E402

RECIPE = Path(mpo_ros_sim.__file__).parent / "recipes" / "arm2_reach.yaml"
SUCCESS_REQUIRED = 0.9


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_mpo_learns_arm2_reach(tmp_path: Path) -> None:
    from mpo_ros.training.evaluate import evaluate_policy, load_eval_policy
    from mpo_ros.training.loop import TrainConfig, train

    torch.set_num_threads(1)
    recipe = yaml.safe_load(RECIPE.read_text())
    config = from_dict(TrainConfig, {**recipe, "out": str(tmp_path / "arm2"), "seed": 0}, source=str(RECIPE))
    start = time.perf_counter()
    train(config)
    train_seconds = time.perf_counter() - start
    policy = load_eval_policy(tmp_path / "arm2", "cpu")
    result = evaluate_policy(policy, config.env, episodes=50, seed=10_000)
    summary = result.summary()
    logging.getLogger(__name__).warning(
        "arm2 reach: %d env steps in %.0f s -> success %.2f, final distance %.4f m",
        config.steps,
        train_seconds,
        summary["success_rate"],
        summary["final_distance_mean"],
    )
    assert summary["success_rate"] >= SUCCESS_REQUIRED, summary
