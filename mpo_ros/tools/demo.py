"""`make demo`: the whole workflow on the embedded default robot (arm2), end to end.

train MPO in MuJoCo -> evaluate the checkpoint in simulation -> export the ONNX policy (contract inside)
-> evaluate that ONNX file through the robot runtime -> run it over ROS 2 against the simulated robot.

Idempotent: a finished training run in ``runs/demo`` is reused (delete the folder, or pass ``--retrain``,
to train again); an interrupted one is resumed.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mpo_ros.config import add_arguments, from_args, option

log = logging.getLogger("mpo_ros.tools.demo")


def _arm2_recipe() -> Path:
    """The arm2 reach recipe that tests/sim/test_learning.py (the >= 90 % success test) trains with."""
    import mpo_ros_sim

    return Path(mpo_ros_sim.__file__).resolve().parent / "recipes" / "arm2_reach.yaml"


@dataclass
class DemoConfig:
    out: str = option("runs/demo", "run directory of the demo's training run")
    steps: int = option(0, "environment steps to train (0: the preset's budget)")
    episodes: int = option(50, "evaluation episodes for the checkpoint and for the ONNX policy")
    ros_seconds: float = option(12.0, "seconds the ROS 2 sim + policy nodes run after enabling (0: skip)")
    retrain: bool = option(False, "delete an existing demo run and train from scratch")
    seed: int = option(0, "training seed")


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def _train(config: DemoConfig) -> Path:
    from mpo_ros.config import from_dict, load_yaml
    from mpo_ros.training.loop import TrainConfig, train

    out = Path(config.out)
    if config.retrain and out.exists():
        shutil.rmtree(out)
    recipe = _arm2_recipe()
    values = load_yaml(recipe)
    values.update(out=str(out), seed=config.seed, progress=True)
    if config.steps:
        values["steps"] = config.steps
    train_config = from_dict(TrainConfig, values, source=str(recipe))
    checkpoint = out / "checkpoints" / "latest.pt"
    done_file = out / "demo_done.json"
    if done_file.is_file() and json.loads(done_file.read_text()).get("steps") == train_config.steps:
        print(f"reusing the finished run in {out} (pass --retrain to train again)")
        return checkpoint
    if checkpoint.is_file():
        train_config.resume = True
        print(f"resuming the interrupted run in {out}")
    elif out.exists():
        # Stopped before its first checkpoint: nothing to resume; the demo's own folder starts over.
        print(f"{out} holds no checkpoint yet: starting the demo run over")
        shutil.rmtree(out)
    started = time.monotonic()
    train(train_config)
    done_file.write_text(json.dumps({"steps": train_config.steps, "seconds": time.monotonic() - started}))
    return checkpoint


def _evaluate(policy: Path, episodes: int, label: str) -> dict:
    from mpo_ros.training.evaluate import evaluate_policy, format_table, load_eval_policy

    loaded = load_eval_policy(policy)
    result = evaluate_policy(loaded, "mpo_ros_sim:Arm2Reach-v0", episodes=episodes, seed=10_000)
    print(format_table(result, f"{label}: {policy}"))
    return result.summary() if hasattr(result, "summary") else {}


def run_demo(config: DemoConfig) -> int:
    out = Path(config.out)
    _banner("1/4 train MPO on arm2 reach (MuJoCo)")
    checkpoint = _train(config)
    print(f"run folder: {out}  (config.yaml, metrics.csv, tb/, learning_curve.png, checkpoints/)")

    _banner("2/4 evaluate the checkpoint in simulation")
    _evaluate(checkpoint, config.episodes, "checkpoint")

    _banner("3/4 export to ONNX (contract in metadata) and evaluate the exported file")
    from mpo_ros.training.export import export_checkpoint

    onnx_path = out / "policy.onnx"
    report = export_checkpoint(str(out), onnx_path)
    print(
        f"wrote {report.path} ({report.size_bytes} bytes, opset {report.opset}); parity torch vs onnxruntime "
        f"max |diff| {report.parity_max_abs_error:.2e} on {report.parity_observations} observations"
    )
    print(f"inspect it with: mpo-ros inspect {onnx_path}")
    _evaluate(onnx_path, config.episodes, "onnx")

    if config.ros_seconds > 0:
        _banner("4/4 ROS 2: sim robot + policy node over loopback DDS")
        from mpo_ros.ros.demo_run import run_demo as run_ros_demo

        result = run_ros_demo(onnx_path, seconds=config.ros_seconds, workdir=out / "ros_demo")
        if not result["enabled"]:
            print("the policy node could not be enabled; see the logs above")
            return 1
    print(
        f"\ndone. Deploy on a robot with: ros2 launch mpo_ros policy.launch.py policy:={onnx_path.resolve()}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m mpo_ros.tools.demo", description=__doc__.splitlines()[0])
    add_arguments(parser, DemoConfig)
    config = from_args(DemoConfig, parser.parse_args(argv))
    return run_demo(config)


if __name__ == "__main__":
    sys.exit(main())
