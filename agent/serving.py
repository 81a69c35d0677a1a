"""The app `langgraph.json` mounts next to the LangGraph Server API: re-books lost polls on start.

A served thread advances only through the delayed runs it books itself (`agent.scheduling`).
`langgraph dev` keeps its run records in memory and writes them to disk every 10 s, so a hard
kill within that window loses the latest booking, and the restarted server would leave the
thread `running` forever although its provider job finished. The durable bookings ledger
(`agent.scheduling.BOOKINGS_NAMESPACE`, in the server's store) remembers every booking; on
start, the lifespan of `app` walks it and, for each thread that has no queued run and still has
a job in flight, books the poll again (due when the lost one was due, at least 1 s from now),
with the context it was booked with. Entries of threads that have finished are removed.

When the served bridge is deployed (`graphs/bridge.py`), the lifespan also runs its passes every
second for the life of the server (`agent.batched.served.run_bridge`).

It runs after the server's own start-up, which re-queues runs a crash left `running`, so a run
that survived on disk is never doubled. It talks to the server through its own API in process
(`langgraph_sdk.get_client()` with no URL), like the booking itself: no address or key needed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

from agent.scheduling import BOOKINGS_NAMESPACE
from agent.statuses import TERMINAL_THREAD_STATUSES
from agent.webhook_routes import ROUTES as WEBHOOK_ROUTES

if TYPE_CHECKING:
    from langgraph_sdk.client import LangGraphClient
    from langgraph_sdk.schema import RunStatus

logger = logging.getLogger("batch_agent")

_PAGE = 100
_QUEUED: tuple[RunStatus, ...] = ("pending", "running")


def still_in_flight(values: dict[str, Any]) -> bool:
    """Return whether a thread's state is one its self-scheduled runs would poll again.

    Args:
        values: The thread's state values.

    Returns:
        False once the thread is finished (completed, failed, cancelled) or stopped on an error
        that needs a fix; True while a job is in flight or a passing outage awaits another try.
    """
    status = values.get("status")
    if status in TERMINAL_THREAD_STATUSES:
        return False
    if status == "error":
        return bool(values.get("retry_later"))
    return True


async def rebook_stranded_threads(
    client: LangGraphClient, now: Callable[[], float] = time.time
) -> list[str]:
    """Book the next poll of every booked thread that lost it; drop bookings of finished threads.

    Args:
        client: A client of the server (in process, inside the server).
        now: The clock (epoch seconds); injectable for tests.

    Returns:
        The ids of the threads a poll was booked for.
    """
    rebooked: list[str] = []
    for thread_id, booking in await _bookings(client):
        try:
            if await _rebook(client, thread_id, booking, now()):
                rebooked.append(thread_id)
        except Exception as exc:  # one thread's trouble must not strand the others
            logger.warning("could not re-book the next poll of thread %s: %s", thread_id, exc)
    return rebooked


async def _rebook(
    client: LangGraphClient, thread_id: str, booking: dict[str, Any], now: float
) -> bool:
    from langgraph_sdk.errors import NotFoundError

    try:
        queued = [
            run
            for status in _QUEUED
            for run in await client.runs.list(thread_id, status=status, limit=1)
        ]
        values = (await client.threads.get_state(thread_id))["values"]
    except NotFoundError:  # the crash lost the thread record too (its state is durable)
        queued, values = [], None
    if queued:
        return False  # a run survived the restart (or was re-queued): it polls
    # No values: the server cannot read the state (the crash lost the thread record, or the
    # part of it that names the thread's graph). Book anyway: on a finished thread it is a no-op.
    if isinstance(values, dict) and values and not still_in_flight(values):
        await client.store.delete_item(BOOKINGS_NAMESPACE, thread_id)
        return False
    await client.runs.create(
        thread_id,
        booking["assistant_id"],
        input={},
        context=booking.get("context") or None,
        after_seconds=max(1, round(float(booking["due"]) - now)),
        multitask_strategy="enqueue",
        if_not_exists="create",  # a thread record the crash lost is made again
    )
    return True


async def _bookings(client: LangGraphClient) -> list[tuple[str, dict[str, Any]]]:
    # Read every page before changing any: deleting while paging would skip items.
    found: list[tuple[str, dict[str, Any]]] = []
    while True:
        page = await client.store.search_items(BOOKINGS_NAMESPACE, limit=_PAGE, offset=len(found))
        found.extend((item["key"], item["value"]) for item in page["items"])
        if len(page["items"]) < _PAGE:
            return found


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    """Re-book lost polls once the server has started; run the served bridge if deployed."""
    import asyncio

    from langgraph_sdk import get_client

    from agent.batched.served import bridge_deployed, run_bridge

    try:
        rebooked = await rebook_stranded_threads(get_client())
    except Exception:  # never keep the server from starting; a client can still invoke a thread
        logger.exception("could not re-book the polls of in-flight threads")
    else:
        if rebooked:
            logger.warning(
                "re-booked the next poll of %d thread(s) whose booking was lost: %s",
                len(rebooked),
                ", ".join(rebooked),
            )
    # The bridge's records are all in the store: after a restart it goes on where it was.
    bridge = asyncio.create_task(run_bridge(get_client())) if bridge_deployed() else None
    try:
        yield
    finally:
        if bridge is not None:
            bridge.cancel()


app = Starlette(routes=WEBHOOK_ROUTES, lifespan=lifespan)
"""Named in `langgraph.json` (`http.app`): the start-up hook and the provider webhook routes
(`agent.webhook_routes`)."""
