"""Experience from Ray actors: ``mpo-ros train --actors N`` (``ray`` core; a local Ray or a cluster).

Each :class:`EnvRunner` actor owns an environment built from the run's :class:`EnvFactory` (so the same
robot contract), its own seed and randomisation draws, and a CPU copy of the policy. The learner process
(:class:`ActorPool`) asks each actor for chunks of ``actor_chunk_steps`` environment steps, writes them into
its replay as they arrive, and refreshes the actors' policy copies every ``actor_sync_every`` updates.

Rate limiting (the idea of Acme/Reverb's ``SampleToInsertRatio``): the training loop performs exactly
``updates_per_step`` updates per inserted step, and the pool asks for a new chunk only while the steps
collected and in flight stay within two chunks per actor of what the learner's updates justify. Adding actors
therefore speeds collection up without changing the update:step ratio the config asks for.

A dead actor (its process killed, its node lost) is restarted by Ray (``max_restarts=-1``); the pool drops
its unfinished chunk, reseeds it, counts the restart (``actors/restarts`` in metrics.csv, a log line) and
carries on. What is not bit-exact with actors: the order in which chunks arrive depends on timing, and a
resumed run restarts the actors' episodes (learner, replay, counters and RNGs are restored as in process).
"""

from __future__ import annotations

import collections
import logging
import os
import time
from typing import Any

import numpy as np
import torch

from mpo_ros.mpo.learner import MPOConfig, MPOLearner
from mpo_ros.training.config import TrainConfig
from mpo_ros.training.envs import EnvFactory
from mpo_ros.training.replay import ReplayBuffer

__all__ = ["ActorPool", "EnvRunner", "policy_weights"]

log = logging.getLogger(__name__)
# Seeds of actor i, restart g: far apart so no two actors (or lives of one actor) share episodes.
_ACTOR_SEED_STRIDE = 100_003
_RESTART_SEED_STRIDE = 7_919
_IN_FLIGHT = 2  # requests queued per actor


def policy_weights(learner: MPOLearner) -> dict[str, Any]:
    """What an actor needs to act like the learner: the policy and the observation statistics, on CPU."""
    return {
        "policy": {k: v.detach().cpu() for k, v in learner.policy.state_dict().items()},
        "normalizer": {k: v.detach().cpu() for k, v in learner.normalizer.state_dict().items()},
    }


class EnvRunner:
    """One environment and a CPU copy of the policy, stepping chunk by chunk (a Ray actor class)."""

    def __init__(
        self, factory: EnvFactory, mpo_config: dict[str, Any], obs_dim: int, act_dim: int, seed: int
    ) -> None:
        torch.set_num_threads(1)
        config = MPOConfig.from_any({**mpo_config, "device": "cpu", "compile": False})
        # The acting copy is a whole learner (its act() is the learner's own code); only policy and
        # normaliser are ever loaded into it.
        self.policy = MPOLearner(obs_dim, act_dim, config)
        self.env = factory.make()
        self.act_dim = act_dim
        self.version = -1
        self.observation: np.ndarray | None = None
        self.episode_return, self.episode_length = 0.0, 0
        self.reseed(seed)

    def pid(self) -> int:
        return os.getpid()

    def reseed(self, seed: int) -> None:
        """New generators for the environment, the uniform warm-up actions and the policy's samples."""
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.env.reset(seed=seed)
        self.observation = None

    def collect(
        self, steps: int, uniform_steps: int, weights: dict[str, Any] | None, version: int
    ) -> dict[str, Any]:
        """``steps`` environment steps (the first ``uniform_steps`` uniformly random) as episode segments."""
        if weights is not None:
            self.policy.policy.load_state_dict(weights["policy"])
            self.policy.normalizer.load_state_dict(weights["normalizer"])
            self.version = version
        obs_dim = self.policy.obs_dim
        observations = np.zeros((steps, obs_dim), np.float32)
        next_observations = np.zeros((steps, obs_dim), np.float32)
        actions = np.zeros((steps, self.act_dim), np.float32)
        rewards = np.zeros(steps, np.float32)
        terminated = np.zeros(steps, np.float32)
        log_probs = np.zeros(steps, np.float32)
        segments: list[tuple[int, int, bool, bool]] = []  # (start, end, starts an episode, ends it)
        finished: list[tuple[float, int]] = []
        start, new_episode = 0, False
        uniform_log_prob = -self.act_dim * float(np.log(2.0))
        for t in range(steps):
            if self.observation is None:
                obs, _ = self.env.reset()
                self.observation = np.asarray(obs, np.float32)
                start, new_episode = t, True
            observations[t] = self.observation
            if t < uniform_steps:
                actions[t] = self.rng.uniform(-1.0, 1.0, self.act_dim)
                log_probs[t] = uniform_log_prob
            else:
                action, log_prob = self.policy.act(self.observation)
                actions[t], log_probs[t] = action, float(log_prob)
            obs, reward, term, trunc, _ = self.env.step(actions[t])
            next_observations[t] = np.asarray(obs, np.float32)
            rewards[t], terminated[t] = float(reward), float(term)
            self.episode_return += float(reward)
            self.episode_length += 1
            self.observation = next_observations[t]
            if term or trunc:
                segments.append((start, t + 1, new_episode, True))
                finished.append((self.episode_return, self.episode_length))
                self.episode_return, self.episode_length = 0.0, 0
                self.observation, start, new_episode = None, t + 1, False
        if start < steps:
            segments.append((start, steps, new_episode, False))
        return {
            "observations": observations,
            "actions": actions,
            "rewards": rewards,
            "next_observations": next_observations,
            "terminated": terminated,
            "log_probs": log_probs,
            "segments": segments,
            "finished": finished,
            "version": self.version,
        }

    def close(self) -> None:
        self.env.close()


class ActorPool:
    """The learner's side: N EnvRunner actors, their requests, the rate limit and the weight refresh."""

    def __init__(
        self, config: TrainConfig, factory: EnvFactory, learner: MPOLearner, replay: ReplayBuffer
    ) -> None:
        import ray

        self.ray = ray
        self.config = config
        self.learner = learner
        self.replay = replay
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            _init_ray(config)
        runner = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(EnvRunner)
        mpo_config = {k: getattr(config, k) for k in MPOConfig.__dataclass_fields__}
        obs_dim, act_dim = learner.obs_dim, learner.act_dim
        self.actors = [
            runner.options(name=None).remote(factory, mpo_config, obs_dim, act_dim, self._seed(i, 0))
            for i in range(config.actors)
        ]
        self.generation = [0] * config.actors
        self.episode_id: list[int | None] = [None] * config.actors
        self.actor_version = [-2] * config.actors  # the weights version each actor holds
        # Per actor, its requests in submission order: (ref, steps). Two in flight each, so an actor starts its
        # next chunk while the learner takes the previous one (no idle round trip); chunks of one actor are
        # inserted in order, because its episodes continue from one chunk to the next.
        self.queues: list[collections.deque[tuple[Any, int]]] = [collections.deque() for _ in self.actors]
        self.weights_ref: Any = None
        self.weights_version = -1
        self.restarts = 0
        self.waiting_s = 0.0
        self.versions_seen: list[int] = []
        self.pids = ray.get([a.pid.remote() for a in self.actors])
        for i, pid in enumerate(self.pids):
            log.info("actor %d: pid %d", i, pid)
        self.env = None  # no in-process environment whose RNG a checkpoint could save
        self.sync(learner, force=True)

    def _seed(self, actor: int, generation: int) -> int:
        return self.config.seed + _ACTOR_SEED_STRIDE * (actor + 1) + _RESTART_SEED_STRIDE * generation

    # --- the loop's interface --------------------------------------------------------------------------

    def resume(self, counters: Any) -> None:
        """Actors start fresh episodes after a resume; restarts keep counting from the checkpoint's."""
        self.restarts = counters.actor_restarts

    def collect(self, counters: Any, finished: list[tuple[float, int]], block: bool) -> int:
        """Submit what the rate limit allows, then take every finished chunk into the replay.

        ``block``: wait (up to 1 s) for a chunk when the learner has nothing to do.
        """
        self._submit(counters)
        refs = [ref for queue in self.queues for ref, _ in queue]
        if not refs:
            return 0
        started = time.perf_counter()
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=1.0 if block else 0.0)
        if ready:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0.0)
        if block:
            self.waiting_s += time.perf_counter() - started
        done = set(ready)
        added = 0
        for actor, queue in enumerate(self.queues):
            while queue and queue[0][0] in done:
                ref, _ = queue.popleft()
                try:
                    # Copies: arrays from Ray's object store are read-only views of shared memory.
                    chunk = {
                        k: np.array(v) if isinstance(v, np.ndarray) else v
                        for k, v in self.ray.get(ref).items()
                    }
                except self.ray.exceptions.RayActorError as exc:
                    queue.clear()  # requests to the dead life fail too; the new life starts afresh
                    self._restarted(actor, counters, exc)
                    break
                added += self._insert(actor, chunk, counters, finished)
        self._submit(counters)
        return added

    def sync(self, learner: MPOLearner, force: bool = False) -> None:
        """Publish new policy weights every ``actor_sync_every`` updates (one object in Ray's store)."""
        if force or learner.num_updates - self.weights_version >= self.config.actor_sync_every:
            self.weights_ref = self.ray.put(policy_weights(learner))
            self.weights_version = learner.num_updates

    def metrics(self, learner: MPOLearner) -> dict[str, float]:
        lag = (
            float(np.mean([learner.num_updates - v for v in self.versions_seen]))
            if self.versions_seen
            else 0.0
        )
        figures = {
            "actors/restarts": float(self.restarts),
            "actors/policy_lag": lag,
            "actors/waiting_s": self.waiting_s,
        }
        self.versions_seen.clear()
        self.waiting_s = 0.0
        return figures

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception as exc:  # an actor that is already gone
                log.debug("kill actor: %s", exc)
        if self.owns_ray:
            self.ray.shutdown()

    # --- internals ------------------------------------------------------------------------------------

    def _in_flight(self) -> int:
        return sum(steps for queue in self.queues for _, steps in queue)

    def _step_budget(self, counters: Any) -> int:
        """Steps the actors may still be asked for: the run's remainder, and the rate limit."""
        config = self.config
        in_flight = self._in_flight()
        remaining = config.steps - counters.step - in_flight
        if config.updates_per_step == 0:
            return remaining
        justified = config.warmup_steps + self.learner.num_updates // config.updates_per_step
        slack = config.actors * _IN_FLIGHT * config.actor_chunk_steps
        return min(remaining, justified + slack - counters.step - in_flight)

    def _submit(self, counters: Any) -> None:
        for actor, queue in enumerate(self.queues):
            while len(queue) < _IN_FLIGHT:
                steps = min(self.config.actor_chunk_steps, self._step_budget(counters))
                if steps <= 0:
                    return
                uniform = max(0, self.config.warmup_steps - counters.step - self._in_flight())
                weights = None
                if self.actor_version[actor] != self.weights_version:
                    weights = self.weights_ref
                    self.actor_version[actor] = self.weights_version
                ref = self.actors[actor].collect.remote(steps, uniform, weights, self.weights_version)
                queue.append((ref, steps))

    def _insert(
        self, actor: int, chunk: dict[str, Any], counters: Any, finished: list[tuple[float, int]]
    ) -> int:
        replay, learner = self.replay, self.learner
        for start, end, starts, ends in chunk["segments"]:
            if starts or self.episode_id[actor] is None:
                self.episode_id[actor] = replay.new_episode_id()
                learner.observe(chunk["observations"][start])
            replay.add_segment(
                chunk["observations"][start:end],
                chunk["actions"][start:end],
                chunk["rewards"][start:end],
                chunk["next_observations"][start:end],
                chunk["terminated"][start:end],
                chunk["log_probs"][start:end],
                self.episode_id[actor],
            )
            learner.observe(chunk["next_observations"][start:end])
            if ends:
                self.episode_id[actor] = None
        steps = len(chunk["rewards"])
        counters.step += steps
        counters.episodes += len(chunk["finished"])
        finished.extend(chunk["finished"])
        self.versions_seen.append(int(chunk["version"]))
        return steps

    def _restarted(self, actor: int, counters: Any, exc: Exception) -> None:
        """Ray restarts a dead actor; drop its chunk, reseed the new life, count it, carry on."""
        self.restarts += 1
        counters.actor_restarts = self.restarts
        self.generation[actor] += 1
        self.episode_id[actor] = None  # its unfinished episode ends where the replay has it
        self.actor_version[actor] = -2  # the new life has no weights
        log.warning(
            "actor %d died (%s); Ray restarts it (restart %d of this run)",
            actor,
            type(exc).__name__,
            self.restarts,
        )
        handle = self.actors[actor]
        handle.reseed.remote(self._seed(actor, self.generation[actor]))
        try:
            pid = self.ray.get(handle.pid.remote(), timeout=120)
            log.warning("actor %d: restarted as pid %d", actor, pid)
        except Exception as error:  # restart still in progress: the next collect call waits for it
            log.warning("actor %d: restart not confirmed yet (%s)", actor, error)


def _init_ray(config: TrainConfig) -> None:
    import ray

    if config.ray_address:
        log.info("joining the Ray cluster at %s", config.ray_address)
        ray.init(address=config.ray_address, logging_level=logging.WARNING, log_to_driver=False)
        return
    cpus = max(config.actors, os.cpu_count() or 1)
    log.info("starting a local Ray with %d CPUs for %d actors", cpus, config.actors)
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=True,
    )
