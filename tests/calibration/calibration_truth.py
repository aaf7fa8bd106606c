"""The known truth of the calibration tests: how the "real" arm2 differs from its MJCF."""

# Factors on the hand-written joint damping, servo kp and joint armature of every joint.
PERTURBATION = {"damping": 1.6, "kp": 0.8, "armature": 2.0}
# Command latency of the real robot, in whole control periods.
LATENCY_STEPS = 1
