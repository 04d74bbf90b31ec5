"""Log lines that outsiders can cause, bounded: at most a few per key and minute, the rest counted.

A refused callback is logged, and whoever holds (or guesses) a callback URL can send thousands a
second; each line would cost more than the refusal itself and drown every other line. The first
lines of a key in a window are written; the rest are only counted, and the key's first line of a later
window says how many were left out.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable

REFUSAL_LINES_PER_MINUTE = 5
WINDOW = 60.0
KEYS = 10_000  # keys remembered at once (jobs × codes); the oldest are forgotten first


@dataclasses.dataclass
class _Window:
    started: float
    written: int = 0
    suppressed: int = 0


class LogLimiter:
    """Per key, at most `lines` lines per `window` seconds."""

    def __init__(
        self,
        lines: int = REFUSAL_LINES_PER_MINUTE,
        window: float = WINDOW,
        *,
        keys: int = KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lines = lines
        self.window = window
        self.keys = keys
        self.clock = clock
        self._windows: dict[Hashable, _Window] = {}

    def admit(self, key: Hashable) -> int | None:
        """None: leave this line out. Otherwise write it, saying how many lines of this key were left
        out in its previous window (usually 0)."""
        now = self.clock()
        current = self._windows.get(key)
        left_out = 0
        if current is None or now - current.started >= self.window:
            left_out = current.suppressed if current is not None else 0
            if current is None and len(self._windows) >= self.keys:
                self._forget(now)
            current = self._windows[key] = _Window(now)
        if current.written >= self.lines:
            current.suppressed += 1
            return None
        current.written += 1
        return left_out

    def last_before_quiet(self, key: Hashable) -> bool:
        """Was the line just admitted the last this key gets in its window?"""
        current = self._windows.get(key)
        return current is not None and current.written == self.lines

    def _forget(self, now: float) -> None:
        """Room for a new key: drop the windows that are over, else the oldest one."""
        over = [key for key, window in self._windows.items() if now - window.started >= self.window]
        for key in over:
            del self._windows[key]
        if len(self._windows) >= self.keys:
            del self._windows[next(iter(self._windows))]


def note(left_out: int, limiter: LogLimiter, key: Hashable) -> str:
    """What a written line adds: how many like it were left out before, or that the next will be."""
    parts = []
    if left_out:
        parts.append(f"{left_out} more like it in the previous {limiter.window:g} s were not logged")
    if limiter.last_before_quiet(key):
        parts.append(f"more like it are logged at most {limiter.lines} per {limiter.window:g} s")
    return f" ({'; '.join(parts)})" if parts else ""
