"""Incoming provider webhooks: verify a signed `batch.*` event and say which job it is about.

OpenAI and Gemini can call an HTTPS endpoint when a batch ends. Both sign it the Standard
Webhooks way (headers `webhook-id`, `webhook-timestamp`, `webhook-signature`; HMAC-SHA256 over
`{id}.{timestamp}.{body}` with a `whsec_` base64 secret; 300 s tolerance), so one verifier serves
both: the openai SDK's own `webhooks.verify_signature` (pure Python, no network). OpenAI's event
is parsed with the SDK's `webhooks.unwrap` too.

The secrets come from the environment only (`SECRET_ENVS`) and are never logged or stored. This
module only verifies and parses; `agent.webhook_routes` answers the HTTP calls and starts the
thread's collect run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPENAI_SECRET_ENV = "BATCH_AGENT_OPENAI_WEBHOOK_SECRET"
GEMINI_SECRET_ENV = "BATCH_AGENT_GEMINI_WEBHOOK_SECRET"
SECRET_ENVS = {"openai": OPENAI_SECRET_ENV, "gemini": GEMINI_SECRET_ENV}
"""Provider -> the environment variable holding its webhook signing secret (`whsec_...`)."""

SAFETY_INTERVAL_ENV = "BATCH_AGENT_WEBHOOK_SAFETY_INTERVAL"
DEFAULT_SAFETY_INTERVAL = 3600.0
"""Seconds between self-scheduled polls of a job whose provider has a webhook secret set."""

TOLERANCE_SECONDS = 300
"""How old (or how far in the future) a signed timestamp may be: the Standard Webhooks default."""

BATCH_EVENTS = {
    "openai": {"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"},
    "gemini": {"batch.succeeded", "batch.failed", "batch.expired", "batch.cancelled"},
}


class WebhookError(Exception):
    """An event that is refused; `status` is the HTTP status the route answers."""

    status = 400


class BadPayloadError(WebhookError):
    """The body is not an event of the expected shape (400)."""

    status = 400


class BadSignatureError(WebhookError):
    """The signature does not match, or the timestamp is outside the tolerance (401)."""

    status = 401


@dataclass(frozen=True)
class WebhookEvent:
    """A verified event.

    Attributes:
        provider: `openai` or `gemini`.
        webhook_id: The `webhook-id` header: the same for every redelivery of one event.
        type: The event type, e.g. `batch.completed`.
        job_id: The provider's job id (OpenAI `batch_...`, Gemini `batches/...`), or None for
            an event that is not about a batch.
    """

    provider: str
    webhook_id: str
    type: str
    job_id: str | None

    @property
    def is_batch_event(self) -> bool:
        """Return whether the event says a batch ended."""
        return self.job_id is not None and self.type in BATCH_EVENTS.get(self.provider, set())


def webhook_secret(provider: str) -> str | None:
    """Return the provider's webhook secret from the environment (None when unset or blank)."""
    name = SECRET_ENVS.get(provider)
    value = os.environ.get(name, "").strip() if name else ""
    return value or None


def safety_interval() -> float:
    """Return the poll interval used while webhooks are configured (`SAFETY_INTERVAL_ENV`)."""
    try:
        return max(1.0, float(os.environ.get(SAFETY_INTERVAL_ENV) or DEFAULT_SAFETY_INTERVAL))
    except ValueError:
        return DEFAULT_SAFETY_INTERVAL


def verify_event(
    provider: str, body: bytes, headers: Mapping[str, str], secret: str
) -> WebhookEvent:
    """Verify a signed event and return what it is about.

    Args:
        provider: `openai` or `gemini`.
        body: The raw request body (the signature covers these exact bytes).
        headers: The request headers (case-insensitive mapping or lower-case keys).
        secret: The provider's `whsec_...` secret.

    Returns:
        The event.

    Raises:
        BadSignatureError: A missing or wrong signature, or a timestamp outside the tolerance.
        BadPayloadError: A body that is not a JSON event.
    """
    import openai

    # The client is only a holder for the webhook helpers: no request is ever sent.
    hooks = openai.OpenAI(api_key="webhook-verification-only").webhooks
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        hooks.verify_signature(body, lowered, secret=secret, tolerance=TOLERANCE_SECONDS)
    except openai.InvalidWebhookSignatureError as exc:
        raise BadSignatureError(str(exc)) from None
    except ValueError as exc:  # a missing header, or a secret that is not base64
        raise BadSignatureError(str(exc)) from None
    try:
        payload: Any = json.loads(body)
    except ValueError:
        raise BadPayloadError("the body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise BadPayloadError("the body is not an event (no 'type')")
    webhook_id = lowered.get("webhook-id", "")
    if provider == "openai":
        # Verified above; unwrap parses it into the SDK's typed event (it verifies again).
        event: Any = hooks.unwrap(body, lowered, secret=secret)
        data = getattr(event, "data", None)
        job_id = getattr(data, "id", None)
        return WebhookEvent(provider, webhook_id, str(event.type), _text(job_id))
    data = payload.get("data")
    job_id = None
    if isinstance(data, dict):
        job_id = _text(data.get("name")) or _text(data.get("id"))
    return WebhookEvent(provider, webhook_id, str(payload["type"]), job_id)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
