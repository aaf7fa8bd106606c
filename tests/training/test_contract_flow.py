"""The robot contract flows from the data (or the environment) into the checkpoint and the ONNX file.

A dataset converted with a modified arm2 spec (other action scales, a limit and a default pose) used to
train offline without complaint and export the *shipped* arm2 contract, because the offline loop looked its
evaluation env up by robot name. These tests train on such a dataset and check that the checkpoint and the
exported file carry the dataset's contract, and that mixing it with the shipped arm2 env is refused with
every differing field listed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mpo_ros.contract.spec import RobotSpec, contract_differences, load_spec, models_dir
from mpo_ros.errors import ConfigError, ContractError, DatasetError
from mpo_ros.training.loop import TrainConfig, train
from mpo_ros.training.state import load_checkpoint

torch.set_num_threads(1)


def _modified_arm2(folder: Path) -> Path:
    """arm2 with other action scales, an elbow limit and a shoulder default pose; same MJCF."""
    data = yaml.safe_load((models_dir() / "arm2.yaml").read_text())
    data["name"] = "arm2"  # same name: only the values tell the two contracts apart
    data["mjcf"] = str((models_dir() / "arm2.xml").resolve())
    data["joints"][0]["action_scale"] = 0.9
    data["joints"][0]["default"] = -0.5
    data["joints"][1]["action_scale"] = 0.8
    data["joints"][1]["upper"] = 2.4
    path = folder / "arm2_modified.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def modified(tmp_path_factory) -> tuple[Path, RobotSpec]:
    """A dataset converted from a scripted arm2 bag with the modified contract."""
    from mpo_ros.data.convert import Bag2DataConfig, convert_bags
    from mpo_ros.data.scripted import record_scripted_bag

    tmp = tmp_path_factory.mktemp("modified")
    spec_path = _modified_arm2(tmp)
    spec = load_spec(spec_path)
    record_scripted_bag(spec, tmp / "bag", episodes=4, seed=3)
    path, _ = convert_bags(
        Bag2DataConfig(bags=[str(tmp / "bag")], robot=str(spec_path), out=str(tmp / "ds"), progress=False)
    )
    return Path(path), spec


def _tiny(**overrides: object) -> TrainConfig:
    values = dict(
        eval_every=0, eval_episodes=1, log_every=10, progress=False, policy_hidden=[16], critic_hidden=[16],
        batch_size=16, num_samples=4, abm_samples=4, threads=1, checkpoint_every=0, warmup_steps=20,
    )  # fmt: skip
    return TrainConfig(**{**values, **overrides})  # type: ignore[arg-type]


def test_differences_list_every_field(modified) -> None:
    _, spec = modified
    differences = contract_differences(load_spec("arm2"), spec, ("shipped", "data"))
    assert sorted(d.split(":")[0] for d in differences) == [
        "joints[0].action_scale",
        "joints[0].default",
        "joints[1].action_scale",
        "joints[1].upper",
    ]
    assert "joints[1].upper: shipped 2.6, data 2.4" in differences


def test_offline_run_checkpoints_and_exports_the_datasets_contract(modified, tmp_path) -> None:
    dataset, spec = modified
    out = tmp_path / "offline"
    train(_tiny(data=[str(dataset)], steps=12, out=str(out)))
    meta = load_checkpoint(out)["metadata"]
    stored = RobotSpec.from_json(meta["robot_spec_json"])
    assert contract_differences(stored, spec) == [] and contract_differences(stored, load_spec("arm2"))
    assert meta["contract_source"] == "datasets"

    from mpo_ros.training.export import export_checkpoint

    report = export_checkpoint(out, tmp_path / "policy.onnx", parity_count=1000)
    import onnx

    from mpo_ros.contract.policy_file import decode_metadata

    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    exported = decode_metadata(props, str(report.path)).robot_spec
    assert exported is not None
    assert contract_differences(exported, spec) == []


def test_an_environment_with_another_contract_is_refused_with_every_field(modified, tmp_path) -> None:
    dataset, _ = modified
    for offline_env in (True, False):
        config = _tiny(
            data=[str(dataset)], steps=30, out=str(tmp_path / f"mixed{offline_env}"), env="mpo_ros_sim:Arm2Reach-v0",
            data_ratio=1.0 if offline_env else 0.5,
        )  # fmt: skip
        with pytest.raises(ContractError) as info:
            train(config)
        message = str(info.value)
        assert "4 field(s)" in message and "joints[1].upper: environment" in message and "bag2data" in message


def test_a_resumed_run_must_keep_its_data(modified, behaviour, tmp_path) -> None:
    dataset, _ = modified
    out = tmp_path / "run"
    train(_tiny(data=[str(dataset)], steps=5, out=str(out)))
    with pytest.raises(ConfigError, match=r"1 option\(s\) differ.*\n  data: run"):
        train(_tiny(data=[str(behaviour)], steps=10, out=str(out), resume=True))


def test_datasets_of_two_contracts_are_refused_together(modified, behaviour, tmp_path) -> None:
    dataset, _ = modified
    with pytest.raises(DatasetError, match=r"different robot contracts:\n  joints\[0\]\.action_scale"):
        train(_tiny(data=[str(behaviour), str(dataset)], steps=5, out=str(tmp_path / "both")))


def test_the_cli_refuses_a_mixed_run_whose_data_has_another_contract(modified, tmp_path, caplog) -> None:
    from mpo_ros import cli

    dataset, _ = modified
    argv = ["train", "--env", "mpo_ros_sim:Arm2Reach-v0", "--data", str(dataset), "--data-ratio", "0.5",
            "--steps", "30", "--out", str(tmp_path / "run"), "--progress", "false"]  # fmt: skip
    assert cli.main(argv) == 2
    assert "differ in 4 field(s)" in caplog.text and "joints[0].action_scale: environment" in caplog.text
    assert not (tmp_path / "run" / "metrics.csv").exists()
