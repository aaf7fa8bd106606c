"""Two Ray actors train arm2 reach to the bar the in-process run must clear, at the same env-step budget.

tests/sim/test_reach_learning.py trains the recipe (sim/recipes/arm2_reach.yaml, 30k environment steps,
seed 0) in process and requires >= 0.9 success on 50 unseen episodes; this test runs the same recipe with
``--actors 2`` (same steps, same update:step ratio through the rate limiter) and requires the same. What
differs is only where the steps were collected: two actors with their own seeds and a policy copy that
lags the learner by up to ``actor_sync_every`` updates.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("ray")

import mpo_ros_sim  # noqa: E402

from mpo_ros.config import from_dict  # noqa: E402

RECIPE = Path(mpo_ros_sim.__file__).parent / "recipes" / "arm2_reach.yaml"
SUCCESS_REQUIRED = 0.9  # the in-process test's bar
# One local Ray at a time: with `pytest -n 2` this runs in the same worker as test_actors.py.
pytestmark = pytest.mark.xdist_group("ray")


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_two_actors_learn_arm2_reach_like_one_process(tmp_path: Path, local_ray) -> None:
    from mpo_ros.training.evaluate import evaluate_policy, load_eval_policy
    from mpo_ros.training.loop import TrainConfig, train

    torch.set_num_threads(1)
    recipe = yaml.safe_load(RECIPE.read_text())
    values = {**recipe, "out": str(tmp_path / "arm2"), "seed": 0, "actors": 2, "eval_every": 0}
    config = from_dict(TrainConfig, values, source=str(RECIPE))
    start = time.perf_counter()
    summary = train(config)
    assert summary["step"] == config.steps and summary["updates"] == config.steps - config.warmup_steps + 1
    result = evaluate_policy(load_eval_policy(tmp_path / "arm2", "cpu"), config.env, episodes=50, seed=10_000)
    figures = result.summary()
    logging.getLogger(__name__).warning(
        "arm2 reach with 2 actors: %d env steps in %.0f s -> success %.2f",
        config.steps,
        time.perf_counter() - start,
        figures["success_rate"],
    )
    assert figures["success_rate"] >= SUCCESS_REQUIRED, figures
