"""The emulator's time source: the wall clock by default, a hand-driven clock for tests.

Every status the emulator reports is a function of "now" (see `agent.emulator.jobs`), so the
clock is the one thing a test needs to control to walk a job through its lifecycle. Pass a
`ManualClock` to `EmulatorApp` (or `emulator_http_client`, `running_emulator`) and call
`advance` instead of sleeping: the job moves exactly as far as the test says, however loaded
the machine is.

Processes that share a state directory must share a time source too, so only the wall clock
(`SystemClock`) makes sense across processes; a `ManualClock` is for one process's tests.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where the emulator reads the time."""

    def now(self) -> float:
        """Return the current time in seconds since the epoch."""
        ...


class SystemClock:
    """The wall clock (`time.time`)."""

    def now(self) -> float:
        """Return `time.time()`."""
        return time.time()


class ManualClock:
    """A clock that moves when told to, for tests.

    Args:
        start: The initial time (default: the wall clock at construction, so timestamps in
            replies look current).
        ticking: Also move with the wall clock. Off, the clock stands still between
            `advance` calls (a test sees a phase for as long as it likes); on, `advance`
            skips time ahead while the wall clock keeps running, for a graph that waits
            for a job in real time (its `wait` node sleeps).
    """

    def __init__(self, start: float | None = None, *, ticking: bool = False) -> None:
        """Start at `start` (or now)."""
        self._now = time.time() if start is None else float(start)
        self._ticking = ticking
        self._wall = time.monotonic()
        # Server threads read while the test thread advances.
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the time the clock was set to, plus the wall time since if ticking."""
        with self._lock:
            if self._ticking:
                return self._now + (time.monotonic() - self._wall)
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward and return the new time.

        Raises:
            ValueError: `seconds` is negative (time never runs backwards for a job).
        """
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        with self._lock:
            self._now += seconds
            return self._now


SYSTEM_CLOCK = SystemClock()
