"""Fit simulator parameters to robot logs with mujoco.sysid.

The robot's MJCF is loaded as an `MjSpec`; each fitted quantity is a `mujoco.sysid.Parameter` whose
modifier writes it into the spec (joint armature, damping, frictionloss; the position servo's kp,
which MuJoCo stores twice, as gain and as bias, and kv). Logged commands are replayed as the
servos' targets (zero-order hold on the physics grid, as the robot's controller holds them), and
the residual is measured minus simulated joint positions and velocities at the logged times.
Command latency is the sysid delay transform on the simulated signals: for a robot that starts at
rest, delaying the response equals delaying the commands, and the delay stays a smooth parameter
for the least-squares solver (a whole-substep command shift would not be).

Two corrections keep the numbers in the robot's units:

* MuJoCo computes sensors before it integrates, so a rollout's sensor sample labelled t_k+1 holds
  the state at t_k: the simulated signals lag one physics step, which the fitted delay absorbs.
  `latency_s` adds that step back.
* Kp and kv act on the same servo: kp from the command, kv and joint damping from the velocity.
  Joint damping and kv enter the dynamics identically until the actuator force saturates, so fitting
  both gives an unidentifiable pair: their confidence intervals say so and the fit warns by name.

Confidence intervals are sysid's (`calculate_intervals`: Gauss-Newton covariance at the optimum,
95 %). A parameter whose interval is infinite, or wider than its own value, is reported as not
identified by these logs (a warning naming it), never passed off as fitted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np
from mpo_ros_sim.model import bind, mjcf_path
from mujoco import minimize as mujoco_minimize
from mujoco import sysid

from mpo_ros.calibration.logs import LogSegment
from mpo_ros.calibration.robots import nominal_values
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.errors import CalibrationError

__all__ = [
    "DEFAULT_PARAMETERS",
    "JOINT_QUANTITIES",
    "LATENCY",
    "FitResult",
    "FittedParameter",
    "fit",
    "parameter_names",
]

log = logging.getLogger(__name__)

JOINT_QUANTITIES = ("armature", "damping", "frictionloss", "kp", "kv")
LATENCY = "latency"
# kv is left out by default: with joint damping it forms an unidentifiable pair (see module doc).
DEFAULT_PARAMETERS = ("armature", "damping", "frictionloss", "kp", LATENCY)
# Least-squares iterations: enough for 11 parameters from a nominal start (converges in ~10-20).
MAX_ITERATIONS = 60


@dataclass(frozen=True)
class FittedParameter:
    """One fitted quantity in the robot's units (s for latency), with its 95 % interval."""

    name: str  # "<joint>/<quantity>" or "latency"
    value: float
    nominal: float
    ci_low: float
    ci_high: float
    identified: bool


@dataclass
class FitResult:
    """What `fit` found, plus what the report and the writers need."""

    parameters: dict[str, FittedParameter]
    latency_s: float
    validation_rmse_before: float  # rad, joint positions, nominal model without latency
    validation_rmse_after: float  # rad, joint positions, fitted model
    warnings: list[str] = field(default_factory=list)
    # Per validation segment: times [T], measured [T, n], nominal sim [T, n], fitted sim [T, n].
    validation_traces: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=list
    )
    iterations: int = 0


def parameter_names(spec: RobotSpec, quantities: Sequence[str]) -> list[str]:
    """['shoulder/armature', ..., 'latency'] for the chosen quantities (or full names) of every joint."""
    names: list[str] = []
    for item in quantities:
        if item == LATENCY:
            names.append(LATENCY)
        elif item in JOINT_QUANTITIES:
            names += [f"{j}/{item}" for j in spec.joint_names]
        elif "/" in item:
            joint, quantity = item.split("/", 1)
            if joint not in spec.joint_names or quantity not in JOINT_QUANTITIES:
                raise CalibrationError(
                    f"parameter '{item}': joint must be one of {list(spec.joint_names)} and quantity one of "
                    f"{list(JOINT_QUANTITIES)}"
                )
            names.append(item)
        else:
            raise CalibrationError(
                f"unknown parameter '{item}'; use {[*list(JOINT_QUANTITIES), LATENCY]} or '<joint>/<quantity>'"
            )
    names = list(dict.fromkeys(names))
    _refuse_twins(spec, names)
    return names


def _refuse_twins(spec: RobotSpec, names: list[str]) -> None:
    """Joint damping and servo kv of one joint are one velocity gain to the dynamics: fit one of them.

    Fitting both leaves a flat valley (the fit trades one against the other, and sysid's intervals
    come out infinite for every parameter), so the request is refused up front, naming the pair.
    """
    twins = [j for j in spec.joint_names if f"{j}/damping" in names and f"{j}/kv" in names]
    if twins:
        pairs = ", ".join(f"{j}/damping + {j}/kv" for j in twins)
        raise CalibrationError(
            f"cannot identify {pairs} together: joint damping and the servo's kv both act as torque "
            "proportional to joint velocity, so only their sum shows in the logs; fit one of them "
            "(--params damping ... or --params kv ...), the other keeps its MJCF value"
        )


# --- the sysid problem ---------------------------------------------------------------------------


class _Problem:
    """The robot's MjSpec with sensors for the logged signals, and one sysid Parameter per quantity."""

    def __init__(self, spec: RobotSpec, names: list[str]) -> None:
        self.spec = spec
        self.names = names
        self.mjspec = mujoco.MjSpec.from_file(str(mjcf_path(spec)))
        model = self.mjspec.compile()
        binding = bind(spec, model)
        if model.nu != spec.num_joints:
            raise CalibrationError(
                f"robot '{spec.name}': the MJCF has {model.nu} actuators but the contract drives "
                f"{spec.num_joints} joints; calibration replays the contract's commands only"
            )
        self.timestep = float(model.opt.timestep)
        self.actuator_id = [int(a) for a in binding.actuator_id]
        self.qpos_address = [int(a) for a in binding.qpos_address]
        self.dof_address = [int(a) for a in binding.dof_address]
        self.qpos0 = model.qpos0.copy()
        self.nominal = {LATENCY: 0.0, **nominal_values(spec)}
        for joint in spec.joint_names:
            self.mjspec.add_sensor(
                name=f"{joint}_pos",
                type=mujoco.mjtSensor.mjSENS_JOINTPOS,
                objtype=mujoco.mjtObj.mjOBJ_JOINT,
                objname=joint,
            )
        for joint in spec.joint_names:
            self.mjspec.add_sensor(
                name=f"{joint}_vel",
                type=mujoco.mjtSensor.mjSENS_JOINTVEL,
                objtype=mujoco.mjtObj.mjOBJ_JOINT,
                objname=joint,
            )
        self.model = self.mjspec.compile()
        self.params = sysid.ParameterDict()
        for name in names:
            self.params.add(self._parameter(name))

    def _parameter(self, name: str) -> sysid.Parameter:
        nominal = self.nominal[name]
        period = self.spec.control_period
        if name == LATENCY:
            # Down to minus half a period: the one-step sensor lag and a command logged just after
            # it took effect both make the apparent delay a little shorter than the true one.
            return sysid.Parameter(name, 0.0, -0.5 * period, 5.0 * period)
        joint, quantity = name.split("/")
        low, high = _bounds(quantity, nominal)
        modifier = _modifier(joint, quantity, self.actuator_id[self.spec.joint_names.index(joint)])
        return sysid.Parameter(name, nominal, low, high, modifier=modifier)

    def x_scale(self) -> np.ndarray:
        """Typical magnitude per parameter, so the solver steps are well scaled (kp ~ 10, armature ~ 1e-3)."""
        scales = []
        for name in self.params.keys():  # noqa: SIM118 - ParameterDict iterates by index, not key
            p = self.params[name]
            typical = abs(float(p.nominal[0]))
            span = float(p.max_value[0] - p.min_value[0])
            scales.append(typical if typical > 0 else 0.1 * span)
        return np.array(scales)

    # --- data -------------------------------------------------------------------------------------
    def sequences(self, segments: list[LogSegment], use_velocities: bool) -> sysid.ModelSequences:
        names = [f"{j}_pos" for j in self.spec.joint_names]
        if use_velocities:
            names += [f"{j}_vel" for j in self.spec.joint_names]
        initial, controls, sensors = [], [], []
        for segment in segments:
            grid = np.arange(int(segment.duration / self.timestep) + 2) * self.timestep
            # Each command acts from the physics step nearest its logged time (zero-order hold).
            held = np.searchsorted(segment.command_times, grid + 0.5 * self.timestep, side="right") - 1
            ctrl = np.empty((len(grid), self.model.nu))
            ctrl[:, self.actuator_id] = segment.commands[np.clip(held, 0, None)]
            controls.append(sysid.TimeSeries(grid, ctrl))
            data = (
                segment.positions
                if not use_velocities
                else np.hstack([segment.positions, segment.velocities])
            )
            sensors.append(sysid.TimeSeries.from_names(segment.state_times, data, self.model, names))
            qpos = self.qpos0.copy()
            qpos[self.qpos_address] = segment.positions[0]
            qvel = np.zeros(self.model.nv)
            if np.all(np.isfinite(segment.velocities[0])):
                qvel[self.dof_address] = segment.velocities[0]
            initial.append(sysid.create_initial_state(self.model, qpos, qvel))
        labels = [s.source for s in segments]
        return sysid.ModelSequences(self.spec.name, self.mjspec, labels, initial, controls, sensors)

    def transform(self) -> sysid.SignalTransform:
        transform = sysid.SignalTransform()
        if LATENCY in self.params:
            transform.delay("*", self.params[LATENCY])
        return transform


def _bounds(quantity: str, nominal: float) -> tuple[float, float]:
    """Physically plausible boxes around the hand-written value (a factor of 5-10 either way)."""
    if quantity == "kp":
        return 0.2 * nominal, 5.0 * nominal
    if quantity == "frictionloss":
        return 0.0, max(10.0 * nominal, 0.05)
    if nominal > 0:
        return 0.1 * nominal, 10.0 * nominal
    return 0.0, {"armature": 0.1, "damping": 1.0, "kv": 1.0}[quantity]


def _modifier(
    joint: str, quantity: str, actuator_index: int
) -> Callable[[mujoco.MjSpec, sysid.Parameter], None]:
    def apply(mjspec: mujoco.MjSpec, p: sysid.Parameter) -> None:
        value = float(p.value[0])
        if quantity == "damping":
            mjspec.joint(joint).damping[0] = value  # MjSpec keeps [linear, higher-order terms]
        elif quantity in ("armature", "frictionloss"):
            setattr(mjspec.joint(joint), quantity, value)
        elif quantity == "kp":
            sysid.apply_pgain(mjspec, mjspec.actuators[actuator_index].name, value)
        else:
            sysid.apply_dgain(mjspec, mjspec.actuators[actuator_index].name, value)

    return apply


# --- the fit -------------------------------------------------------------------------------------


def fit(
    spec: RobotSpec,
    train: list[LogSegment],
    validation: list[LogSegment],
    quantities: Sequence[str] = DEFAULT_PARAMETERS,
    max_iterations: int = MAX_ITERATIONS,
    html_report: Path | None = None,
) -> FitResult:
    """Fit the chosen quantities on `train`, report the position RMSE on `validation` before/after.

    `html_report`: also write sysid's own HTML report of the training fit there (parameter table,
    intervals, signals, optimisation trace).
    """
    names = parameter_names(spec, quantities)
    problem = _Problem(spec, names)
    _check_actuator_names(problem)
    use_velocities = all(np.all(np.isfinite(s.velocities)) for s in train + validation)
    train_seq = problem.sequences(train, use_velocities)
    residual_fn = sysid.build_residual_fn(
        models_sequences=[train_seq], modify_residual=problem.transform().apply, n_threads=2
    )
    initial = problem.params.copy()
    fitted, result = sysid.optimize(
        initial_params=problem.params,
        residual_fn=residual_fn,
        optimizer="mujoco",
        verbose=False,
        max_iters=max_iterations,
        x_scale=problem.x_scale(),
    )
    x_hat = fitted.as_vector()
    if not np.all(np.isfinite(x_hat)):
        raise CalibrationError(f"the fit diverged (parameters {dict(zip(names, x_hat, strict=True))})")
    if html_report is not None:
        report = sysid.default_report(
            [train_seq],
            initial,
            fitted,
            residual_fn,
            result,
            title=f"{spec.name} calibration",
            generate_videos=False,
        )
        report.save(str(html_report))
    intervals = _intervals(residual_fn, fitted, x_hat)
    parameters, warnings = _collect(problem, fitted, intervals, names)
    latency = parameters[LATENCY].value if LATENCY in parameters else 0.0
    validation_seq = problem.sequences(validation, use_velocities)
    val_fn = sysid.build_residual_fn(
        models_sequences=[validation_seq],
        modify_residual=problem.transform().apply,
        n_threads=2,
        return_pred_all=True,
    )
    before = _positions(val_fn, initial, initial.as_nominal_vector(), spec.num_joints)
    after = _positions(val_fn, fitted, x_hat, spec.num_joints)
    traces = [
        (t, measured, nominal_sim, fitted_sim)
        for (t, measured, nominal_sim), (_, _, fitted_sim) in zip(before, after, strict=True)
    ]
    return FitResult(
        parameters=parameters,
        latency_s=latency,
        validation_rmse_before=_rmse(before),
        validation_rmse_after=_rmse(after),
        warnings=warnings,
        validation_traces=traces,
        iterations=len(result.extras.get("objective", [])),
    )


def _check_actuator_names(problem: _Problem) -> None:
    unnamed = [i for i in problem.actuator_id if not problem.mjspec.actuators[i].name]
    if unnamed:
        raise CalibrationError(
            f"robot '{problem.spec.name}': actuator(s) {unnamed} have no name in the MJCF; name them "
            "(sysid sets servo gains by actuator name)"
        )


def _intervals(residual_fn: Callable, params: sysid.ParameterDict, x_hat: np.ndarray) -> np.ndarray:
    """95 % half-widths from the finite-difference Jacobian at the optimum (sysid's own estimator)."""

    def stacked(x: np.ndarray) -> np.ndarray:
        residuals, _, _ = residual_fn(x, params)
        return np.concatenate(residuals)

    r_hat = stacked(x_hat)
    low, high = params.get_bounds()
    jacobian = mujoco_minimize.jacobian_fd(
        residual=stacked,
        x=x_hat.reshape(-1, 1),
        r=r_hat.reshape(-1, 1),
        eps=np.finfo(np.float64).eps ** 0.5,
        n_res=0,
        bounds=[low.reshape(-1, 1), high.reshape(-1, 1)],
    )[0]
    params.update_from_vector(x_hat)
    _, half_widths = sysid.calculate_intervals([r_hat], np.asarray(jacobian))
    return np.asarray(half_widths, dtype=np.float64)


def _collect(
    problem: _Problem, fitted: sysid.ParameterDict, intervals: np.ndarray, names: list[str]
) -> tuple[dict[str, FittedParameter], list[str]]:
    out: dict[str, FittedParameter] = {}
    warnings: list[str] = []
    for name, half in zip(names, intervals, strict=True):
        p = fitted[name]
        value = float(p.value[0])
        low, high = float(p.min_value[0]), float(p.max_value[0])
        shift = problem.timestep if name == LATENCY else 0.0
        identified = bool(np.isfinite(half)) and (name == LATENCY or half <= abs(value))
        at_bound = min(value - low, high - value) <= 1e-6 * max(high - low, 1e-12)
        if not identified:
            warnings.append(
                f"{name}: not identified by these logs (fit {value:.4g} +- {half:.3g}, nominal "
                f"{problem.nominal[name]:.4g}); excite that joint more, log longer, or leave it out (--params)"
            )
        elif at_bound and name != LATENCY:
            warnings.append(
                f"{name}: the fit {value:.4g} sits on its bound [{low:.4g}, {high:.4g}]; check the MJCF"
            )
        out[name] = FittedParameter(
            name=name,
            value=value + shift,
            nominal=problem.nominal[name],
            ci_low=value + shift - half,
            ci_high=value + shift + half,
            identified=identified,
        )
    for message in warnings:
        log.warning("%s", message)
    return out, warnings


def _positions(
    residual_fn: Callable, params: sysid.ParameterDict, x: np.ndarray, n: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(times, measured, simulated) joint positions of every segment at parameter vector x."""
    _, predicted, measured = residual_fn(np.asarray(x, dtype=np.float64), params)
    out = []
    for pred, meas in zip(predicted, measured, strict=True):
        out.append((meas[0].times, meas[0].data[:, :n], pred[0].data[:, :n]))
    return out


def _rmse(traces: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    errors = np.concatenate([(sim - meas).ravel() for _, meas, sim in traces])
    return float(np.sqrt(np.mean(errors**2)))
