"""Test-only kill points of `map_graph`: SIGKILL the process the Nth time it reaches a point.

`BATCH_AGENT_TEST_KILL_AT=POINT:N` (never set in normal use; nothing happens without it) makes
a map kill its own process with SIGKILL the Nth time that process reaches POINT, so a crash
test lands a kill exactly where a random moment rarely falls:

- `invoke`: an item's thread is about to run (its first run, a resume, or a run on);
- `item_writes`: an item's stop has been checkpointed and its pending writes (the interrupt
  holding its calls, a node's error) are about to be: LangGraph saves the two one after the
  other when a run exits (`durability="exit"`);
- `pool`: a pool's batch has ended and its answers are not stored yet;
- `answers`: a round's answers are stored and no thread has been resumed with them;
- `output`: every round is done and the results are not returned yet.

This module is the only reader of the variable.
"""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

KILL_AT = "BATCH_AGENT_TEST_KILL_AT"
"""The environment variable: `POINT:N`."""
POINTS = frozenset({"invoke", "item_writes", "pool", "answers", "output"})
"""The points a map passes."""

# How many times this process has reached each point (a process is killed once, at most).
_REACHED: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    """Return the (point, N) the variable names, or None when it is unset.

    Raises:
        ValueError: The variable is set to something else than `POINT:N`, N >= 1.
    """
    setting = os.environ.get(KILL_AT, "").strip()
    if not setting:
        return None
    point, _, count = setting.partition(":")
    if point not in POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{KILL_AT} must be POINT:N with POINT one of {sorted(POINTS)}")
    return point, int(count)


def reach(point: str) -> None:
    """Count a pass of `point`; SIGKILL this process if it is the one the variable names."""
    target = _target()
    if target is None or target[0] != point:
        return
    _REACHED[point] = _REACHED.get(point, 0) + 1
    if _REACHED[point] == target[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def watched(checkpointer: Any) -> Any:
    """Return the items' checkpointer, its `put_writes` passing `item_writes` first if armed.

    Only when the variable names `item_writes`: otherwise the checkpointer is returned as is.
    """
    target = _target()
    if target is None or target[0] != "item_writes":
        return checkpointer
    put_writes = checkpointer.put_writes

    # `wraps` keeps the signature LangGraph inspects (whether it takes a task path).
    @functools.wraps(put_writes)
    def put_writes_after_a_kill_point(*args: Any, **kwargs: Any) -> Any:
        reach("item_writes")
        return put_writes(*args, **kwargs)

    checkpointer.put_writes = put_writes_after_a_kill_point
    return checkpointer
