"""The optional torch.compile path: same numbers as eager, and a broken compiler degrades to eager."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from mpo_fixtures import random_replay

from mpo_ros.mpo.compilation import CompiledOrEager
from mpo_ros.mpo.learner import MPOConfig, MPOLearner, metrics_to_floats
from mpo_ros.training.replay import ReplayBuffer

torch.set_num_threads(1)
OBS, ACT = 5, 2
SMALL = dict(policy_hidden=[16, 16], critic_hidden=[16, 16], num_samples=4, n_step=3)


def _replay() -> ReplayBuffer:
    return random_replay(OBS, ACT, episodes=6)


@pytest.mark.parametrize("critic_type", ["scalar", "categorical"])
def test_compiled_target_pass_matches_eager(critic_type: str) -> None:
    """Compilation changes float rounding only: the targets, sampled values and the first update's losses
    agree with eager. (Later updates are not compared: Adam turns rounding-level gradient differences into
    step-sized ones on near-zero gradients, so trajectories drift apart without either being wrong.)"""
    learners = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        learner = MPOLearner(OBS, ACT, MPOConfig(**SMALL, compile=compiled, critic_type=critic_type))  # type: ignore[arg-type]
        learner.observe(np.random.default_rng(1).normal(size=(50, OBS)))
        learners[compiled] = learner
    batch = _replay().sample(16, 3)
    outputs = {}
    for compiled, learner in learners.items():
        b = learner._to_device(batch)
        torch.manual_seed(1)
        with torch.no_grad():
            outputs[compiled] = learner._n_step_targets(b, learner.normalize(b.observations[:, 0]))
    for eager_value, compiled_value in zip(outputs[False][1:], outputs[True][1:], strict=True):
        torch.testing.assert_close(compiled_value, eager_value, rtol=1e-5, atol=1e-5)
    first = {}
    for compiled, learner in learners.items():
        torch.manual_seed(2)
        first[compiled] = metrics_to_floats(learner.update(batch))
    assert learners[True]._target_sampled.mode == "compiled"
    assert first[True].keys() == first[False].keys()
    # The temperature's gradient, eps + logmeanexp(Q / eta) - E_q[Q] / eta, is a small difference of two
    # terms ~ Q / eta (hundreds for the categorical critic's expected values), so Q's float rounding shows in
    # the dual gradient norm at ~1e-3 relative; everything else agrees to 1e-4.
    loose = {"opt/dual_grad_norm": 1e-2}
    for name, value in first[False].items():
        assert first[True][name] == pytest.approx(value, rel=loose.get(name, 1e-4), abs=1e-6), name


def _scaled_sum(x: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(x) * 3.0 + 1.0).sum(-1)


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(monkeypatch, caplog) -> None:
    """No usable C++ toolchain must cost speed, never the run."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++-for-mpo-ros-test",))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    torch._dynamo.reset()
    wrapper = CompiledOrEager(_scaled_sum, "a test function", enabled=True)
    x = torch.randn(8, 3)
    with caplog.at_level(logging.WARNING, logger="mpo_ros.mpo.compilation"):
        out = wrapper(x)
    torch.testing.assert_close(out, _scaled_sum(x))
    assert wrapper.mode == "eager (compile failed)"
    assert "continuing in eager mode" in caplog.text
    torch._dynamo.reset()


def test_errors_of_the_function_itself_still_surface() -> None:
    def needs_matching_shapes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    wrapper = CompiledOrEager(needs_matching_shapes, "a shape-checked function", enabled=False)
    with pytest.raises(RuntimeError):
        wrapper(torch.ones(2, 3), torch.ones(2, 3))
    assert wrapper.mode == "eager"
