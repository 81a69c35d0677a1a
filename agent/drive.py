"""The drive loop: invoke a thread until it is done, with growing waits between checks.

One loop for every client of the graph: the CLI's `--wait` and `cancel` (local, and on a served
graph through `RemoteBatch.check`) and `run_batch`. Each passes its own `check` (one run of the thread, or a
read of its state) and pause schedule (`Context.next_poll_interval`); the loop owns only the
order of things (report, pause, check) and when to stop. `sleep` is injectable so a test (or
the polling simulation in `bench/run.py`) advances a fake clock instead of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agent.statuses import TERMINAL_THREAD_STATUSES

Values = dict[str, Any]


def is_done(values: Values) -> bool:
    """Tell whether checking the thread again is pointless: terminal, or stopped on an error.

    A thread in status `error` waits for its user (a key, a quota): polling it again would
    repeat the same failing provider call, so the caller reports it instead.
    """
    status = values.get("status")
    return status in TERMINAL_THREAD_STATUSES or status == "error"


def drive_until_done(
    check: Callable[[], Values],
    values: Values,
    pause_after: Callable[[int], float],
    *,
    on_wait: Callable[[Values, float | None], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Values:
    """Check the thread with growing pauses until it is done (see `is_done`).

    Args:
        check: One check of the thread (a run of the graph, or a read of its state); returns
            the thread's state values afterwards.
        values: The thread's state values now (after the run that submitted or resumed it).
        pause_after: The pause (seconds) after `n` checks, e.g. `Context.next_poll_interval`.
        on_wait: Called with the values and the coming pause before each pause, and once with
            the final values and None.
        sleep: Waits the pause (default `time.sleep`, looked up at call time so a patched
            module clock applies).

    Returns:
        The thread's values once terminal, or as soon as a check left it in status `error`.
    """
    wait = sleep if sleep is not None else time.sleep
    checks = 0
    while not is_done(values):
        pause = pause_after(checks)
        if on_wait is not None:
            on_wait(values, pause)
        wait(pause)
        checks += 1
        values = check()
    if on_wait is not None:
        on_wait(values, None)
    return values
