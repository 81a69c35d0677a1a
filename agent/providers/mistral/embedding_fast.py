"""Fast Mistral embeddings lines and vectors, equal to the `MistralAIEmbeddings` reference path.

The body is `{"model", "input": [text]}` (checked against the reference at construction); an
answer's vector is its one `data` embedding, read with orjson and numpy instead of the
class's `list(map(float, ...))` of the same values. Anything else falls back to the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from agent.providers.base import RequestOutcome, jsonl_line, parse_output_line, token_usage
from agent.providers.embedding_common import PROBE_TEXTS, embedding_text, probe_vector, vector_bytes
from agent.providers.mistral.embeddings import embeddings_model, reference_vectors, request_body
from agent.requests import BatchRequest
from agent.state import Usage

logger = logging.getLogger("batch_agent")


class MistralEmbeddingBuilder:
    """Builds `{custom_id, body}` lines of one text each."""

    def __init__(self, model: str, params: Mapping[str, Any]) -> None:
        """Build the reference class once, and check the fast bodies against it.

        Raises:
            InputError: A setting is not one a batch carries, or the class rejects it.
        """
        self.embeddings = embeddings_model(model, params)
        self.fast = all(
            self._fast_body(text) == request_body(self.embeddings, text) for text in PROBE_TEXTS
        )
        if not self.fast:
            logger.warning("Mistral embeddings fast path disabled: it differs from the class")

    def _fast_body(self, text: str) -> dict[str, Any]:
        return {"model": self.embeddings.model, "input": [text]}

    def body(self, request: BatchRequest) -> dict[str, Any]:
        """Return the body `embed_documents([text])` posts for the request's text."""
        text = embedding_text(request)
        return self._fast_body(text) if self.fast else request_body(self.embeddings, text)

    def line(self, request: BatchRequest) -> bytes:
        """Return the request's JSONL input line."""
        return jsonl_line({"custom_id": request.id, "body": self.body(request)})


def _usage(body: Mapping[str, Any]) -> Usage | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    return token_usage(prompt, 0, usage.get("total_tokens", prompt))


class MistralVectorParser:
    """Parses Mistral `/v1/embeddings` batch result lines into one vector per request."""

    def __init__(self, model: str, params: Mapping[str, Any]) -> None:
        """Build the reference class once per job."""
        self.embeddings = embeddings_model(model, params)

    def parse_line(self, raw: bytes | str, job_id: str) -> RequestOutcome:
        """Return the request's outcome: its vector, or its error (`VectorParser.parse_line`)."""
        custom_id, body, error, retryable = parse_output_line(raw)
        if error is not None or body is None:
            return RequestOutcome(custom_id, None, error, retryable)
        usage = _usage(body)
        return RequestOutcome(custom_id, None, None, False, usage, self.vector(body))

    def vector(self, body: Mapping[str, Any]) -> bytes:
        """Return the text's one vector from an answer body (float32 bytes).

        Raises:
            ValueError: The answer does not hold exactly one embedding (or what the class
                raises reading it).
        """
        data = body.get("data")
        if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
            values = data[0].get("embedding")
            if isinstance(values, list) and values and all(type(v) is float for v in values):
                return vector_bytes(np.asarray(values, dtype=np.float64))
        vectors = reference_vectors(self.embeddings, "", orjson.loads(orjson.dumps(body)))
        if len(vectors) != 1:
            raise ValueError(f"the answer has {len(vectors)} embeddings for one text")
        return vector_bytes(vectors[0])

    def check_reference(self) -> None:
        """Run `embed_documents` on a probe answer."""
        reference_vectors(self.embeddings, "ping", {"data": [{"embedding": probe_vector(4)}]})
