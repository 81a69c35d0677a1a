"""Which provider endpoint a job's requests go to: chat, OpenAI's Responses API, or embeddings.

Named once here; a job records its endpoint (`Job.endpoint`), every provider maps it to its own
URL or create call, and the line builders and parsers are chosen by it
(`agent.providers.base.line_builder_for` / `parser_for`).

- `chat`: chat completions (OpenAI, Mistral), messages (Anthropic), generateContent (Gemini).
- `responses`: OpenAI's `/v1/responses`, what `ChatOpenAI(use_responses_api=True)` calls.
- `embeddings`: `/v1/embeddings` (OpenAI, Mistral), `asyncBatchEmbedContent` (Gemini): one vector
  per text, as the provider's LangChain embeddings class returns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

Endpoint = Literal["chat", "responses", "embeddings"]
CHAT: Final = "chat"
RESPONSES: Final = "responses"
EMBEDDINGS: Final = "embeddings"
ENDPOINTS: Final[tuple[Endpoint, ...]] = get_args(Endpoint)


def job_endpoint(job: Mapping[str, Any]) -> Endpoint:
    """Return the endpoint of a job record (records written before endpoints existed: chat)."""
    endpoint = job.get("endpoint") or CHAT
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r} (known: {', '.join(ENDPOINTS)})")
    return endpoint  # type: ignore[no-any-return]


def unsupported(provider: str, endpoint: str) -> str:
    """Return the words of a refusal of an endpoint a provider does not batch."""
    return f"{provider} does not batch the {endpoint} endpoint"
