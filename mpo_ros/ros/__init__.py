"""rclpy nodes: thin shells that turn messages into arrays, call the ROS-free core, and back.

Only this package (and cli.py, lazily) imports rclpy, so `mpo-ros --help`, `mpo-ros train` and the
ROS-free tests never need it. The ROS-free core is mpo_ros/robot/.

- `policy_node`: a lifecycle node that runs an exported ONNX policy on a robot (`mpo-ros serve`, `ros2 run mpo_ros policy_node`);
  its control step is mpo_ros/robot/controller.py, its safety rules mpo_ros/robot/supervisor.py, its loop
  mpo_ros/robot/rate.py.
- `sim_node`: a MuJoCo robot behind the topics a ros2_control robot offers (`mpo-ros sim-robot`).
- `demo_run`: starts both for a short scored end-to-end run (`make demo`).
- `messages` (message <-> array), `params` (one dataclass -> ROS parameters, CLI flags, YAML),
  `runner` (init / spin / signals / shutdown of one node), `processes` (nodes as child processes).
"""
