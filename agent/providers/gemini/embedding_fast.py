"""Fast Gemini embeddings lines and vectors, equal to the `GoogleGenerativeAIEmbeddings` reference path.

The `request` of a line is built here in the key order google-genai writes
(`content`, `taskType`, `outputDimensionality`; checked against the reference at
construction), and an answer's vector is read with orjson and numpy from the line's
`response.embedding.values`. Result lines are `{"key", "response": SingleEmbedContentResponse}`
(`{"embedding": {"values"}, "tokenCount"}`) or `{"key", "error": {"code", "message"}}`, the
latter read as chat result lines are (`agent.providers.gemini.reference.line_error`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.providers.base import RequestOutcome, token_usage
from agent.providers.embedding_common import PROBE_TEXTS, embedding_text, probe_vector, vector_bytes
from agent.providers.gemini.embeddings import embeddings_model, reference_vectors, request_body
from agent.providers.gemini.reference import batch_line, keyed_line, line_error, unreadable_line
from agent.requests import BatchRequest
from agent.state import RequestError, Usage

logger = logging.getLogger("batch_agent")
# `embed_documents`' task type when the class sets none.
DOCUMENT_TASK = "RETRIEVAL_DOCUMENT"


class GeminiEmbeddingBuilder:
    """Builds `{key, request}` lines of one text each."""

    def __init__(self, model: str, params: Mapping[str, Any]) -> None:
        """Build the reference class once, and check the fast requests against it.

        Raises:
            InputError: A setting is not one a batch carries, or the class rejects it.
        """
        self.embeddings = embeddings_model(model, params)
        emb = self.embeddings
        self._config: dict[str, Any] = {"taskType": (emb.task_type or DOCUMENT_TASK).upper()}
        if emb.output_dimensionality:
            self._config["outputDimensionality"] = emb.output_dimensionality
        self.fast = all(self._fast_request(text) == request_body(emb, text) for text in PROBE_TEXTS)
        if not self.fast:
            logger.warning("Gemini embeddings fast path disabled: it differs from the class")

    def _fast_request(self, text: str) -> dict[str, Any]:
        return {"content": {"parts": [{"text": text}]}, **self._config}

    def request(self, request: BatchRequest) -> dict[str, Any]:
        """Return the `EmbedContentRequest` `embed_documents([text])` sends for the text."""
        text = embedding_text(request)
        return self._fast_request(text) if self.fast else request_body(self.embeddings, text)

    def line(self, request: BatchRequest) -> bytes:
        """Return the request's JSONL input line."""
        return batch_line(request.id, self.request(request))


def _count(value: Any) -> int | None:
    """Read an int64 count (proto3 JSON writes it as a string)."""
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def response_usage(response: Mapping[str, Any]) -> Usage | None:
    """Return the tokens billed for one embedded text (`tokenCount`), if the answer says."""
    tokens = _count(response.get("tokenCount", response.get("token_count")))
    return token_usage(tokens, 0, tokens) if tokens is not None else None


class GeminiVectorParser:
    """Parses Gemini embeddings batch result lines into one vector per request."""

    def __init__(self, model: str, params: Mapping[str, Any]) -> None:
        """Build the reference class once per job."""
        self.embeddings = embeddings_model(model, params)

    def parse_line(self, raw: bytes | str, job_id: str) -> RequestOutcome:
        """Return the request's outcome: its vector, or its error (`VectorParser.parse_line`)."""
        line, custom_id = keyed_line(raw)
        if line is None:
            return RequestOutcome("", None, unreadable_line(), False)
        if line.get("error") is not None:
            error, retryable = line_error(line["error"])
            return RequestOutcome(custom_id, None, error, retryable)
        response = line.get("response")
        if not isinstance(response, dict):
            error = RequestError(code="no_result", message="the result line has no response")
            return RequestOutcome(custom_id, None, error, False)
        usage = response_usage(response)
        return RequestOutcome(custom_id, None, None, False, usage, self.vector(response))

    def vector(self, response: Mapping[str, Any]) -> bytes:
        """Return the text's one vector from a line's `response` (float32 bytes).

        Raises:
            ValueError: The response holds no one embedding (or what the class raises).
        """
        embedding = response.get("embedding")
        values = embedding.get("values") if isinstance(embedding, dict) else None
        if isinstance(values, list) and values and all(type(v) is float for v in values):
            return vector_bytes(np.asarray(values, dtype=np.float64))
        vectors = reference_vectors(self.embeddings, "", dict(response))
        if len(vectors) != 1:
            raise ValueError(f"the answer has {len(vectors)} embeddings for one text")
        return vector_bytes(vectors[0])

    def check_reference(self) -> None:
        """Run `embed_documents` on a probe answer."""
        reference_vectors(self.embeddings, "ping", {"embedding": {"values": probe_vector(4)}})
