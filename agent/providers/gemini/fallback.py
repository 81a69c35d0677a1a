"""Re-send a Gemini batch line through `generateContent`, for a deadline's fallback.

The line's `request` is exactly what `ChatGoogleGenerativeAI` sends for that request in
realtime (the job's chat model built it, `agent.providers.gemini.reference`): a REST
`GenerateContentRequest`, posted here to `{root}/{version}/models/{model}:generateContent` on the
provider's HTTP client (the one google-genai uses), with the key read from the environment for
the call only. The answer is wrapped in a responses-file line (`{"key", "response"}`; an HTTP
error in `{"key", "error"}`) and parsed by the job's parser, so the stored result is the one a
batch answer gives. The fallback's own backoff (`agent.fallback`) retries 429s and server
faults. Flex: the request's top-level `serviceTier: "flex"`, where google-genai puts
`GenerateContentConfig.service_tier` (`ChatGoogleGenerativeAI` has no setting for it), billed
at the batch price, slower, and refused with a 429 when Google has no flex capacity.
"""

from __future__ import annotations

import os
from typing import Any

import httpx2
import orjson

from agent.providers.base import LineParser, RequestOutcome, read_outcome
from agent.providers.realtime_post import post_body

DEFAULT_ROOT = "https://generativelanguage.googleapis.com"


def send_line(
    client: httpx2.Client,
    root: str | None,
    version: str | None,
    api_key: str,
    model: str,
    raw: bytes,
    parser: LineParser,
    job_id: str,
    *,
    flex: bool = False,
) -> RequestOutcome:
    """Send one input line's request in realtime and return its outcome, parsed as a result line.

    Raises:
        TransientProviderError: A 429 or a server fault, or the connection failed.
    """
    line = orjson.loads(raw)
    key = str(line.get("key") or "")
    version = version or os.environ.get("GOOGLE_GENAI_API_VERSION") or "v1beta"
    name = model if model.startswith("models/") else f"models/{model}"
    url = f"{(root or DEFAULT_ROOT).rstrip('/')}/{version}/{name}:generateContent"
    request = {**line["request"], "serviceTier": "flex"} if flex else line["request"]
    status, body, text = post_body(
        client,
        url,
        request,
        {"x-goog-api-key": api_key},
        f"gemini realtime call for {key!r}",
    )
    if body is None:
        body = {"error": {"code": status, "message": text}}
    if status >= 400:
        error = body.get("error", body) if isinstance(body, dict) else body
        result: dict[str, Any] = {"key": key, "error": error}
    else:
        result = {"key": key, "response": body}
    return read_outcome(parser, orjson.dumps(result), job_id)
