"""What runs on the robot: the ONNX policy, the safety filter, the supervisor, the controller, the rate.

Imports only ``mpo_ros.contract`` and ``mpo_ros.errors`` of this project, plus numpy and onnxruntime:
never torch, rclpy or mujoco, so a robot computer installs little and the node starts fast
(tests/robot/test_layout.py enforces it). The ROS shells in ``mpo_ros/ros/`` call into it.
"""
