"""Rate-limited fault reports: the first occurrence at once, then one summary per period.

A fault that repeats every control tick (NaN in every other /joint_states message) must neither
flood the log (100 lines/s hide everything else) nor vanish after its first line (the operator
cannot tell a one-off from a fault that is still going on). So each fault key reports its first
occurrence immediately and afterwards, while it keeps occurring, one line per ``period_s`` that says
how many more there were: ``"<latest message> (57 more in the last 5.0 s)"``. A key that has been
quiet for a whole period starts over with an immediate line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FaultLog"]


@dataclass
class _Entry:
    level: str
    message: str
    window_start_ns: int
    suppressed: int = 0


class FaultLog:
    """Collects (level, message) lines for the node to log; not thread-safe (the caller locks)."""

    def __init__(self, period_s: float = 5.0, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.period_s = float(period_s)
        self._clock_ns = clock_ns
        self._entries: dict[str, _Entry] = {}
        self._lines: list[tuple[str, str]] = []

    def event(self, level: str, message: str) -> None:
        """A transition (recovered, enabled, ...): always logged, never rate-limited."""
        self._lines.append((level, message))

    def report(self, key: str, message: str, level: str = "error") -> None:
        """One occurrence of fault `key`: logged now if it is the first in a period, else counted."""
        now = self._clock_ns()
        entry = self._entries.get(key)
        period_ns = self.period_s * 1e9
        if entry is None or (entry.suppressed == 0 and now - entry.window_start_ns >= period_ns):
            self._entries[key] = _Entry(level, message, now)
            self._lines.append((level, message))
            return
        entry.suppressed += 1
        entry.message, entry.level = message, level
        if now - entry.window_start_ns >= period_ns:
            self._summarise(entry, now)

    def pop(self) -> list[tuple[str, str]]:
        """Lines since the last call, with summaries of faults whose period has run out."""
        now = self._clock_ns()
        for entry in self._entries.values():
            if entry.suppressed and now - entry.window_start_ns >= self.period_s * 1e9:
                self._summarise(entry, now)
        lines, self._lines = self._lines, []
        return lines

    def _summarise(self, entry: _Entry, now: int) -> None:
        seconds = (now - entry.window_start_ns) / 1e9
        self._lines.append(
            (entry.level, f"{entry.message} ({entry.suppressed} more in the last {seconds:.1f} s)")
        )
        entry.window_start_ns = now
        entry.suppressed = 0
