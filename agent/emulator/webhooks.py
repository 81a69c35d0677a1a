"""The emulator's outgoing webhooks: signed `batch.*` events when an OpenAI or Gemini job ends.

Set ``BATCH_AGENT_EMULATOR_WEBHOOK_URL`` (a ``{provider}`` in it becomes ``openai`` or ``gemini``)
and ``BATCH_AGENT_EMULATOR_WEBHOOK_SECRET`` (``whsec_`` + base64), and every emulator app on that
state directory starts a daemon thread that watches the jobs: when one reaches a terminal state it
POSTs a Standard Webhooks signed event (headers ``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``), as the providers do:

- OpenAI: ``{"id", "object": "event", "created_at", "type": "batch.completed" | "batch.failed" |
  "batch.expired" | "batch.cancelled", "data": {"id": <batch id>}}``;
- Gemini: ``{"id", "created_at", "type": "batch.succeeded" | "batch.failed" | "batch.expired" |
  "batch.cancelled", "data": {"name": "batches/..."}}``.

Delivery is at least once: a non-2xx answer or a connection error is retried (up to
`ATTEMPTS` times, backing off). The ``webhook_duplicates=1`` fault knob sends every event twice
(same ``webhook-id``) and delivers each round's events in reverse order (out of order). A job is
marked ``_webhook_sent`` on its record under the store lock, so processes sharing the directory
send its event once. Jobs are read from the store, not over HTTP: the watcher never shows in the
access log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any

from agent.emulator.faults import current_faults

if TYPE_CHECKING:
    from agent.emulator.jobs import JobLifecycle

logger = logging.getLogger(__name__)

URL_ENV = "BATCH_AGENT_EMULATOR_WEBHOOK_URL"
SECRET_ENV = "BATCH_AGENT_EMULATOR_WEBHOOK_SECRET"
ATTEMPTS = 5
WATCH_INTERVAL = 0.25

EVENT_TYPES = {
    "openai": {
        "done": "batch.completed",
        "failed": "batch.failed",
        "expired": "batch.expired",
        "cancelled": "batch.cancelled",
    },
    "gemini": {
        "done": "batch.succeeded",
        "failed": "batch.failed",
        "expired": "batch.expired",
        "cancelled": "batch.cancelled",
    },
}


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Return the Standard Webhooks headers that sign `body`.

    Args:
        secret: ``whsec_`` + base64 key (the prefix is optional).
        webhook_id: The event's delivery id (the same for every redelivery).
        timestamp: Epoch seconds of the delivery attempt.
        body: The exact bytes sent.

    Returns:
        ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` and the content type.
    """
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{digest}",
        "content-type": "application/json",
    }


def event_body(provider: str, phase: str, job: dict[str, Any], created_at: int) -> bytes:
    """Return the JSON body of the event saying `job` ended in `phase`."""
    event_id = f"evt_{uuid.uuid4().hex}"
    kind = EVENT_TYPES[provider][phase]
    if provider == "openai":
        payload: dict[str, Any] = {
            "id": event_id,
            "object": "event",
            "created_at": created_at,
            "type": kind,
            "data": {"id": job["id"]},
        }
    else:
        payload = {
            "id": event_id,
            "created_at": created_at,
            "type": kind,
            "data": {"name": job.get("name") or f"batches/{job['id']}"},
        }
    return json.dumps(payload, separators=(",", ":")).encode()


def deliver(url: str, secret: str, body: bytes, webhook_id: str) -> bool:
    """POST one signed event, retrying until a 2xx answer or `ATTEMPTS` tries; return success."""
    for attempt in range(ATTEMPTS):
        headers = sign(secret, webhook_id, int(time.time()), body)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                if 200 <= answer.status < 300:
                    return True
        except (urllib.error.URLError, OSError) as exc:
            logger.debug("webhook delivery %s failed (try %d): %s", webhook_id, attempt + 1, exc)
        time.sleep(0.2 * 2**attempt)
    return False


class WebhookSender:
    """The daemon thread that watches one app's OpenAI and Gemini jobs and sends their events.

    Args:
        lifecycles: Provider (`openai`, `gemini`) -> that protocol's job lifecycle of the app.
        url: The URL template (``{provider}`` is replaced).
        secret: The ``whsec_`` signing secret.
    """

    def __init__(self, lifecycles: dict[str, JobLifecycle], url: str, secret: str) -> None:
        """Remember the lifecycles, the URL template and the secret; call `start` to run."""
        self.lifecycles = lifecycles
        self.url = url
        self.secret = secret
        self._thread = threading.Thread(target=self._run, daemon=True, name="emulator-webhooks")

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the watcher must outlive one bad job record
                logger.exception("emulator webhook watcher")
            time.sleep(WATCH_INTERVAL)

    def tick(self) -> int:
        """Send the events of the jobs that ended since the last tick; return how many."""
        events = [*self._ended("openai"), *self._ended("gemini")]
        try:
            duplicates = current_faults().webhook_duplicates
        except ValueError:
            duplicates = False
        if duplicates:
            events = [event for event in events for _ in range(2)][::-1]
        for provider, body, webhook_id in events:
            url = self.url.replace("{provider}", provider)
            if not deliver(url, self.secret, body, webhook_id):
                logger.warning("webhook %s was not accepted by %s", webhook_id, url)
        return len(events)

    def _ended(self, provider: str) -> list[tuple[str, bytes, str]]:
        lifecycle = self.lifecycles[provider]
        store = lifecycle.store
        now = lifecycle.now()
        found: list[tuple[str, bytes, str]] = []
        for job in store.list_jobs(lifecycle.provider):
            if job.get("_webhook_sent"):
                continue
            job = lifecycle.refresh(job, now)
            phase = lifecycle.phase(job, now)
            if not phase.terminal:
                continue
            with store.lock():
                fresh = store.get_job(lifecycle.provider, job["id"]) or job
                if fresh.get("_webhook_sent"):
                    continue
                fresh["_webhook_sent"] = True
                store.put_job(lifecycle.provider, fresh)
            body = event_body(provider, phase.name, fresh, int(now))
            found.append((provider, body, f"wh_{uuid.uuid4().hex}"))
        return found


def start_sender(lifecycles: dict[str, JobLifecycle]) -> WebhookSender | None:
    """Start a webhook sender for an app's OpenAI and Gemini jobs when the URL and secret are set.

    Args:
        lifecycles: Provider (`openai`, `gemini`) -> that protocol's job lifecycle.

    Returns:
        The running sender, or None when no URL or secret is configured.
    """
    url = os.environ.get(URL_ENV, "").strip()
    secret = os.environ.get(SECRET_ENV, "").strip()
    if not url or not secret:
        return None
    sender = WebhookSender(lifecycles, url, secret)
    sender.start()
    return sender
