"""The exception `ChatGoogleGenerativeAI.invoke()` raises for an HTTP error, for a failed batched call.

google-genai raises `errors.ClientError` for a 4xx answer and `errors.ServerError` for a 5xx,
from the body `{"error": {"code", "message", "status"}}`; langchain-google-genai then re-raises
a `ClientError` as its status's class (`GoogleRateLimitError`, `GoogleInvalidRequestError`, ...,
whose message names the model) and a `ServerError` as `GoogleAPIError`. Both steps are replayed
here on a synthetic response. A batch result line's error names the canonical status
(`RESOURCE_EXHAUSTED`) or its gRPC number (`grpc_8`), read here as the HTTP status it maps to.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import httpx2
from google.genai import errors
from langchain_google_genai.chat_models import _handle_client_error, _handle_server_error

from agent.providers.realtime_errors import reraised

# The endpoint a realtime call posts to (the synthetic response's request).
GENERATE_URL = "https://generativelanguage.googleapis.com/v1beta/models/{model}:generateContent"
# Google's canonical statuses: (gRPC number, HTTP status), as google.rpc.Code maps them.
CANONICAL: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "CANCELLED": (1, 499),
        "UNKNOWN": (2, 500),
        "INVALID_ARGUMENT": (3, 400),
        "DEADLINE_EXCEEDED": (4, 504),
        "NOT_FOUND": (5, 404),
        "ALREADY_EXISTS": (6, 409),
        "PERMISSION_DENIED": (7, 403),
        "RESOURCE_EXHAUSTED": (8, 429),
        "FAILED_PRECONDITION": (9, 400),
        "ABORTED": (10, 409),
        "OUT_OF_RANGE": (11, 400),
        "UNIMPLEMENTED": (12, 501),
        "INTERNAL": (13, 500),
        "UNAVAILABLE": (14, 503),
        "DATA_LOSS": (15, 500),
        "UNAUTHENTICATED": (16, 401),
    }
)
HTTP_BY_CODE: Mapping[str, int] = MappingProxyType(
    {
        **{name: http for name, (_, http) in CANONICAL.items()},
        **{f"grpc_{number}": http for number, http in CANONICAL.values()},
    }
)
# The canonical status a bare HTTP status is answered with.
STATUS_NAMES: Mapping[int, str] = MappingProxyType(
    {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ABORTED",
        429: "RESOURCE_EXHAUSTED",
        499: "CANCELLED",
        500: "INTERNAL",
        501: "UNIMPLEMENTED",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }
)
_NAMES_BY_NUMBER = {f"grpc_{number}": name for name, (number, _) in CANONICAL.items()}


def realtime_error(status: int, code: str, text: str, model: str) -> Exception:
    """Return what `ChatGoogleGenerativeAI.invoke()` raises for a `status` answer (`code`)."""
    name = code if code in CANONICAL else _NAMES_BY_NUMBER.get(code)
    name = name or STATUS_NAMES.get(status, "UNKNOWN")
    body = {"error": {"code": status, "message": text, "status": name}}
    request = httpx2.Request("POST", GENERATE_URL.format(model=model or "model"))
    response = httpx2.Response(status, json=body, request=request)
    sdk_class = errors.ServerError if status >= 500 else errors.ClientError
    sdk_error = sdk_class(status, body, response)
    return reraised(sdk_error, lambda error: _classify(error, model))


def _classify(error: Exception, model: str) -> None:
    """Re-raise an SDK error as `ChatGoogleGenerativeAI` does (its `except` clauses)."""
    if isinstance(error, errors.ClientError):
        _handle_client_error(error, {"model": model})
    elif isinstance(error, errors.ServerError):
        _handle_server_error(error)
