"""Self-scheduled polls: on a LangGraph server, a run that leaves a job in flight books the next one.

A served thread otherwise only advances when a client invokes it again. Three ways were possible:

- sleep inside the run (`max_wait_seconds`): holds a background worker for hours, and `langgraph
  dev` has exactly one;
- a thread cron: one-minute granularity, and it must be found and deleted when the batch ends;
- a delayed run (`runs.create(..., after_seconds=N)`) booked by the run itself: follows the backoff
  schedule exactly, holds no worker while waiting, and leaves nothing behind, since the run that
  collects the results simply books no successor.

We use the delayed run. The booking goes through the server's own API in process
(`langgraph_sdk.get_client()` with no URL), so it needs no address or key, and it is skipped when
a run is already pending on the thread (a client's run, or an earlier booking), so a thread never
accumulates scheduled runs. Under the standalone CLI there is no server (`runtime.server_info` is
None) and this is a no-op: `batch-agent run --wait` polls instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from langgraph.config import get_config
from langgraph.runtime import get_runtime

from agent.context import Context
from agent.state import State

logger = logging.getLogger("batch_agent")


def schedule_noop(state: State) -> dict[str, Any]:
    """Standalone (sync) runs: nothing to book; the CLI's `--wait` polls instead."""
    return {"next_check_at": None}


async def schedule_next_poll(state: State) -> dict[str, Any]:
    """Book the thread's next poll as a delayed run on the server that runs this graph.

    Returns:
        `next_check_at` (epoch seconds) when a run is booked or already pending, else None.
    """
    runtime = get_runtime(Context)
    ctx = runtime.context
    server = runtime.server_info
    # The routers come here only while a job is in flight.
    if server is None or not ctx.self_schedule:
        return {"next_check_at": None}
    thread_id = str(get_config().get("configurable", {}).get("thread_id", ""))
    delay = ctx.next_poll_interval(max(int(state.get("polls", 0)) - 1, 0))
    try:
        booked = await book_delayed_poll(
            thread_id, server.assistant_id, delay, dataclasses.asdict(ctx)
        )
    except Exception as exc:  # a failed booking must not fail the batch: a client can re-invoke
        logger.warning("could not schedule the next poll of thread %s: %s", thread_id, exc)
        return {"next_check_at": None}
    return {"next_check_at": booked}


async def book_delayed_poll(
    thread_id: str, assistant_id: str, delay: float, context: dict[str, Any]
) -> float:
    """Create a delayed run that polls `thread_id`, unless one is already pending.

    Args:
        thread_id: The thread to advance.
        assistant_id: The assistant running this graph (its run context defaults apply).
        delay: Seconds until the run starts.
        context: The run context to pass on, so the next run polls with the same settings.

    Returns:
        When the next check is due (epoch seconds).
    """
    from langgraph_sdk import get_client

    client = get_client()  # no URL: the server's own API, in process
    pending = await client.runs.list(thread_id, status="pending", limit=1)
    if pending:
        return time.time()  # a run is already queued on this thread; it will poll
    seconds = max(1, round(delay))
    await client.runs.create(
        thread_id,
        assistant_id,
        input={},
        context=context,
        after_seconds=seconds,
        multitask_strategy="enqueue",
    )
    return time.time() + seconds
