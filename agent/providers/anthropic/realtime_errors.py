"""The exception `ChatAnthropic.invoke()` raises for an HTTP error, for a failed batched call.

The Anthropic SDK turns an error response into its status's class (`make_status_error`: 400
`BadRequestError`, 429 `RateLimitError`, 529 `OverloadedError`, 5xx `InternalServerError`, ...),
the body `{"type": "error", "error": {"type", "message"}}`; langchain-anthropic then re-raises
it as its own class of both that and LangChain's (`AnthropicRateLimitError`, ...). Both steps
are replayed here on a synthetic response. A batch result's error carries the same `type`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import anthropic
import httpx2
from anthropic._error_classes import make_status_error
from langchain_anthropic.chat_models import (
    _handle_anthropic_api_error,
    _handle_anthropic_bad_request,
)

from agent.providers.realtime_errors import reraised

# The endpoint a realtime call posts to (the synthetic response's request).
MESSAGES_URL = "https://api.anthropic.com/v1/messages"
# Anthropic's error types (a result's code) and the status each comes with; a request of a
# batch that expired or was canceled before it ran was never served.
HTTP_BY_CODE: Mapping[str, int] = MappingProxyType(
    {
        "invalid_request_error": 400,
        "authentication_error": 401,
        "billing_error": 402,
        "permission_error": 403,
        "not_found_error": 404,
        "request_too_large": 413,
        "rate_limit_error": 429,
        "api_error": 500,
        "timeout_error": 504,
        "overloaded_error": 529,
        "expired": 503,
        "canceled": 503,
    }
)


def realtime_error(status: int, code: str, text: str) -> Exception:
    """Return what `ChatAnthropic.invoke()` raises for a `status` answer whose error is `code`."""
    body = {"type": "error", "error": {"type": code, "message": text}}
    request = httpx2.Request("POST", MESSAGES_URL)
    response = httpx2.Response(status, json=body, request=request)
    sdk_error = make_status_error(f"Error code: {status} - {body}", body=body, response=response)
    return reraised(sdk_error, _classify)


def _classify(error: Exception) -> None:
    """Re-raise an SDK error as `ChatAnthropic` does (its `except` clauses around the call)."""
    if isinstance(error, anthropic.BadRequestError):
        _handle_anthropic_bad_request(error)
    elif isinstance(error, anthropic.APIError):
        _handle_anthropic_api_error(error)
