"""One environment factory for training, in-training evaluation, export parity checks and Ray actors.

An :class:`EnvFactory` is a picklable recipe: a gymnasium id, its keyword arguments, an optional time limit
and the **robot contract** the environment is built from. The contract is resolved once, here, and handed
to the environment's constructor (``robot=<RobotSpec>``) rather than read back from ``env.unwrapped``
afterwards; every other part of training (checkpoint, export, comparison with datasets) takes it from the
factory. Environments whose registration has no ``robot`` argument (Hopper-v5, ...) have no contract.

Every environment is wrapped with ``RescaleAction`` to [-1, 1] and ``ClipAction``: a checkpoint knows
nothing about the environment's units (the robot contract maps [-1, 1] to commands).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from mpo_ros.contract.spec import RobotSpec, contract_differences, load_spec
from mpo_ros.errors import ConfigError, ContractError

__all__ = ["GENERIC_REACH_ID", "EnvFactory", "check_same_contract", "make_env", "parse_env_kwargs"]

# The robot-agnostic reach environment: `robot=` names the contract (mpo_ros_sim registers it).
GENERIC_REACH_ID = "mpo_ros_sim:Reach-v0"


def parse_env_kwargs(env_kwargs: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``'{randomize: train}'`` (YAML/JSON text) or a mapping -> dict; anything else is a ConfigError."""
    import yaml

    if env_kwargs is None or env_kwargs == "":
        return {}
    if isinstance(env_kwargs, Mapping):
        return dict(env_kwargs)
    try:
        value = yaml.safe_load(env_kwargs)
    except yaml.YAMLError as exc:
        raise ConfigError(f"env_kwargs {env_kwargs!r} is not valid YAML: {exc}") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"env_kwargs must be a mapping like '{{randomize: train}}', got {env_kwargs!r}")
    return value


@dataclasses.dataclass(frozen=True)
class EnvFactory:
    """How to build one environment; picklable, so Ray actors build their own copies from it."""

    env_id: str
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    max_episode_steps: int | None = None
    contract: RobotSpec | None = None

    @classmethod
    def resolve(
        cls,
        env_id: str,
        env_kwargs: str | Mapping[str, Any] | None = None,
        max_episode_steps: int | None = None,
        contract: RobotSpec | None = None,
    ) -> EnvFactory:
        """Look the id up, resolve its robot contract (if it takes one) and check it against ``contract``.

        ``contract``: the contract the experience must match (the datasets' one); a robot environment built
        from another contract is refused with every differing field.
        """
        import gymnasium as gym

        kwargs = parse_env_kwargs(env_kwargs)
        module, _, name = env_id.rpartition(":")
        try:
            if module:  # gymnasium's "module:Id" form: importing the module registers its ids
                importlib.import_module(module)
            registered = gym.spec(name)
        except (gym.error.Error, ImportError) as exc:
            raise ConfigError(
                f"cannot make environment {env_id!r}: {exc}. Registered ids include Hopper-v5, HalfCheetah-v5; "
                "mpo_ros environments are named like mpo_ros_sim:Arm2Reach-v0 (the module prefix imports them)"
            ) from exc
        merged = {**(registered.kwargs or {}), **kwargs}
        if "robot" not in merged and _takes_robot(registered):
            if contract is None:
                raise ConfigError(
                    f"{env_id} needs a robot: pass --env-kwargs '{{robot: arm2}}' (a name or YAML)"
                )
            merged["robot"] = contract
        env_contract = None
        if "robot" in merged:
            robot = merged["robot"]
            env_contract = robot if isinstance(robot, RobotSpec) else load_spec(robot)
            kwargs["robot"] = env_contract
        if contract is not None:
            if env_contract is None:
                raise ContractError(
                    f"the experience was recorded with robot contract '{contract.name}', but {env_id} is not a "
                    "robot environment (no contract); train on that robot's environment, e.g. "
                    f"--env {GENERIC_REACH_ID} --env-kwargs '{{robot: <spec.yaml>}}'"
                )
            check_same_contract(env_contract, contract, (f"environment {env_id}", "datasets"))
        return cls(env_id, kwargs, max_episode_steps, env_contract)

    def make(self, **overrides: Any) -> Any:
        """A new wrapped environment (actions in [-1, 1]); ``overrides`` go to ``gym.make`` (e.g. render)."""
        import gymnasium as gym
        from gymnasium.wrappers import ClipAction, RescaleAction

        try:
            env = gym.make(
                self.env_id, max_episode_steps=self.max_episode_steps, **{**self.kwargs, **overrides}
            )
        except gym.error.Error as exc:
            raise ConfigError(f"cannot make environment {self.env_id!r}: {exc}") from exc
        act_space, obs_space = env.action_space, env.observation_space
        problem = None
        if not isinstance(act_space, gym.spaces.Box) or len(act_space.shape) != 1:
            problem = f"MPO here needs a 1-D Box action space, got {act_space}"
        elif not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
            problem = f"action bounds must be finite to rescale them to [-1, 1], got {act_space}"
        elif not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            problem = (
                f"needs a flat 1-D Box observation space, got {obs_space}; wrap the environment with "
                "gymnasium.wrappers.FlattenObservation when registering it"
            )
        if problem:
            env.close()
            raise ConfigError(f"{self.env_id}: {problem}")
        bound = np.ones(act_space.shape, np.float32)
        return ClipAction(RescaleAction(env, -bound, bound))

    def describe(self) -> dict[str, Any]:
        """Plain values for checkpoint metadata (the contract is stored separately, as JSON)."""
        kwargs = {k: v for k, v in self.kwargs.items() if k != "robot"}
        return {"env_id": self.env_id, "env_kwargs": kwargs, "max_episode_steps": self.max_episode_steps}


def _takes_robot(registered: Any) -> bool:
    entry = registered.entry_point
    return isinstance(entry, str) and entry.endswith("reach_env:RobotReachEnv")


def check_same_contract(a: RobotSpec, b: RobotSpec, names: tuple[str, str]) -> None:
    """Refuse two sources of one run whose contracts differ, listing every differing field."""
    differences = contract_differences(a, b, names)
    if differences:
        raise ContractError(
            f"the robot contracts of the {names[0]} and the {names[1]} differ in {len(differences)} field(s):\n  "
            + "\n  ".join(differences)
            + "\nA policy can only serve one contract: convert the bags again with the environment's spec "
            "(mpo-ros bag2data --robot ...), or train on the datasets' own robot (omit --env for offline runs)"
        )


def make_env(
    env_id: str, max_episode_steps: int | None = None, env_kwargs: str | Mapping[str, Any] | None = None
) -> Any:
    """``gym.make`` + actions rescaled to [-1, 1] and clipped (one-off use: benchmarks, tests)."""
    return EnvFactory.resolve(env_id, env_kwargs, max_episode_steps).make()
