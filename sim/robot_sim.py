"""A simulated servo-controlled robot: MuJoCo physics plus the actuator and latency model.

`RobotSim` is the physics layer shared by the gymnasium environment (which steps it as fast as it
can) and the ROS 2 sim node (which steps it in real time from ROS commands). It knows nothing about
observations, rewards or gym; it takes commands of the contract's interface in contract order (absolute
joint position targets for <position> servos, joint velocities for <velocity> servos: the servo's
ctrl is the command either way) and moves the robot, with the command latency, control-period jitter
and measurement noise of the current randomisation sample.

Latency is counted in physics substeps since `reset`: a command given now reaches the servos after
`round((latency_steps + latency_fraction) * physics_substeps)` substeps, so it takes effect in the
middle of a control period when the fraction says so. Commands are released in the order given.
"""

from __future__ import annotations

import collections

import mujoco
import numpy as np
from mpo_ros_sim.model import ContractBinding, bind, load_model
from mpo_ros_sim.randomization import DynamicsSample, RandomizationProfile

from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import ContractError

__all__ = ["RobotSim"]


class RobotSim:
    """MuJoCo model + data of one robot, driven by position or velocity commands in contract joint order."""

    def __init__(self, spec: RobotSpec, profile: RandomizationProfile | None = None, seed: int | None = None):
        self.spec = spec
        self.profile = profile
        self._model = load_model(spec)
        self._data = mujoco.MjData(self._model)
        self.binding: ContractBinding = bind(spec, self._model)
        # Per-step noise (jitter, measurement noise); episode-level draws use the rng given to
        # randomize(). Public so that an environment can seed it from its own generator.
        self.noise_rng = np.random.default_rng(seed)
        # Commands are clipped to the contract's static bounds: joint limits, or +-velocity_limit.
        self._lower = spec.command_arrays.lower
        self._upper = spec.command_arrays.upper
        self._velocity_servos = spec.velocity_commands
        self._default = np.array([j.default for j in spec.joints])
        self._nominal = self._snapshot()
        self.dynamics = DynamicsSample.nominal(len(self.binding.body_ids), spec.num_joints)
        self._pending: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._substep = 0
        self._kinematics_stale = True
        self._closed = False
        self.reset()

    # --- state ---------------------------------------------------------------------------------
    @property
    def model(self) -> mujoco.MjModel:
        return self._model

    @property
    def data(self) -> mujoco.MjData:
        return self._data

    @property
    def time(self) -> float:
        """Simulated time since reset (s)."""
        return float(self._data.time)

    @property
    def joint_positions(self) -> np.ndarray:
        """True joint positions (rad), contract order."""
        return self._data.qpos[self.binding.qpos_address].copy()

    @property
    def joint_velocities(self) -> np.ndarray:
        """True joint velocities (rad/s), contract order."""
        return self._data.qvel[self.binding.dof_address].copy()

    @property
    def ee_position(self) -> np.ndarray:
        """End-effector site position, the task's `goal_dim` leading coordinates (m)."""
        self.sync_kinematics()
        return self._data.site_xpos[self.binding.site_id, : self.binding.goal_dim].copy()

    @property
    def actuator_targets(self) -> np.ndarray:
        """Targets the servos are tracking now (after latency), contract order: positions (rad) or
        velocities (rad/s), per the contract's interface."""
        return self._data.ctrl[self.binding.actuator_id].copy()

    @property
    def latency_substeps(self) -> int:
        return round(self.dynamics.latency_periods * self.spec.physics_substeps)

    def measure(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions and velocities as a sensor reports them (with this episode's noise)."""
        positions, velocities = self.joint_positions, self.joint_velocities
        if self.dynamics.observation_noise_position > 0:
            positions += self.noise_rng.normal(0.0, self.dynamics.observation_noise_position, positions.shape)
        if self.dynamics.observation_noise_velocity > 0:
            velocities += self.noise_rng.normal(
                0.0, self.dynamics.observation_noise_velocity, velocities.shape
            )
        return positions, velocities

    # --- episode -------------------------------------------------------------------------------
    def reset(self, joint_positions: np.ndarray | None = None) -> None:
        """Robot at rest at `joint_positions` (default pose if None): position servos hold that pose,
        velocity servos are commanded zero velocity."""
        positions = (
            self._default if joint_positions is None else self._checked(joint_positions, "joint_positions")
        )
        mujoco.mj_resetData(self._model, self._data)
        self._data.qpos[self.binding.qpos_address] = positions
        self._data.ctrl[self.binding.actuator_id] = 0.0 if self._velocity_servos else positions
        self._pending.clear()
        self._substep = 0
        mujoco.mj_forward(self._model, self._data)
        self._kinematics_stale = False

    def randomize(self, rng: np.random.Generator) -> DynamicsSample:
        """Draw this episode's dynamics from the profile and write them into the model.

        Always starts from the nominal model, so samples never compound. Without a profile the
        nominal robot is restored. Call before `reset` (the latency applies to later commands).
        """
        num_bodies, num_joints = len(self.binding.body_ids), self.spec.num_joints
        if self.profile is None:
            sample = DynamicsSample.nominal(num_bodies, num_joints)
        else:
            sample = self.profile.sample(rng, num_bodies, num_joints)
        self._apply(sample)
        return sample

    # --- commands and time ---------------------------------------------------------------------
    def apply_command(self, command: np.ndarray) -> None:
        """Queue a command (contract order; rad for position servos, rad/s for velocity servos) behind the
        latency model, clipped to the contract's static bounds.

        A malformed command (wrong size, NaN/inf) raises ContractError and leaves the servos on the
        previous targets: the safe state is to keep holding, never to jump. Like ros2_control's forward
        controllers, the last command stays in force until the next one (for velocity servos: the arm
        keeps moving).
        """
        target = np.clip(self._checked(command, "command"), self._lower, self._upper)
        self._pending.append((self._substep + self.latency_substeps, target))

    def step(self, n_substeps: int | None = None) -> int:
        """Advance physics by one control period (jittered by the profile) or `n_substeps`.

        Returns the number of physics substeps taken.
        """
        total = self._jittered_substeps() if n_substeps is None else int(n_substeps)
        if total < 1:
            raise ValueError(f"n_substeps must be >= 1, got {total}")
        done = 0
        while done < total:
            self._release_due_commands()
            chunk = total - done
            if self._pending:
                chunk = max(1, min(chunk, self._pending[0][0] - self._substep))
            mujoco.mj_step(self._model, self._data, chunk)
            self._substep += chunk
            done += chunk
        self._kinematics_stale = True
        return total

    def close(self) -> None:
        """Release the simulation (kept for symmetry with renderers; safe to call twice)."""
        self._pending.clear()
        self._closed = True

    # --- internals -----------------------------------------------------------------------------
    def _checked(self, values: np.ndarray, what: str) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        if array.shape != (self.spec.num_joints,):
            raise ContractError(
                f"{what} must have {self.spec.num_joints} entries in the order {list(self.spec.joint_names)}, "
                f"got shape {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ContractError(
                f"{what} contains NaN or inf: {array.tolist()}; the previous targets stay in force"
            )
        return array

    def _release_due_commands(self) -> None:
        while self._pending and self._pending[0][0] <= self._substep:
            _, target = self._pending.popleft()
            self._data.ctrl[self.binding.actuator_id] = target

    def _jittered_substeps(self) -> int:
        nominal = self.spec.physics_substeps
        jitter = self.dynamics.control_jitter
        if jitter <= 0:
            return nominal
        return max(1, round(nominal * (1.0 + self.noise_rng.uniform(-jitter, jitter))))

    def sync_kinematics(self) -> None:
        """Bring body/site poses up to date with qpos (before rendering or reading sites)."""
        # mj_step leaves position-derived quantities one substep behind qpos; recompute lazily.
        if self._kinematics_stale:
            mujoco.mj_kinematics(self._model, self._data)
            self._kinematics_stale = False

    def _snapshot(self) -> dict[str, np.ndarray]:
        m, b = self._model, self.binding
        return {
            "mass": m.body_mass[b.body_ids].copy(),
            "inertia": m.body_inertia[b.body_ids].copy(),
            "damping": m.dof_damping[b.dof_address].copy(),
            "friction": m.dof_frictionloss[b.dof_address].copy(),
            # A position servo's gain is kp; a velocity servo's gain is its kv (gainprm[0] = -biasprm[2]).
            "kp": m.actuator_gainprm[b.actuator_id, 0].copy(),
            "kv": -m.actuator_biasprm[b.actuator_id, 2].copy(),
        }

    def _apply(self, sample: DynamicsSample) -> None:
        m, b, nominal = self._model, self.binding, self._nominal
        m.body_mass[b.body_ids] = nominal["mass"] * sample.mass_scale
        m.body_inertia[b.body_ids] = nominal["inertia"] * (sample.mass_scale * sample.inertia_scale)[:, None]
        m.dof_damping[b.dof_address] = nominal["damping"] * sample.joint_damping_scale
        m.dof_frictionloss[b.dof_address] = nominal["friction"] + sample.joint_friction
        kv = nominal["kv"] * sample.actuator_kv_scale
        if self._velocity_servos:
            # torque = kv (command - qdot): gain kv, bias -kv qdot. No position term (biasprm[1] stays 0):
            # writing -kp there would turn the velocity servo into a position servo. actuator_kp_scale has
            # no meaning for a velocity servo and is not used.
            m.actuator_gainprm[b.actuator_id, 0] = kv
            m.actuator_biasprm[b.actuator_id, 2] = -kv
        else:
            kp = nominal["kp"] * sample.actuator_kp_scale
            m.actuator_gainprm[b.actuator_id, 0] = kp
            m.actuator_biasprm[b.actuator_id, 1] = -kp
            m.actuator_biasprm[b.actuator_id, 2] = -kv
        # Constants derived from masses (e.g. constraint scaling of dry friction) follow the new model.
        mujoco.mj_setConst(m, self._data)
        self.dynamics = sample
