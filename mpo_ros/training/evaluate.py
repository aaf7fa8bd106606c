"""`mpo-ros eval`: run a policy deterministically in simulation and report how well it does.

The policy is a training checkpoint (`.pt` file or run directory) or an exported `.onnx` file; both
are loaded into the same callable `obs -> action in [-1, 1]`, so a checkpoint and its ONNX export are
evaluated by one code path (and their figures can be compared). Episode `i` is reset with seed
`seed + i`, so two evaluations with the same seed see the same goals, start poses and dynamics.

Robot environments (`mpo_ros_sim:*`) take `--randomize none|train|heldout`; plain gymnasium
environments (e.g. Hopper-v5) get the policy's [-1, 1] actions rescaled to their action bounds, as
in training. Output: a table on stdout and, with `--json`, the same figures plus every episode.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mpo_ros.config import add_arguments as _add_config_arguments
from mpo_ros.config import from_args, option
from mpo_ros.contract.spec import RobotSpec, contract_differences
from mpo_ros.errors import ConfigError, ContractError, PolicyFileError

__all__ = [
    "EvalConfig",
    "EvalPolicy",
    "EvalResult",
    "add_arguments",
    "evaluate_policy",
    "load_eval_policy",
    "make_eval_env",
    "run",
    "run_episodes",
]

log = logging.getLogger(__name__)
SIM_PREFIX = "mpo_ros_sim:"
GENERIC_ENV = "mpo_ros_sim:Reach-v0"


@dataclasses.dataclass
class EvalConfig:
    """Options of `mpo-ros eval`."""

    policy: str = option("", "checkpoint (.pt), run directory (runs/<name>) or exported .onnx policy")
    env: str | None = option(
        None,
        "gymnasium id; default: robot policies run in mpo_ros_sim:Reach-v0 built from their own contract, "
        "others in the env they were trained on",
    )
    robot: str | None = option(
        None,
        "robot to evaluate on (name, spec YAML or policy.onnx); default: the policy's own contract. Must "
        "match the policy's contract (a spec YAML here points at a calibrated or moved MJCF)",
    )
    mjcf: str | None = option(None, "the robot's MJCF, when the policy's contract cannot find it")
    episodes: int = option(50, "episodes; episode i is reset with seed + i")
    randomize: str = option("none", "robot envs only: none, train, heldout, or a profile YAML path")
    seed: int = option(0, "seed of the first episode")
    device: str = option("cpu", "where the policy runs: cpu or cuda")
    video: str | None = option(
        None, "write a video of the first --video-episodes episodes (.mp4, or PNG frames)"
    )
    video_episodes: int = option(1, "episodes recorded into --video")
    json: str | None = option(None, "write the summary and per-episode figures to this JSON file")
    plot_commands: str | None = option(None, "robot envs: plot the first episode's commands per joint (PNG)")
    config: str | None = option(None, "YAML file of option values (flags given on the command line win)")

    def __post_init__(self) -> None:
        if not self.policy:
            raise ConfigError("give the policy to evaluate: --policy runs/<name> | file.pt | file.onnx")
        if self.episodes < 1 or self.video_episodes < 1:
            raise ConfigError(
                f"episodes ({self.episodes}) and video_episodes ({self.video_episodes}) must be >= 1"
            )


# --- policies ------------------------------------------------------------------------------------


@dataclasses.dataclass
class EvalPolicy:
    """A deterministic policy as a plain function of one raw observation, plus what it was trained on."""

    act: Callable[[np.ndarray], np.ndarray]
    obs_dim: int
    act_dim: int
    env_id: str | None
    robot_spec: RobotSpec | None
    source: str
    step: int | None = None
    mjcf_path: str | None = None  # where training found the robot's MJCF (a hint for locating it again)

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        return self.act(observation)


def load_eval_policy(path: str | Path, device: str = "cpu") -> EvalPolicy:
    """`.onnx` -> mpo_ros.robot.onnx_policy.OnnxPolicy; anything else -> a training checkpoint (file or run dir)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _onnx_policy(path, device)
    return _checkpoint_policy(path, device)


def _onnx_policy(path: Path, device: str) -> EvalPolicy:
    from mpo_ros.robot.onnx_policy import OnnxPolicy

    policy = OnnxPolicy(path, device=device)

    def act(observation: np.ndarray) -> np.ndarray:
        return policy.act(np.asarray(observation, dtype=np.float32).reshape(policy.obs_dim))

    step = policy.provenance.get("step")
    return EvalPolicy(
        act=act,
        obs_dim=policy.obs_dim,
        act_dim=policy.act_dim,
        env_id=policy.provenance.get("env_id"),
        mjcf_path=policy.provenance.get("mjcf_path"),
        robot_spec=policy.spec,
        source=str(path),
        step=int(step) if step is not None else None,
    )


def _checkpoint_policy(path: Path, device: str) -> EvalPolicy:
    import torch

    from mpo_ros.training.state import load_policy

    module, metadata = load_policy(path, device=device)
    spec_json = metadata.get("robot_spec_json")
    spec = RobotSpec.from_json(spec_json, source=f"{path} robot contract") if spec_json else None
    obs_dim, act_dim = int(metadata["obs_dim"]), int(metadata["act_dim"])

    def act(observation: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32).reshape(1, obs_dim), device=device)
        with torch.inference_mode():
            return module(obs)[0].cpu().numpy()

    step = metadata.get("step")
    return EvalPolicy(
        act=act,
        obs_dim=obs_dim,
        act_dim=act_dim,
        env_id=metadata.get("env_id"),
        mjcf_path=metadata.get("mjcf_path"),
        robot_spec=spec,
        source=str(path),
        step=int(step) if step is not None else None,
    )


# --- environments --------------------------------------------------------------------------------


def policy_robot(policy: EvalPolicy, mjcf: str | None = None) -> RobotSpec | None:
    """The policy's own contract with its MJCF located (``--mjcf``, next to the file, training's path)."""
    from mpo_ros.contract.resolve import locate_mjcf

    if policy.robot_spec is None:
        return None
    near = [Path(policy.source).resolve().parent]
    if policy.mjcf_path:
        near.insert(0, Path(policy.mjcf_path).parent)
    return locate_mjcf(policy.robot_spec, mjcf, near)


def default_env_id(policy: EvalPolicy) -> str:
    """Robot policies: the generic reach env built from the policy's own contract; else the training env."""
    if policy.robot_spec is not None:
        from mpo_ros.training.envs import GENERIC_REACH_ID

        return GENERIC_REACH_ID
    if policy.env_id:
        return policy.env_id
    raise ConfigError(f"{policy.source} does not say which environment it was trained on; pass --env")


def make_eval_env(
    env_id: str, randomize: str = "none", render: bool = False, robot: RobotSpec | None = None
) -> Any:
    """The environment through the training factory (actions in [-1, 1]); ``robot``: the contract to build
    a robot environment from (the policy's own), ``randomize``: its dynamics profile."""
    from mpo_ros.training.envs import EnvFactory

    kwargs: dict[str, Any] = {}
    if env_id.startswith(SIM_PREFIX):
        kwargs["randomize"] = randomize
        if robot is not None:
            kwargs["robot"] = robot
    elif randomize != "none":
        raise ConfigError(f"--randomize {randomize} needs a robot env (mpo_ros_sim:...), not {env_id}")
    overrides = {"render_mode": "rgb_array"} if render else {}
    return EnvFactory.resolve(env_id, kwargs).make(**overrides)


def _check_compatible(policy: EvalPolicy, env: Any, env_id: str) -> None:
    obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
    if obs_shape != (policy.obs_dim,) or act_shape != (policy.act_dim,):
        raise ContractError(
            f"{policy.source} maps {policy.obs_dim} observations to {policy.act_dim} actions, but {env_id} has "
            f"observation shape {obs_shape} and action shape {act_shape}; pass the --env it was trained on"
        )
    env_spec = getattr(env.unwrapped, "robot_spec", None)  # what the env really simulates
    if policy.robot_spec is not None and env_spec is not None:
        differences = contract_differences(policy.robot_spec, env_spec, ("policy", "environment"))
        if differences:
            raise ContractError(
                f"{policy.source} was trained for another robot contract than {env_id}'s "
                f"({len(differences)} field(s) differ):\n  "
                + "\n  ".join(differences)
                + "\nevaluate it on its "
                "own robot (omit --env and --robot: the policy's own contract is used)"
            )


# --- evaluation ----------------------------------------------------------------------------------


@dataclasses.dataclass
class EvalResult:
    """Summary and per-episode figures of one evaluation."""

    env: str
    randomize: str
    episodes: int
    seed: int
    returns: list[float]
    lengths: list[int]
    successes: list[bool] | None  # None when the env reports no is_success
    final_distances: list[float] | None  # None when the env reports no distance
    smoothness: list[float]  # per episode: mean over steps and joints of |a_t - a_{t-1}|
    # Robot envs: per episode, contract.smoothness figures of the commands sent (rad/step, fractions).
    command_rate: list[float] = dataclasses.field(default_factory=list)
    slew_limited_fraction: list[float] = dataclasses.field(default_factory=list)
    high_frequency_share: list[float] = dataclasses.field(default_factory=list)
    first_commands: list[list[float]] | None = None  # the first episode's commands [T, n] (for a plot)

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float] | None) -> tuple[float | None, float | None]:
            if not values:
                return None, None
            return float(np.mean(values)), float(np.std(values))

        return_mean, return_std = stats(self.returns)
        distance_mean, distance_std = stats(self.final_distances)
        smooth_mean, smooth_std = stats(self.smoothness)
        return {
            "return_mean": return_mean,
            "return_std": return_std,
            "success_rate": float(np.mean(self.successes)) if self.successes is not None else None,
            "final_distance_mean": distance_mean,
            "final_distance_std": distance_std,
            "action_smoothness_mean": smooth_mean,
            "action_smoothness_std": smooth_std,
            "command_rate_mean": stats(self.command_rate)[0],
            "slew_limited_fraction_mean": stats(self.slew_limited_fraction)[0],
            "high_frequency_share_mean": stats(self.high_frequency_share)[0],
            "episode_length_mean": float(np.mean(self.lengths)),
        }


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    episodes: int = 50,
    randomize: str = "none",
    seed: int = 0,
    video: str | Path | None = None,
    video_episodes: int = 1,
    robot: RobotSpec | None = None,
) -> EvalResult:
    """Run `episodes` deterministic episodes of `policy` in `env_id` (see the module docstring).

    ``robot``: the contract the generic reach env is built from; default: the policy's own (its MJCF found
    next to the policy file, where training found it, or in models/)."""
    if robot is None and isinstance(policy, EvalPolicy) and env_id.endswith(":Reach-v0"):
        robot = policy_robot(policy)
    env = make_eval_env(env_id, randomize, render=video is not None, robot=robot)
    if isinstance(policy, EvalPolicy):
        _check_compatible(policy, env, env_id)
    frames: list[np.ndarray] | None = [] if video is not None else None
    try:
        result = run_episodes(policy, env, episodes, seed, frames, video_episodes)
        fps = int(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
    if video is not None and frames is not None:
        write_video(frames, Path(video), fps)
    return dataclasses.replace(result, env=env_id, randomize=randomize)


def run_episodes(
    policy: Callable[[np.ndarray], np.ndarray],
    env: Any,
    episodes: int,
    seed: int,
    frames: list[np.ndarray] | None = None,
    video_episodes: int = 0,
) -> EvalResult:
    """The one evaluator: `mpo-ros eval` and the evaluations during training both run this.

    Episode ``i`` is reset with ``seed + i`` (the same goals, starts and dynamics at every evaluation);
    ``policy`` maps one observation to an action in [-1, 1]; frames of the first ``video_episodes``
    episodes are appended to ``frames`` when it is given.
    """
    from mpo_ros.contract.smoothness import command_smoothness

    spec = getattr(env.unwrapped, "robot_spec", None)  # the simulated robot's slew limits and rate
    returns, lengths, successes, distances, smoothness = [], [], [], [], []
    command_figures: list[dict[str, float]] = []
    first_commands = None
    for episode in range(episodes):
        recording = frames if frames is not None and episode < video_episodes else None
        total, length, rate, commands, info = _run_episode(policy, env, seed + episode, recording)
        returns.append(total)
        lengths.append(length)
        smoothness.append(rate / max(1, length - 1))
        if spec is not None and len(commands) > 2:
            command_figures.append(
                command_smoothness(np.array(commands), spec.joint_arrays.max_delta, spec.control_rate_hz)
            )
            if first_commands is None:
                first_commands = np.array(commands).tolist()
        if "is_success" in info:
            successes.append(bool(info["is_success"]))
        if "distance" in info:
            distances.append(float(info["distance"]))
    return EvalResult(
        env=str(getattr(getattr(env, "spec", None), "id", "")),
        randomize="",
        episodes=episodes,
        seed=seed,
        returns=returns,
        lengths=lengths,
        successes=successes if len(successes) == episodes else None,
        final_distances=distances if len(distances) == episodes else None,
        smoothness=smoothness,
        command_rate=[f["command_rate"] for f in command_figures],
        slew_limited_fraction=[f["slew_limited_fraction"] for f in command_figures],
        high_frequency_share=[f["high_frequency_share"] for f in command_figures],
        first_commands=first_commands,
    )


def _run_episode(
    policy: Callable[[np.ndarray], np.ndarray], env: Any, seed: int, frames: list[np.ndarray] | None
) -> tuple[float, int, float, list[np.ndarray], dict[str, Any]]:
    """One deterministic episode: (return, length, summed mean |a_t - a_t-1|, commands sent, last info)."""
    obs, info = env.reset(seed=seed)
    commands = [info["command"]] if "command" in info else []
    if frames is not None:
        frames.append(env.render())
    total, length, rate, previous, done = 0.0, 0, 0.0, None, False
    while not done:
        action = np.asarray(policy(obs), dtype=np.float64)
        if previous is not None:
            rate += float(np.mean(np.abs(action - previous)))
        previous = action
        obs, reward, terminated, truncated, info = env.step(action.astype(np.float32))
        total += float(reward)
        length += 1
        done = bool(terminated or truncated)
        if "command" in info:
            commands.append(info["command"])
        if frames is not None:
            frames.append(env.render())
    return total, length, rate, commands, info


def plot_commands(result: EvalResult, path: Path, joint_names: list[str] | None, rate_hz: float) -> Path:
    """One episode's commands per joint against time (the first evaluated episode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not result.first_commands:
        raise ConfigError("--plot-commands needs a robot environment (its commands are what is plotted)")
    commands = np.array(result.first_commands)
    t = np.arange(len(commands)) / rate_hz
    fig, axes = plt.subplots(
        commands.shape[1], 1, figsize=(8, 1.6 * commands.shape[1]), sharex=True, squeeze=False
    )
    for j, ax in enumerate(axes[:, 0]):
        ax.step(t, commands[:, j], where="post", lw=1.2)
        ax.set_ylabel((joint_names or [f"joint {j}"] * commands.shape[1])[j] + "\n(rad)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time (s)")
    summary = result.summary()
    fig.suptitle(
        f"commands, episode seed {result.seed}: |Δc| {summary['command_rate_mean']:.4f} rad/step, "
        f"{100 * summary['slew_limited_fraction_mean']:.0f} % at slew limit, "
        f"{100 * summary['high_frequency_share_mean']:.1f} % energy > 5 Hz",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """An .mp4 through imageio's ffmpeg plugin, or PNG frames in `<path stem>_frames/` without ffmpeg."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import imageio_ffmpeg  # noqa: F401  (the mp4 writer backend)

        with imageio.get_writer(path, fps=fps, macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(frame)
        return path
    except ImportError:
        folder = path.with_name(f"{path.stem}_frames")
        folder.mkdir(exist_ok=True)
        for i, frame in enumerate(frames):
            imageio.imwrite(folder / f"{i:05d}.png", frame)
        log.warning(
            "imageio-ffmpeg is not installed: wrote %d PNG frames to %s instead of %s",
            len(frames),
            folder,
            path,
        )
        return folder


# --- command line --------------------------------------------------------------------------------


def format_table(result: EvalResult, source: str) -> str:
    summary = result.summary()

    def cell(mean: float | None, std: float | None = None, digits: int = 3) -> str:
        if mean is None:
            return "n/a"
        return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")

    success = summary["success_rate"]
    rows = [
        ("policy", source),
        ("env", f"{result.env} (randomize={result.randomize})"),
        ("episodes", f"{result.episodes} (seeds {result.seed}..{result.seed + result.episodes - 1})"),
        ("return", cell(summary["return_mean"], summary["return_std"], 2)),
        ("success rate", "n/a" if success is None else f"{100 * success:.1f} %"),
        ("final distance (m)", cell(summary["final_distance_mean"], summary["final_distance_std"], 4)),
        (
            "action smoothness |Δa|",
            cell(summary["action_smoothness_mean"], summary["action_smoothness_std"], 4),
        ),
        ("command rate |Δc| (rad/step)", cell(summary["command_rate_mean"], None, 4)),
        (
            "steps at the slew limit",
            "n/a"
            if summary["slew_limited_fraction_mean"] is None
            else f"{100 * summary['slew_limited_fraction_mean']:.1f} %",
        ),
        (
            "command energy > 5 Hz",
            "n/a"
            if summary["high_frequency_share_mean"] is None
            else f"{100 * summary['high_frequency_share_mean']:.1f} %",
        ),
        ("episode length", cell(summary["episode_length_mean"], None, 1)),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _report(config: EvalConfig, policy: EvalPolicy, result: EvalResult) -> dict[str, Any]:
    import mujoco

    return {
        "what": "deterministic policy evaluation (mpo-ros eval)",
        "policy": config.policy,
        "policy_step": policy.step,
        "robot": policy.robot_spec.name if policy.robot_spec else None,
        "env": result.env,
        "randomize": result.randomize,
        "episodes": result.episodes,
        "seed": result.seed,
        "device": config.device,
        **result.summary(),
        "per_episode": {
            "return": result.returns,
            "length": result.lengths,
            "success": result.successes,
            "final_distance": result.final_distances,
            "action_smoothness": result.smoothness,
            "command_rate": result.command_rate,
            "slew_limited_fraction": result.slew_limited_fraction,
            "high_frequency_share": result.high_frequency_share,
        },
        "versions": {
            "mujoco": mujoco.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser, EvalConfig)


def run(args: argparse.Namespace) -> int:
    config = from_args(EvalConfig, args, getattr(args, "config", None))
    if config.video and "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "osmesa"  # before anything imports mujoco
    try:
        policy = load_eval_policy(config.policy, config.device)
    except FileNotFoundError as exc:
        raise PolicyFileError(f"policy {config.policy} not found: {exc}") from exc
    env_id = config.env or default_env_id(policy)
    if config.robot:
        from mpo_ros.contract.resolve import resolve_robot

        robot = resolve_robot(config.robot, config.mjcf)
        if not config.env:
            env_id = GENERIC_ENV
    else:
        robot = policy_robot(policy, config.mjcf) if env_id == GENERIC_ENV else None
    result = evaluate_policy(
        policy,
        env_id,
        episodes=config.episodes,
        randomize=config.randomize,
        seed=config.seed,
        video=config.video,
        video_episodes=config.video_episodes,
        robot=robot,
    )
    print(format_table(result, config.policy))
    if config.plot_commands:
        spec = robot or policy.robot_spec
        rate = spec.control_rate_hz if spec is not None else 1.0
        names = list(spec.joint_names) if spec is not None else None
        print(f"wrote {plot_commands(result, Path(config.plot_commands), names, rate)}")
    if config.json:
        path = Path(config.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(_report(config, policy, result), indent=2))
        tmp.replace(path)
        print(f"wrote {path}")
    return 0
