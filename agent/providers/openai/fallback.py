"""Re-send an OpenAI batch input line through the chat API, for a deadline's fallback.

The line's `body` is exactly what `ChatOpenAI` sends for that request in realtime (it was built
by the job's chat model, `agent.providers.openai.reference.request_body`), so the call goes
through the same SDK client to the line's `url` (`/v1/chat/completions` or `/v1/responses`),
with `service_tier: "flex"` for the flex tier (slower, at the batch price, and answered 429
`resource_unavailable` when OpenAI lacks capacity). The answer is wrapped in a batch output line
and parsed by the job's parser, so the stored result is the one a batch answer gives.
"""

from __future__ import annotations

from typing import Any, Final

import openai
import orjson
from openai import OpenAI

from agent.providers.base import LineParser, RequestOutcome, read_outcome
from agent.providers.errors import TRANSIENT_STATUS, TransientProviderError
from agent.providers.realtime_post import TIMEOUT_SECONDS as REALTIME_TIMEOUT_SECONDS

# OpenAI's advice for flex: a long timeout, since answers may take many minutes.
FLEX_TIMEOUT_SECONDS: Final = 900.0


def send_line(
    client: OpenAI, raw: bytes, parser: LineParser, job_id: str, *, flex: bool
) -> RequestOutcome:
    """Send one input line's body in realtime and return its outcome, parsed as a result line.

    Raises:
        TransientProviderError: A 429 (a rate limit, flex capacity) or a server fault outlasted
            the SDK's retries, or the connection failed.
    """
    line = orjson.loads(raw)
    custom_id = str(line.get("custom_id") or "")
    body: dict[str, Any] = dict(line["body"])
    if flex:
        body["service_tier"] = "flex"
    path = str(line.get("url") or "/v1/chat/completions").removeprefix("/v1")
    timeout = FLEX_TIMEOUT_SECONDS if flex else REALTIME_TIMEOUT_SECONDS
    try:
        answer = client.with_options(timeout=timeout).post(path, body=body, cast_to=object)
        response: dict[str, Any] = {"status_code": 200, "request_id": "", "body": answer}
    except openai.APIStatusError as exc:
        if exc.status_code in TRANSIENT_STATUS:
            raise TransientProviderError(
                f"openai realtime call for {custom_id!r} answered {exc.status_code}: {exc.message}"
            ) from None
        # A request error: the same failure the batch line would have written.
        response = {"status_code": exc.status_code, "request_id": "", "body": {"error": exc.body}}
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        raise TransientProviderError(
            f"openai realtime call for {custom_id!r} failed: {exc}"
        ) from None
    result_line = {"id": f"realtime-{custom_id}", "custom_id": custom_id, "response": response}
    return read_outcome(parser, orjson.dumps({**result_line, "error": None}), job_id)
