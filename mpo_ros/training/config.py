"""`mpo-ros train` options: one dataclass, shared by the CLI, YAML files and the saved ``config.yaml``.

The algorithm's options are inherited from :class:`~mpo_ros.mpo.learner.MPOConfig` and
:class:`~mpo_ros.mpo.abm.ABMConfig`; this class adds the loop's: where experience comes from (an
environment in this process, Ray actors, datasets, or a mix), how long to train, and what to write.
"""

from __future__ import annotations

import dataclasses

from mpo_ros.config import option
from mpo_ros.errors import ConfigError
from mpo_ros.mpo.abm import ABMConfig
from mpo_ros.mpo.learner import MPOConfig

__all__ = ["RESUMABLE", "TrainConfig"]

# Options a resumed run may change. The learning rates are applied to the restored optimisers (and
# logged); the rest only set how long, how visibly and on what hardware the run goes on. Every other
# option changes the algorithm or the data, and a resume that changes one is refused.
RESUMABLE = frozenset(
    {
        "steps", "out", "config", "resume", "eval_every", "eval_episodes", "checkpoint_every", "log_every",
        "progress", "threads", "device", "compile", "actors", "ray_address", "actor_sync_every",
        "actor_chunk_steps", "policy_lr", "critic_lr", "dual_lr", "abm_lr", "mjcf",
    }
)  # fmt: skip


@dataclasses.dataclass
class TrainConfig(MPOConfig, ABMConfig):
    """Training-loop options (the algorithm's options are inherited from :class:`MPOConfig`)."""

    env: str | None = option(
        None,
        "gymnasium environment id (e.g. Hopper-v5, mpo_ros_sim:Arm2Reach-v0); offline runs (--data, "
        "--data-ratio 1) default to the datasets' own robot",
    )
    robot: str | None = option(
        None,
        "robot to train: a shipped name, a spec YAML or a policy.onnx (its contract); without --env it trains "
        "in the generic reach env mpo_ros_sim:Reach-v0 built from that contract",
    )
    mjcf: str | None = option(None, "the robot's MJCF, when --robot is a policy.onnx whose MJCF is elsewhere")
    steps: int = option(
        300_000,
        "total environment steps of the run (offline: learner updates); a resumed run continues to it",
    )
    seed: int = option(0, "seed of python, numpy, torch, the environment and the replay")
    out: str = option("runs/default", "run directory: config.yaml, metrics.csv, tb/, checkpoints/, plots")
    config: str | None = option(None, "YAML file of option values (flags given on the command line win)")
    resume: bool = option(False, "continue the run in --out from checkpoints/latest.pt (replay included)")
    batch_size: int = option(256, "sequences per learner update (Acme: 256)")
    warmup_steps: int = option(
        5_000, "uniformly random steps before the first update (CleanRL SAC learning_starts: 5000)"
    )
    updates_per_step: int = option(
        1,
        "learner updates per environment step, held whatever the number of actors (Acme: samples_per_insert "
        "256 / batch 256 = 1)",
    )
    replay_capacity: int = option(1_000_000, "transitions kept in replay (Acme max_replay_size: 1e6)")
    eval_every: int = option(10_000, "environment steps between evaluations (0: only at the end)")
    eval_episodes: int = option(10, "episodes per evaluation, deterministic policy clamp(mean)")
    checkpoint_every: int = option(
        10_000,
        "steps between checkpoints (taken at the next episode boundary; one is always written at the end)",
    )
    log_every: int = option(1_000, "environment steps between metrics.csv / TensorBoard rows")
    env_kwargs: str = option(
        "", "keyword arguments for gym.make as a YAML/JSON mapping, e.g. '{randomize: train}'"
    )
    max_episode_steps: int | None = option(None, "override the environment's time limit (None: keep it)")
    threads: int = option(0, "torch intra-op threads (0: leave torch's default)")
    progress: bool = option(True, "show a tqdm progress bar")
    # Logged data: datasets from `mpo-ros bag2data`, alone or mixed with --env.
    data: list[str] = option([], "datasets from `mpo-ros bag2data` to train from (data/<name> ...)")  # noqa: RUF009
    data_ratio: float = option(
        1.0,
        "fraction of each batch drawn from --data: 1 trains offline from the datasets alone (--steps then "
        "counts learner updates; evaluation in the datasets' robot env); below 1 mixes with --env rollouts "
        "(RLPD: 0.5)",
    )
    behaviour_prior: str = option(
        "auto",
        "E-step prior: 'abm' (advantage-weighted behaviour model, mpo/abm.py), 'none' (pi_old, plain MPO), "
        "'auto' (abm when training offline, none otherwise)",
        choices=("auto", "abm", "none"),
    )
    # Distributed acting (training/actors.py).
    actors: int = option(
        0,
        "Ray environment-runner actors (0: act in this process, resume bit-exact); each has its own env, "
        "seed and randomisation draws and a CPU copy of the policy",
    )
    ray_address: str | None = option(
        None,
        "join an existing Ray cluster ('auto' or HOST:PORT, after `ray start --head`); default: start a "
        "local Ray for the run and shut it down after",
    )
    actor_sync_every: int = option(
        100, "learner updates between refreshes of the actors' policy copies (Acme: variable_update_period)"
    )
    actor_chunk_steps: int = option(
        50, "environment steps an actor collects per request (also the rate limiter's slack per actor)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        for name in ("steps", "batch_size", "eval_episodes", "log_every", "replay_capacity"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in (
            "warmup_steps",
            "updates_per_step",
            "eval_every",
            "checkpoint_every",
            "threads",
            "actors",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("actor_sync_every", "actor_chunk_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.warmup_steps < 1 and self.updates_per_step > 0:
            problems.append("warmup_steps must be >= 1 so the replay holds data before the first update")
        for name in sorted(n for n in self.__dataclass_fields__ if n.endswith("_lr")):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 < value < float("inf")):
                problems.append(f"{name}={value} must be a positive finite learning rate")
        if not 0.0 < self.data_ratio <= 1.0:
            problems.append(f"data_ratio={self.data_ratio} must lie in (0, 1]")
        if self.data and self.data_ratio >= 1.0 and self.actors:
            problems.append("actors collect environment steps; an offline run (--data-ratio 1) takes none")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def offline(self) -> bool:
        """Datasets alone, no environment steps (``--steps`` counts learner updates)."""
        return bool(self.data) and self.data_ratio >= 1.0
