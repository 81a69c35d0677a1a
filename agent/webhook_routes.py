"""The server routes that receive provider webhooks and start the thread's collect run at once.

`POST /batch-agent/webhooks/openai` and `POST /batch-agent/webhooks/gemini`, mounted in
`agent.serving.app` (the `http.app` of `langgraph.json`). Each call is answered:

- 200: handled (a run was started on the job's thread), a duplicate (`webhook-id` seen), or
  an event that is not about a batch (nothing to do);
- 400: a body that is not an event; 401: a bad signature or a timestamp outside the tolerance;
- 404: a job no thread of this server holds; 503: no secret configured for that provider.

Nothing changes on a 4xx or 503. A `webhook-id` is remembered (`SEEN_NAMESPACE` in the server's
store) only once the run was started, so a delivery that failed half-way is redone by the
provider's retry. The run goes through the server's own API in process (`langgraph_sdk.get_client()`
with no URL), with the assistant and context of the thread's poll booking
(`agent.scheduling.BOOKINGS_NAMESPACE`), and `multitask_strategy="enqueue"`: a run already
going on the thread finishes first, and the new one then collects (a run on a thread that is
already finished does nothing).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.bulk import JOBS_INDEX
from agent.scheduling import BOOKINGS_NAMESPACE
from agent.webhooks import WebhookError, verify_event, webhook_secret

if TYPE_CHECKING:
    from langgraph_sdk.client import LangGraphClient

logger = logging.getLogger("batch_agent")

SEEN_NAMESPACE = ("batch_agent_webhooks", "seen")
"""Store namespace of the `webhook-id`s already handled (value: provider, job id, when)."""

DEFAULT_ASSISTANT = "batch"


async def _item(client: LangGraphClient, namespace: tuple[str, ...], key: str) -> Any:
    from langgraph_sdk.errors import NotFoundError

    try:
        item = await client.store.get_item(list(namespace), key)
    except NotFoundError:
        return None
    return item["value"] if item else None


async def handle_webhook(
    provider: str, body: bytes, headers: dict[str, str], client: LangGraphClient
) -> tuple[int, dict[str, Any]]:
    """Verify one delivery and start the job's thread; return the HTTP status and body.

    Args:
        provider: `openai` or `gemini`.
        body: The raw request body.
        headers: The request headers.
        client: A client of this server (in process).

    Returns:
        The status code and a small JSON body (never the secret).
    """
    secret = webhook_secret(provider)
    if secret is None:
        return 503, {"error": f"no webhook secret is configured for {provider}"}
    try:
        event = verify_event(provider, body, headers, secret)
    except WebhookError as exc:
        return exc.status, {"error": str(exc)}
    if not event.webhook_id:
        return 400, {"error": "no webhook-id header"}
    if await _item(client, SEEN_NAMESPACE, event.webhook_id) is not None:
        return 200, {"status": "duplicate"}
    if not event.is_batch_event:
        return 200, {"status": "ignored", "type": event.type}
    assert event.job_id is not None
    claim = await _item(client, (JOBS_INDEX,), event.job_id)
    if not isinstance(claim, dict) or not claim.get("thread_id"):
        return 404, {"error": f"no thread holds job {event.job_id}"}
    thread_id = str(claim["thread_id"])
    booking = await _item(client, BOOKINGS_NAMESPACE, thread_id) or {}
    await client.runs.create(
        thread_id,
        booking.get("assistant_id") or DEFAULT_ASSISTANT,
        input={},
        context=booking.get("context") or None,
        multitask_strategy="enqueue",
    )
    await client.store.put_item(
        list(SEEN_NAMESPACE),
        event.webhook_id,
        {"provider": provider, "job_id": event.job_id, "at": time.time()},
        index=False,
    )
    logger.info(
        "webhook %s for job %s: started a run on thread %s", event.type, event.job_id, thread_id
    )
    return 200, {"status": "started", "thread_id": thread_id}


def _endpoint(provider: str) -> Any:
    async def receive(request: Request) -> JSONResponse:
        from langgraph_sdk import get_client

        body = await request.body()
        status, answer = await handle_webhook(provider, body, dict(request.headers), get_client())
        return JSONResponse(answer, status_code=status)

    return receive


ROUTES = [
    Route(f"/batch-agent/webhooks/{provider}", _endpoint(provider), methods=["POST"])
    for provider in ("openai", "gemini")
]
"""The webhook routes, for `agent.serving.app`."""
