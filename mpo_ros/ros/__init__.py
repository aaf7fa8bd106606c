"""rclpy nodes: thin shells that turn messages into arrays, call the ROS-free core, and back.

Only this package (and cli.py) imports rclpy. `policy_node` runs an exported ONNX policy on a robot;
`sim_node` puts a MuJoCo robot behind the same topics a ros2_control robot offers; `demo_run` starts
both for a short end-to-end run.
"""
