"""Start, spin and tear down one mpo_ros node: the same sequence for every node and entry point.

``rclpy.init()`` with ``try/finally: rclpy.shutdown()`` (not ``with rclpy.init()``, which only Rolling
has), a SingleThreadedExecutor (the EventsExecutor hangs here), SIGINT/SIGTERM end the spin through
rclpy's own signal handlers, and the node's ``finish()`` runs whatever ended it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from mpo_ros.errors import MpoRosError

__all__ = ["run_node"]


def run_node(
    make_node: Callable[..., Any],
    name: str,
    parameter_overrides: list[Any] | None = None,
    ros_args: list[str] | None = None,
) -> int:
    """Build the node with `make_node(parameter_overrides=...)`, `start()`, spin, `finish()`.

    The node's `spin(executor)` is used when it has one, else `executor.spin()`.

    Returns 0 after a normal shutdown and 2 when the node refused its configuration (the error is
    logged with its fix; nothing was published).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=ros_args)
    node = None
    try:
        try:
            node = make_node(parameter_overrides=parameter_overrides or [])
        except MpoRosError as exc:
            logging.getLogger(name).error("%s", exc)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        node.start()
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            # A node may drive the executor itself (the policy node's single-thread loop).
            spin = getattr(node, "spin", None)
            spin(executor) if spin is not None else executor.spin()
        return 0
    finally:
        if node is not None:
            node.finish()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
