"""The exception `ChatOpenAI.invoke()` raises for an HTTP error, for a failed batched call.

The OpenAI SDK turns an error response into its status's class (`_make_status_error`: 400
`BadRequestError`, 429 `RateLimitError`, 5xx `InternalServerError`, ...), with the body's
`error` object as `body` (its `code`, `type` and `param` read from it); langchain-openai then
re-raises it as its own class of both that and LangChain's (`OpenAIRateLimitError`,
`OpenAIContextOverflowError`, ...). Both steps are replayed here on a synthetic response.
"""

from __future__ import annotations

import httpx2
import openai
from langchain_openai.chat_models.base import (
    _handle_openai_api_error,
    _handle_openai_bad_request,
)

from agent.providers.realtime_errors import reraised

# The endpoint a realtime chat call posts to (the synthetic response's request).
CHAT_URL = "https://api.openai.com/v1/chat/completions"
# The SDK's class per status (`OpenAI._make_status_error`); any other 5xx is a server error.
STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def realtime_error(status: int, code: str, text: str) -> Exception:
    """Return what `ChatOpenAI.invoke()` raises for a `status` answer whose error is `code`."""
    body = {"message": text, "type": code, "param": None, "code": code}
    request = httpx2.Request("POST", CHAT_URL)
    response = httpx2.Response(status, json={"error": body}, request=request)
    sdk_class = STATUS_ERRORS.get(status) or (
        openai.InternalServerError if status >= 500 else openai.APIStatusError
    )
    sdk_error = sdk_class(f"Error code: {status} - {text}", response=response, body=body)
    return reraised(sdk_error, _classify)


def _classify(error: Exception) -> None:
    """Re-raise an SDK error as `ChatOpenAI` does (its `except` clauses around the call)."""
    if isinstance(error, openai.BadRequestError):
        _handle_openai_bad_request(error)
    elif isinstance(error, openai.APIError):
        _handle_openai_api_error(error)
