"""real2sim: fit the simulator to the robot's own logs with mujoco.sysid.

`signals` makes excitation (the ROS node that plays it is mpo_ros/ros/excite_node.py), `logs` reads
recordings into continuous segments and refuses logs that cannot identify a parameter, `fit` runs
the sysid problem, `outputs` writes the calibrated robot, parameters, profile and report, and
`command` is `mpo-ros calibrate`. `record` and `robots` make logs of a robot with known parameters.
"""
