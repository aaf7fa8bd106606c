"""Run the mpo_ros policy node on a robot.

    ros2 launch mpo_ros policy.launch.py policy:=/path/to/policy.onnx [params_file:=my_robot.yaml]

Parameters come from config/policy.yaml (or `params_file`); the `policy` argument overrides the file's
policy. The node is a lifecycle node; with `autostart:=true` (default) it configures and activates
itself, as ros2_control and Nav2 nodes are launched, and is then active but DISABLED: enable it with
`ros2 service call /mpo_policy/enable std_srvs/srv/SetBool "{data: true}"`.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("mpo_ros"))
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "policy", default_value="arm2_reach.onnx", description="ONNX policy (path or models/ file)"
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                description="configure and activate the lifecycle node at start (false: a lifecycle "
                "manager drives it through /mpo_policy/change_state)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=str(share / "config" / "policy.yaml"),
                description="policy node parameters (ros__parameters format)",
            ),
            Node(
                package="mpo_ros",
                executable="policy_node",
                name="mpo_policy",
                output="screen",
                emulate_tty=True,
                parameters=[
                    LaunchConfiguration("params_file"),
                    {
                        "policy": LaunchConfiguration("policy"),
                        "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
                    },
                ],
            ),
        ]
    )
