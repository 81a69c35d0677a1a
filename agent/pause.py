"""How the graph pauses and reads the time: the wall clock by default, swappable for a test's clock.

The `wait` node sleeps between checks within a run's wait budget (`max_wait_seconds`). A test that
runs the graph against an in-process emulator on a `ManualClock` swaps the pause for one that
advances that clock (`pause_with`), so a job of 4 s ends after the graph "waited" 4 s of virtual
time, at no wall cost, and the budget arithmetic (`waited_seconds`) is exactly what a real run
does. `now` is the matching time source (the deadline of `agent.deadline` is read from it), so a
thread that waited 2 virtual hours sees its 2-hour deadline pass. The pause lives here, not in `Context`: Studio shows every `Context` field as a setting,
and a callable is none; and the graph stays ignorant of which clock (or emulator) it runs on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_swapped: Callable[[float], object] | None = None
_swapped_now: Callable[[], float] | None = None


def pause(seconds: float) -> None:
    """Wait `seconds`: `time.sleep`, or the pause `pause_with` put in place.

    Both are looked up at call time, so a swap applies to graphs compiled before it.
    """
    (_swapped or time.sleep)(seconds)


def now() -> float:
    """Return the current time (epoch seconds): `time.time()`, or the clock `pause_with` set."""
    return (_swapped_now or time.time)()


@contextmanager
def pause_with(
    wait: Callable[[float], object], now: Callable[[], float] | None = None
) -> Iterator[None]:
    """Make `pause` call `wait` instead of sleeping, for this process, until the block ends.

    Args:
        wait: Called with each pause's seconds, e.g. `ManualClock.advance`.
        now: The clock those pauses move, e.g. `ManualClock.now` (None: the wall clock), read
            by `agent.pause.now`.
    """
    global _swapped, _swapped_now
    previous, _swapped = _swapped, wait
    previous_now, _swapped_now = _swapped_now, now
    try:
        yield
    finally:
        _swapped = previous
        _swapped_now = previous_now
