"""What `mpo-ros calibrate` leaves in --out: robot, parameters, randomisation profile, report.

* ``calibrated.yaml`` + ``calibrated.xml``: the robot's own contract with the fitted MJCF beside it,
  usable wherever a robot spec is (``--robot``, ``--env-kwargs '{robot: ...}'``).
* ``parameters.json``: ``{"parameters": {"<joint>/<quantity>": {"value", "nominal", "ci_low",
  "ci_high"}}, "latency_s", "validation_rmse": {"before", "after"}}`` (the issue's schema).
* ``profile.yaml``: a randomisation profile (sim/randomization.py) centred on the fit. The fitted
  values live in the calibrated MJCF, so the profile's scales are centred on 1 and as wide as the
  confidence intervals (never narrower than ``min_relative_range``); latency, which a contract
  cannot carry, is the profile's latency_steps + latency_fraction. Quantities the fit did not
  identify (masses, noise, jitter, unfitted gains) keep the base profile's ranges.
* ``report.png`` and ``report.md``: validation trajectories measured vs simulated before and after,
  and the parameter table with intervals and warnings.
* ``sysid_report.html`` (written by `fit`): mujoco.sysid's own report of the training fit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from mpo_ros_sim.randomization import RandomizationProfile, load_profile

from mpo_ros.calibration.fit import LATENCY, FitResult
from mpo_ros.calibration.robots import write_robot
from mpo_ros.contract.spec import RobotSpec

__all__ = ["calibrated_profile", "write_outputs"]

# Profile key -> the fitted quantity whose intervals set its width (a scale on the calibrated value).
_SCALE_KEYS = {"joint_damping_scale": "damping", "actuator_kp_scale": "kp", "actuator_kv_scale": "kv"}


def write_outputs(
    spec: RobotSpec,
    result: FitResult,
    out_dir: Path,
    base_profile: str,
    min_relative_range: float,
    sources: list[str],
) -> dict[str, Path]:
    """Write every output file; returns name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    values = {name: p.value for name, p in result.parameters.items() if name != LATENCY}
    header = (
        f"# Calibrated by `mpo-ros calibrate` from {len(sources)} log(s): {', '.join(sources)}\n"
        f"# Validation RMSE (joint positions): {result.validation_rmse_before:.4g} rad nominal -> "
        f"{result.validation_rmse_after:.4g} rad calibrated; command latency {result.latency_s * 1e3:.1f} ms "
        "(in profile.yaml: a contract carries no latency).\n"
    )
    paths = {"calibrated.yaml": write_robot(spec, values, out_dir, "calibrated", header)}
    paths["calibrated.xml"] = out_dir / "calibrated.xml"
    paths["parameters.json"] = _write_parameters(result, out_dir / "parameters.json")
    profile = calibrated_profile(spec, result, base_profile, min_relative_range)
    paths["profile.yaml"] = _write_profile(
        profile, out_dir / "profile.yaml", base_profile, min_relative_range
    )
    paths["report.png"] = _plot(spec, result, out_dir / "report.png")
    paths["report.md"] = _write_report(spec, result, out_dir / "report.md", sources)
    return paths


def _write_parameters(result: FitResult, path: Path) -> Path:
    document = {
        "parameters": {
            name: {
                "value": p.value,
                "nominal": p.nominal,
                "ci_low": _number(p.ci_low),
                "ci_high": _number(p.ci_high),
            }
            for name, p in result.parameters.items()
            if name != LATENCY
        },
        "latency_s": result.latency_s,
        "validation_rmse": {"before": result.validation_rmse_before, "after": result.validation_rmse_after},
    }
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    return path


def _number(value: float) -> float | None:
    """An unbounded interval end (parameter not identified) is null: JSON has no infinity."""
    return value if math.isfinite(value) else None


def calibrated_profile(
    spec: RobotSpec, result: FitResult, base_profile: str, min_relative_range: float
) -> RandomizationProfile:
    """Ranges centred on the fit (scales around 1 on the calibrated MJCF), widths from the intervals."""
    base = load_profile(base_profile)
    ranges = base.to_dict() if base is not None else {}
    for key, quantity in _SCALE_KEYS.items():
        fitted = [p for name, p in result.parameters.items() if name.endswith(f"/{quantity}")]
        if len(fitted) != spec.num_joints:
            continue  # not fitted for every joint: the base profile's uncertainty stands
        relative = max(_relative_half_width(p.value, p.ci_low, p.ci_high) for p in fitted)
        width = min(max(relative, min_relative_range), 0.9)
        ranges[key] = [1.0 - width, 1.0 + width]
    friction = [p for name, p in result.parameters.items() if name.endswith("/frictionloss")]
    if len(friction) == spec.num_joints:
        # Added dry friction can only grow in the profile: cover the upper half of the interval.
        half = max(0.5 * (p.ci_high - p.ci_low) for p in friction)
        top = max(half, min_relative_range * max(p.value for p in friction))
        ranges["joint_friction"] = [0.0, float(top)]
    if LATENCY in result.parameters:
        ranges.update(_latency_ranges(spec, result, min_relative_range))
    return RandomizationProfile.from_dict(ranges, name="calibrated", source="calibrated profile")


def _relative_half_width(value: float, low: float, high: float) -> float:
    if not (math.isfinite(low) and math.isfinite(high)) or value <= 0:
        return 0.9
    return 0.5 * (high - low) / value


def _latency_ranges(spec: RobotSpec, result: FitResult, min_relative_range: float) -> dict[str, list[float]]:
    """latency_steps + latency_fraction covering the fitted latency +- its interval (>= a quarter period).

    A profile's latency is n whole periods plus a fraction, sampled independently, so it cannot
    straddle a whole period: the range starts at the fit's whole periods and covers what lies above.
    """
    p = result.parameters[LATENCY]
    period = spec.control_period
    half = max(0.5 * (p.ci_high - p.ci_low), 0.25 * period, min_relative_range * abs(p.value))
    centre = max(p.value / period, 0.0)
    # A fit just below a whole period (0.98 of one) is that period: its whole part must not drop to 0.
    steps = math.floor(centre + 0.05)
    low = max(centre - half / period - steps, 0.0)
    high = min(centre + half / period - steps, 0.95)
    return {"latency_steps": [steps, steps], "latency_fraction": [low, max(low, high)]}


def _write_profile(profile: RandomizationProfile, path: Path, base: str, min_relative_range: float) -> Path:
    header = (
        "# Randomisation profile centred on a calibration (mpo-ros calibrate); use with the calibrated robot:\n"
        "#   --env-kwargs '{robot: calibrated.yaml, randomize: profile.yaml}'\n"
        "# Scales are relative to calibrated.xml (1 = the fit); widths are the 95 % confidence intervals,\n"
        f"# at least +-{min_relative_range:g} relative. Latency = latency_steps + latency_fraction control periods.\n"
        f"# Quantities the fit does not identify keep the '{base}' profile's ranges.\n"
    )
    path.write_text(header + yaml.safe_dump(profile.to_dict(), sort_keys=False))
    return path


def _plot(spec: RobotSpec, result: FitResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = spec.num_joints
    times, measured, nominal, fitted = max(result.validation_traces, key=lambda trace: len(trace[0]))
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.6 * n), sharex=True, squeeze=False)
    for j, ax in enumerate(axes[:, 0]):
        ax.plot(times, measured[:, j], color="black", lw=1.6, label="measured (log)")
        ax.plot(times, nominal[:, j], color="tab:red", lw=1.0, ls="--", label="nominal MJCF")
        ax.plot(times, fitted[:, j], color="tab:blue", lw=1.0, label="calibrated")
        ax.set_ylabel(f"{spec.joint_names[j]} (rad)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time in the validation segment (s)")
    fig.suptitle(
        f"{spec.name}: validation joint positions, RMSE {result.validation_rmse_before:.4f} rad (nominal) -> "
        f"{result.validation_rmse_after:.4f} rad (calibrated)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _write_report(spec: RobotSpec, result: FitResult, path: Path, sources: list[str]) -> Path:
    lines = [
        f"# Calibration of {spec.name}",
        "",
        f"Logs: {', '.join(sources)}",
        "",
        f"Validation RMSE of joint positions: **{result.validation_rmse_before:.4g} rad** (nominal MJCF, "
        f"no latency) -> **{result.validation_rmse_after:.4g} rad** (calibrated). "
        f"Least-squares iterations: {result.iterations}.",
        "",
        "| parameter | nominal | fitted | 95 % interval | identified |",
        "|---|---|---|---|---|",
    ]
    for name, p in result.parameters.items():
        lines.append(
            f"| {name} | {p.nominal:.5g} | {p.value:.5g} | [{p.ci_low:.5g}, {p.ci_high:.5g}] | "
            f"{'yes' if p.identified else 'NO'} |"
        )
    lines += ["", f"Command latency: {result.latency_s * 1e3:.2f} ms.", ""]
    if result.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in result.warnings] + [""]
    lines += ["![validation trajectories](report.png)", ""]
    path.write_text("\n".join(lines))
    return path


def relative_errors(result: FitResult, truth: dict[str, float]) -> dict[str, float]:
    """|fit - truth| / truth per parameter (benchmarks and tests read recoveries this way)."""
    return {
        k: abs(result.parameters[k].value - v) / abs(v)
        for k, v in truth.items()
        if v != 0 and k in result.parameters
    }
