"""mpo_ros nodes as child processes on a private ROS domain (demo runs, tests, benchmarks).

Each child gets ROS_DOMAIN_ID and localhost-only discovery so that it hears only its siblings, logs to
a file, is stopped with SIGINT (its shutdown code runs: the sim node writes its summary) and killed
if it does not exit in time. Callers stop every process they start in a ``finally``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["NodeProcess", "free_domain_id", "ros_env"]


def free_domain_id(salt: int = 0) -> int:
    """A ROS_DOMAIN_ID in 1..101 derived from the pid, so parallel runs on one host do not mix."""
    return 1 + (os.getpid() + salt) % 101


def ros_env(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    return env


class NodeProcess:
    """`python -m mpo_ros.cli <command> <args>` in a child process, output to `log_path`.

    `program` replaces ``python -m mpo_ros.cli <command>`` for other scripts (benchmark helpers).
    """

    def __init__(
        self,
        command: str,
        args: list[str],
        log_path: Path,
        domain_id: int,
        cwd: Path | None = None,
        program: list[str] | None = None,
    ) -> None:
        self.log_path = Path(log_path)
        self._log = self.log_path.open("w")
        argv = [*program, *args] if program else [sys.executable, "-m", "mpo_ros.cli", command, *args]
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=ros_env(domain_id),
            cwd=cwd,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float) -> bool:
        """True once `text` appears in the log; False on timeout or if the process exited without it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                return text in self.log()
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        """SIGKILL, as if the node crashed (no shutdown code runs)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

    def stop(self, timeout: float = 8.0) -> int:
        """SIGINT and wait; SIGKILL if it has not exited after `timeout` s. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode
