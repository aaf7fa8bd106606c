"""Start, spin and tear down one mpo_ros node: the same sequence for every node and entry point.

``rclpy.init()`` with ``try/finally: rclpy.shutdown()`` (not ``with rclpy.init()``, which only Rolling
has) and a SingleThreadedExecutor (the EventsExecutor hangs here).

SIGINT and SIGTERM are handled here, not by rclpy: rclpy's handlers shut the context down at once,
while a control loop may be publishing or an executor building a wait set, and that race ended about
one stop in twenty in an ``RCLError`` traceback and exit status 1 ("publisher's context is
invalid", "failed to initialize wait set"). Here a signal only asks the node to stop; the spin
returns within one executor wait, the node's ``finish()`` stops its loop and closes what it writes
(the sim node's rosbag2 recording), and only then are the node and the context destroyed. A clean
stop always exits 0. A second signal while stopping raises KeyboardInterrupt, as usual.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from mpo_ros.errors import MpoRosError

__all__ = ["run_node"]


def run_node(
    make_node: Callable[..., Any],
    name: str,
    parameter_overrides: list[Any] | None = None,
    ros_args: list[str] | None = None,
    config_class: type | None = None,
) -> int:
    """Build the node with `make_node(parameter_overrides=...)`, `start()`, spin until a signal, `finish()`.

    `config_class`: the node's parameter dataclass; the ``--params-file`` files and ``-p`` values in
    `ros_args` are checked against it before rclpy starts. The node's `spin(executor)` is used when it
    has one (it must return after `request_stop()`), else the executor is spun here.

    Returns 0 after a normal shutdown and 2 when the node refused its configuration or refused to run
    (the error is logged with its fix), or the node's own ``exit_status``.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    log = logging.getLogger(name)
    if config_class is not None and ros_args:
        from mpo_ros.ros.params import check_ros_arguments

        try:
            check_ros_arguments(config_class, ros_args, name)
        except MpoRosError as exc:
            log.error("%s", exc)
            return 2
    stop = threading.Event()
    node: Any = None

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if node is not None and hasattr(node, "request_stop"):
            node.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    executor = None
    try:
        try:
            node = make_node(parameter_overrides=parameter_overrides or [])
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            node.start()
        except MpoRosError as exc:
            log.error("%s", exc)
            return 2
        if stop.is_set() and hasattr(node, "request_stop"):
            node.request_stop()  # a signal came while the node was being built
        spin = getattr(node, "spin", None)
        if spin is not None:
            spin(executor)
        else:
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.05)
        return int(getattr(node, "exit_status", 0))
    finally:
        if node is not None:
            node.finish()
            if executor is not None:
                executor.remove_node(node)
                executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
