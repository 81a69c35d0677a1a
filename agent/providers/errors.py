"""Classify provider failures: transient (retry) or permanent (stop and tell the user).

The SDKs already retry 429/5xx/timeouts a few times with backoff; what still escapes is
translated here so nodes can apply one rule: `TransientProviderError` is retried by the node's
`RetryPolicy`, `ProviderError` ends the run with a clear status and message in state, and the
thread can be resumed once the cause (a key, a quota, a model name) is fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx2

from agent.secrets import redact

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


class ProviderError(RuntimeError):
    """A provider call failed in a way the user must act on (the message never holds a key)."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        """Store a redacted message, the HTTP status and the server's retry hint, when given."""
        super().__init__(redact(message))
        self.status_code = status_code
        self.retry_after = retry_after


class TransientProviderError(ProviderError):
    """A provider call failed in a way that may pass: rate limit, server error, network."""


class QuotaExceededError(ProviderError):
    """The provider refused a job for a cap on what may be in flight; nothing was created.

    Mistral's pending requests per workspace, Gemini's concurrent jobs or file storage: the same
    create succeeds once earlier jobs finish (or their files are deleted). The submitting node
    keeps the intent, lowers the thread's learned budget (`agent.quotas`) and waits.
    `limit` names the cap ('requests', 'jobs', 'bytes', 'tokens').
    """

    def __init__(self, message: str, *, limit: str, status_code: int | None = None) -> None:
        """Store the redacted message and which cap refused the job."""
        super().__init__(message, status_code=status_code)
        self.limit = limit


# Reads a provider's HTTP error: the cap it names ('requests', 'jobs', 'bytes', 'tokens') when
# it is a refusal for a cap on what is in flight (`QuotaExceededError`), else None.
CapReader = Callable[[BaseException], str | None]


@contextmanager
def provider_call(provider: str, action: str, cap: CapReader | None = None) -> Iterator[None]:
    """Translate any SDK or transport exception raised inside into our error kinds.

    Args:
        provider: Provider name for the message ('openai', 'mistral').
        action: What was being done ('upload the input file', 'check job batch_1', ...).
        cap: For a create or an upload: tells the provider's refusal for a cap on what is in
            flight (raised as `QuotaExceededError`) from its other errors.
    """
    try:
        yield
    except ProviderError:
        raise
    except Exception as exc:  # the SDKs raise many types; classify by status code and transport
        raise classify(exc, provider, action, cap) from None


def classify(
    exc: BaseException, provider: str, action: str, cap: CapReader | None = None
) -> ProviderError:
    """Return the `ProviderError` (transient, permanent or a cap refusal) that describes `exc`.

    A cap refusal is usually a 429, like a passing rate limit; it is not transient, though: the
    same call keeps failing until earlier jobs end, so it is not resent (`send_once` raises it at
    once) but handed to the planner, which waits for the jobs in flight.
    """
    status = _status_code(exc)
    detail = _detail(exc)
    if status is not None:
        message = f"{provider}: could not {action}: HTTP {status}: {detail}"
        limit = cap(exc) if cap is not None and status < 500 else None
        if limit is not None:
            return QuotaExceededError(message, limit=limit, status_code=status)
        kind = TransientProviderError if status in TRANSIENT_STATUS else ProviderError
        return kind(message, status_code=status, retry_after=_retry_after(exc))
    if isinstance(
        exc, httpx2.TransportError | TimeoutError | ConnectionError
    ) or _is_sdk_connection_error(exc):
        return TransientProviderError(f"{provider}: could not {action}: network error: {detail}")
    return ProviderError(f"{provider}: could not {action}: {type(exc).__name__}: {detail}")


def _status_code(exc: BaseException) -> int | None:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None) or getattr(exc, "raw_response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _retry_after(exc: BaseException) -> float | None:
    """Return the server's retry hint in seconds (`retry-after-ms`, `retry-after`), if sane."""
    response = getattr(exc, "response", None) or getattr(exc, "raw_response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            hinted = float(headers.get(header, "")) * scale
        except (TypeError, ValueError):
            continue
        if 0 <= hinted <= 60:
            return hinted
    return None


def _is_sdk_connection_error(exc: BaseException) -> bool:
    # openai.APIConnectionError / APITimeoutError carry no status code.
    return type(exc).__name__ in {
        "APIConnectionError",
        "APITimeoutError",
        "ConnectError",
        "ReadTimeout",
    }


def _detail(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # Keep the one-line shape the CLI promises.
    text = " ".join(text.split())
    return text[:500]
