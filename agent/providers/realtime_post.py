"""One realtime POST of a batch line's body, for the providers whose fallback posts it themselves.

Mistral's and Gemini's LangChain chat models post their request bodies with a plain HTTP client;
a deadline's fallback (`agent.fallback`) re-sends a batch line's body the same way, on the
provider's HTTP client. What a transport failure, a 429 or a server fault means is the same for
both: a `TransientProviderError` the fallback's backoff retries. Any other answer is returned
with its JSON body, for the provider to wrap in its own result-line shape.
"""

from __future__ import annotations

from typing import Any

import httpx2
import orjson

from agent.providers.errors import TRANSIENT_STATUS, TransientProviderError

# How long one realtime call of a fallback may take (every provider's; flex waits longer).
TIMEOUT_SECONDS = 600.0


def post_body(
    client: httpx2.Client, url: str, body: Any, headers: dict[str, str], label: str
) -> tuple[int, Any | None, str]:
    """POST `body` as JSON; return the answer's status, its JSON body (None: not JSON) and text.

    Args:
        client: The provider's HTTP client.
        url: The realtime endpoint.
        body: The request body (a batch line's, as the chat model built it).
        headers: Auth and content headers (the key is read for this call only, never kept).
        label: Names the call in errors, e.g. "mistral realtime call for 'req-1'".

    Raises:
        TransientProviderError: A 429 or a server fault, or the connection failed.
    """
    try:
        answer = client.post(
            url,
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json", **headers},
            timeout=TIMEOUT_SECONDS,
        )
    except httpx2.HTTPError as exc:
        raise TransientProviderError(f"{label} failed: {type(exc).__name__}") from None
    if answer.status_code in TRANSIENT_STATUS:
        raise TransientProviderError(f"{label} answered {answer.status_code}")
    try:
        return answer.status_code, answer.json(), answer.text
    except ValueError:
        return answer.status_code, None, answer.text
