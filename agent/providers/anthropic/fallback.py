"""Re-send an Anthropic batch request through the Messages API, for a deadline's fallback.

The request's `params` are exactly what `ChatAnthropic` sends for it in realtime (the job's
chat model built them, `agent.providers.anthropic.reference`), so the call goes through the same
SDK client to `POST /v1/messages`. The answer is wrapped in a `succeeded` batch result line (an
HTTP error in an `errored` one, whose `error` is the body Anthropic answered) and parsed by the
job's parser, so the stored result is the one a batch answer gives. Anthropic has no flex tier.
"""

from __future__ import annotations

from typing import Any

import anthropic
import orjson
from anthropic import Anthropic

from agent.providers.base import LineParser, RequestOutcome, read_outcome
from agent.providers.errors import TRANSIENT_STATUS, TransientProviderError
from agent.providers.realtime_post import TIMEOUT_SECONDS


def send_line(client: Anthropic, raw: bytes, parser: LineParser, job_id: str) -> RequestOutcome:
    """Send one kept request line's `params` in realtime; return its outcome, parsed as a result.

    Raises:
        TransientProviderError: A 429, 529 (overloaded) or server fault outlasted the SDK's
            retries, or the connection failed.
    """
    line = orjson.loads(raw)
    custom_id = str(line.get("custom_id") or "")
    params: dict[str, Any] = dict(line["params"])
    try:
        message = client.with_options(timeout=TIMEOUT_SECONDS).post(
            "/v1/messages", body=params, cast_to=object
        )
        result: dict[str, Any] = {"type": "succeeded", "message": message}
    except anthropic.APIStatusError as exc:
        if exc.status_code in TRANSIENT_STATUS:
            raise TransientProviderError(
                f"anthropic realtime call for {custom_id!r} answered {exc.status_code}: {exc.message}"
            ) from None
        # A request error: the same failure the batch result would have held.
        result = {"type": "errored", "error": exc.body}
    except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
        raise TransientProviderError(
            f"anthropic realtime call for {custom_id!r} failed: {exc}"
        ) from None
    return read_outcome(parser, orjson.dumps({"custom_id": custom_id, "result": result}), job_id)
