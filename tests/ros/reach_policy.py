"""A hand-written reach controller for arm2, exported to ONNX like a trained policy.

Analytic inverse kinematics of the two-link arm (links 0.3 m and 0.25 m, models/arm2.xml) maps the
goal in the observation to joint targets, then to actions in [-1, 1]. It lets the ROS tests check
that a policy drives the simulated arm to its goal without waiting for a trained network.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mpo_ros.contract.observation import observation_names, observation_size
from mpo_ros.contract.spec import RobotSpec
from mpo_ros.training.export import export_module

UPPER_ARM, FOREARM = 0.3, 0.25


class ReachIK(torch.nn.Module):
    def __init__(self, spec: RobotSpec) -> None:
        super().__init__()
        names = observation_names(spec)
        self.goal_index = [names.index("goal/0"), names.index("goal/1")]
        self.register_buffer("default", torch.tensor([j.default for j in spec.joints], dtype=torch.float32))
        self.register_buffer(
            "scale", torch.tensor([j.action_scale for j in spec.joints], dtype=torch.float32)
        )

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        # Clamped so that any observation (e.g. the zero warm-up input) gives a finite action.
        x = torch.clamp(observation[:, self.goal_index[0]], min=0.05)
        y = observation[:, self.goal_index[1]]
        cos_elbow = (x * x + y * y - UPPER_ARM**2 - FOREARM**2) / (2 * UPPER_ARM * FOREARM)
        elbow = torch.acos(torch.clamp(cos_elbow, -0.999, 0.999))
        # Goals lie at x > 0 and UPPER_ARM > FOREARM, so both atan arguments have positive denominators.
        shoulder = torch.atan(y / x) - torch.atan(
            FOREARM * torch.sin(elbow) / (UPPER_ARM + FOREARM * torch.cos(elbow))
        )
        targets = torch.stack([shoulder, elbow], dim=1)
        return torch.clamp((targets - self.default) / self.scale, -1.0, 1.0)


def export_reach_policy(spec: RobotSpec, path: Path) -> Path:
    torch.set_num_threads(1)
    obs_dim = observation_size(spec)
    torch.manual_seed(0)
    low = torch.tensor(spec.task.goal_low)
    high = torch.tensor(spec.task.goal_high)
    parity = torch.zeros(1024, obs_dim)
    names = observation_names(spec)
    goal = low + (high - low) * torch.rand(1024, 2)
    parity[:, names.index("goal/0")] = goal[:, 0]
    parity[:, names.index("goal/1")] = goal[:, 1]
    export_module(
        ReachIK(spec),
        obs_dim,
        spec.action_dim,
        path,
        robot_spec=spec,
        provenance={"note": "analytic IK reach controller for tests"},
        parity_observations=parity.numpy(),
    )
    return path


if __name__ == "__main__":
    # `make test-jazzy`: export in the main venv (torch), for the ROS tests in the torch-free Jazzy venv.
    import sys

    from mpo_ros.contract.spec import load_spec

    out = Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    print(export_reach_policy(load_spec("arm2"), out))
