"""The one training engine (torch): online, mixed and offline training through one loop.

``config`` (TrainConfig), ``loop`` (`mpo-ros train`), ``state`` (TrainingState, checkpoints), ``sources``
(in-process environment, datasets), ``actors`` (Ray actors), ``replay``, ``envs`` (EnvFactory), ``evaluate``
(`mpo-ros eval`, the one evaluator), ``export`` (`mpo-ros export`), ``metrics``, ``plots``.
"""
