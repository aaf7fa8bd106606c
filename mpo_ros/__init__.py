"""mpo_ros: sim-to-real MPO for ROS 2 robots (train in MuJoCo / from rosbag2, export ONNX, deploy)."""

__version__ = "0.1.0"
