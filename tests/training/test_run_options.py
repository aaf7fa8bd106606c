"""Nothing silently changed: resume options, config types and run folders, through the CLI.

Each case here was accepted before the one training engine: a resume with other normalisation ran the
trained networks on raw inputs, new learning rates were recorded but never used, a quoted "false" turned
Retrace on, 3000.7 steps ran 3001, and a new run mixed its metrics into an old folder.
"""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from mpo_ros import cli
from mpo_ros.training.state import load_checkpoint

torch.set_num_threads(1)
BASE = ["train", "--env", "Pendulum-v1", "--warmup-steps", "50", "--policy-hidden", "8", "--critic-hidden", "8",
        "--batch-size", "8", "--num-samples", "3", "--eval-episodes", "1", "--eval-every", "0",
        "--progress", "false", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main([*BASE, "--steps", "80", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--normalize-observations", "false"], "normalize_observations: run True, now False"),
        (["--discount", "0.9"], "discount: run 0.99, now 0.9"),
        (["--seed", "3"], "seed: run 0, now 3"),
        (["--replay-capacity", "50"], "replay_capacity: run 1000000, now 50"),
        (["--env-kwargs", "{g: 9.0}"], "env_kwargs: run '', now '{g: 9.0}'"),
        (["--critic-hidden", "16"], "critic_hidden: run [8], now [16]"),
    ],
)
def test_resume_refuses_options_that_change_the_algorithm(run, flags, line, caplog) -> None:
    before = (run / "checkpoints" / "latest.pt").read_bytes()
    assert cli.main(["train", "--out", str(run), "--resume", "--steps", "100", *flags]) == 2
    assert line in caplog.text and "start a new run with another --out" in caplog.text
    assert (run / "checkpoints" / "latest.pt").read_bytes() == before  # nothing was touched


def test_resume_applies_new_learning_rates_for_real(tmp_path, caplog) -> None:
    out = tmp_path / "run"
    assert cli.main([*BASE, "--steps", "60", "--out", str(out)]) == 0
    with caplog.at_level(logging.WARNING):
        assert cli.main(["train", "--out", str(out), "--resume", "--steps", "80", "--policy-lr", "1e-4"]) == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint["learner"]["actor_optimizer"]["param_groups"][0]["lr"] == 1e-4
    assert checkpoint["learner"]["critic_optimizer"]["param_groups"][0]["lr"] == 3e-4  # unchanged
    assert checkpoint["metadata"]["config"]["policy_lr"] == 1e-4 and checkpoint["metadata"]["step"] == 80
    history = yaml.safe_load((out / "config_history.yaml").read_text())
    assert history[-1]["changed"]["policy_lr"] == {"was": 3e-4, "now": 1e-4}
    assert history[-1]["resumed_at_step"] == 60
    assert "resumed with policy_lr changed" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('retrace: "false"\n', "retrace: 'false' is not a boolean (write true or false, without quotes)"),
        ("normalize_observations: no_thanks\n", "normalize_observations: 'no_thanks' is not a boolean"),
        ("steps: true\n", "steps: True is not a whole number"),
        ("steps: 3000.7\n", "steps: 3000.7 is not a whole number"),
        ("steps: many\n", "steps: 'many' is not a whole number"),
        ("device: tpu\n", "device: 'tpu' is not one of ['cpu', 'cuda']"),
        ("policy_lr: -0.1\n", "policy_lr=-0.1 must be a positive finite learning rate"),
        ("policy_hidden: [8, x]\n", "policy_hidden[1]: 'x' is not a whole number"),
        ("steps: [1\n", "c.yaml:2:1: invalid YAML"),
    ],
)
def test_config_values_are_checked_by_type_and_range(tmp_path, text, message, caplog) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert message in caplog.text
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_a_folder_holding_a_run_without_checkpoint_is_not_overwritten(tmp_path, caplog) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.csv").write_text("step\n1\n")
    assert cli.main([*BASE, "--steps", "60", "--out", str(out)]) == 2
    assert "already holds a run without a checkpoint (metrics.csv)" in caplog.text
    assert (out / "metrics.csv").read_text() == "step\n1\n"
