"""The robot contract: how one policy talks to one robot (numpy + yaml only, imports nothing of ours
but :mod:`mpo_ros.errors`).

``spec`` (RobotSpec / TaskSpec), ``observation`` (THE observation and action mapping), ``tasks`` (reward,
success, goals) and ``policy_file`` (the contract inside ONNX metadata).
"""
