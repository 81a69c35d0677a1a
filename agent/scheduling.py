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

A booking is a run record in the server's own bookkeeping, which `langgraph dev` writes to disk
only every 10 s: a hard kill soon after a booking loses it, and the thread would wait forever.
So each booking is also written to the durable store first (`BOOKINGS_NAMESPACE`, key: the
thread id, value: `Booking`), and `agent.serving` re-books on server start every thread whose
booking has no queued run while its state is still in flight. A run told not to self-schedule
removes its thread's booking.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, TypedDict

from langgraph.config import get_config
from langgraph.runtime import get_runtime

from agent.context import Context
from agent.deadline import seconds_until_due
from agent.pause import now
from agent.state import State
from agent.statuses import TERMINAL_JOB_STATUSES
from agent.webhooks import safety_interval, webhook_secret

if TYPE_CHECKING:
    from langgraph.store.base import BaseStore

logger = logging.getLogger("batch_agent")

BOOKINGS_NAMESPACE = ("batch_agent_bookings",)
"""Store namespace of the bookings ledger: one item per self-scheduling thread, key = thread id."""


class Booking(TypedDict):
    """What a thread's next poll was booked with, so a lost booking can be made again."""

    assistant_id: str
    """The assistant that ran the thread (its run context defaults apply to the next run)."""
    context: dict[str, Any]
    """The run context passed on, without `webhook_url` (the thread remembers that itself, and
    a webhook URL may carry a token)."""
    due: float
    """When the booked poll runs (epoch seconds)."""


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
    if server is None:
        return {"next_check_at": None}
    thread_id = str(get_config().get("configurable", {}).get("thread_id", ""))
    store = runtime.store
    if not ctx.self_schedule:
        # A run that polls only when invoked: a server restart must not re-book the thread.
        if store is not None:
            await _forget_booking(store, thread_id)
        return {"next_check_at": None}
    delay = ctx.next_poll_interval(max(int(state.get("polls", 0)) - 1, 0))
    if _webhooks_configured(state):
        # The provider calls `agent.webhook_routes` when the job ends: polls are a safety net.
        delay = max(delay, safety_interval())
    due = seconds_until_due(state, ctx, now())
    if due is not None:
        # The deadline is met by the next run: it cancels and sends the rest (`agent.deadline`).
        delay = min(delay, max(1.0, due))
    context = dataclasses.asdict(ctx)
    try:
        if store is not None:
            # Before the run is created: a crash between the two leaves a booking to re-make.
            await record_booking(store, thread_id, server.assistant_id, context, delay)
        booked = await book_delayed_poll(thread_id, server.assistant_id, delay, context)
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


async def record_booking(
    store: BaseStore, thread_id: str, assistant_id: str, context: dict[str, Any], delay: float
) -> Booking:
    """Write (or overwrite) `thread_id`'s entry in the durable bookings ledger.

    Args:
        store: The server's store (durable: `agent.persistence.server_store`).
        thread_id: The thread whose next poll is being booked.
        assistant_id: The assistant running the thread.
        context: The run context the next poll runs with (`webhook_url` is left out).
        delay: Seconds until the booked poll.

    Returns:
        The booking as stored.
    """
    booking: Booking = {
        "assistant_id": assistant_id,
        "context": {k: v for k, v in context.items() if k != "webhook_url"},
        "due": time.time() + max(1, round(delay)),
    }
    await store.aput(BOOKINGS_NAMESPACE, thread_id, dict(booking), index=False)
    return booking


async def _forget_booking(store: BaseStore, thread_id: str) -> None:
    try:
        await store.adelete(BOOKINGS_NAMESPACE, thread_id)
    except Exception as exc:  # a stale booking only costs one no-op run after a restart
        logger.warning("could not clear the poll booking of thread %s: %s", thread_id, exc)


def _webhooks_configured(state: State) -> bool:
    """Tell whether every job in flight is of a provider whose webhook secret is set."""
    providers = {
        str(job.get("provider"))
        for job in state.get("jobs") or []
        if job.get("job_id") and job.get("status") not in TERMINAL_JOB_STATUSES
    }
    return bool(providers) and all(webhook_secret(p) is not None for p in providers)
