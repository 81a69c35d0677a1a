"""The exception `ChatMistralAI.invoke()` raises for an HTTP error, for a failed batched call.

langchain-mistralai calls the chat endpoint with plain `httpx` (not the `mistralai` SDK) and
raises `httpx.HTTPStatusError` for any error answer, its message
`Error response {status} while fetching {url}: {body}` and its response attached; the body is
Mistral's flat error `{"object": "error", "message", "type", "param", "code"}`. Mistral's rate
limit comes as code "1300" (type `rate_limited`), which only Mistral says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType

import httpx

# The endpoint a realtime chat call posts to (the synthetic response's request).
CHAT_URL = "https://api.mistral.ai/v1/chat/completions"
# Mistral's own result codes and the status they come with.
HTTP_BY_CODE: Mapping[str, int] = MappingProxyType({"1300": 429, "rate_limited": 429})


def realtime_error(status: int, code: str, text: str) -> Exception:
    """Return what `ChatMistralAI.invoke()` raises for a `status` answer whose error is `code`."""
    body = {"object": "error", "message": text, "type": code, "param": None, "code": code}
    request = httpx.Request("POST", CHAT_URL)
    response = httpx.Response(status, json=body, request=request)
    content = json.dumps(body, separators=(",", ":"))
    return httpx.HTTPStatusError(
        f"Error response {status} while fetching {CHAT_URL}: {content}",
        request=request,
        response=response,
    )
