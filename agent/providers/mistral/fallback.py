"""Re-send a Mistral batch line through the chat completions API, for a deadline's fallback.

The line's `body` is exactly what `ChatMistralAI` sends for that request in realtime (the job's
chat model built it, `agent.providers.mistral.reference`), and `ChatMistralAI` posts it with a
plain HTTP client to `{endpoint}/v1/chat/completions`; so does this, on the provider's HTTP
client (the in-process emulator's, or the shared one), with the key read from the environment
for the call only. The answer is wrapped in a batch output line (an HTTP error in an error line)
and parsed by the job's parser, so the stored result is the one a batch answer gives. Mistral
has no flex tier. The mistralai SDK does not retry this call: 429s and server faults are
retried by the fallback's own backoff (`agent.fallback`).
"""

from __future__ import annotations

import httpx2
import orjson

from agent.providers.base import LineParser, RequestOutcome, read_outcome
from agent.providers.realtime_post import post_body

DEFAULT_SERVER = "https://api.mistral.ai"


def send_line(
    client: httpx2.Client,
    server_url: str | None,
    api_key: str,
    raw: bytes,
    parser: LineParser,
    job_id: str,
) -> RequestOutcome:
    """Send one input line's body in realtime and return its outcome, parsed as a result line.

    Raises:
        TransientProviderError: A 429 or a server fault, or the connection failed.
    """
    line = orjson.loads(raw)
    custom_id = str(line.get("custom_id") or "")
    url = f"{(server_url or DEFAULT_SERVER).rstrip('/')}/v1/chat/completions"
    status, body, text = post_body(
        client,
        url,
        line["body"],
        {"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        f"mistral realtime call for {custom_id!r}",
    )
    if body is None:
        body = {"message": text, "type": "invalid_response"}
    response = {"status_code": status, "body": body}
    result_line = {"id": f"realtime-{custom_id}", "custom_id": custom_id, "response": response}
    return read_outcome(parser, orjson.dumps({**result_line, "error": None}), job_id)
