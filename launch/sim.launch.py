"""The simulated robot and the policy node together: a robot-free end-to-end run.

    ros2 launch mpo_ros sim.launch.py [policy:=arm2_reach.onnx] [randomize:=heldout]

Both nodes read config/sim.yaml (sim node) and config/policy.yaml (policy node). Enable the policy with
`ros2 service call /mpo_policy/enable std_srvs/srv/SetBool "{data: true}"`; the sim node logs the
reach summary at shutdown (and writes it to `result_file` when set).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    config = Path(get_package_share_directory("mpo_ros")) / "config"
    return LaunchDescription(
        [
            DeclareLaunchArgument("policy", default_value="arm2_reach.onnx", description="ONNX policy"),
            DeclareLaunchArgument(
                "randomize", default_value="none", description="sim randomisation: none | train | heldout"
            ),
            DeclareLaunchArgument("result_file", default_value="", description="reach summary JSON"),
            Node(
                package="mpo_ros",
                executable="sim_node",
                name="mpo_sim",
                output="screen",
                emulate_tty=True,
                parameters=[
                    str(config / "sim.yaml"),
                    {
                        "randomize": LaunchConfiguration("randomize"),
                        "result_file": LaunchConfiguration("result_file"),
                    },
                ],
            ),
            Node(
                package="mpo_ros",
                executable="policy_node",
                name="mpo_policy",
                output="screen",
                emulate_tty=True,
                parameters=[str(config / "policy.yaml"), {"policy": LaunchConfiguration("policy")}],
            ),
        ]
    )
