"""rclpy nodes: thin shells that turn messages into arrays, call the ROS-free core, and back.

Only this package (and cli.py) imports rclpy, and only when a node is built, so `mpo-ros --help`
and the ROS-free tests never need it.

- `policy_node`: runs an exported ONNX policy on a robot (`mpo-ros serve`, `ros2 run mpo_ros policy_node`);
  its safety rules live in mpo_ros/robot/supervisor.py and its loop in mpo_ros/robot/rate.py.
- `sim_node`: a MuJoCo robot behind the topics a ros2_control robot offers (`mpo-ros sim-robot`).
- `demo_run`: starts both for a short scored end-to-end run (`make demo`).
- `messages` (message <-> array), `params` (one dataclass -> ROS parameters, CLI flags, YAML),
  `lifecycle` (init / spin / shutdown of one node), `processes` (nodes as child processes).
"""
