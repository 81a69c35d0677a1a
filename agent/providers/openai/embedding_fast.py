"""Fast OpenAI embeddings lines and vectors, equal to the `OpenAIEmbeddings` reference path.

`OpenAIEmbeddingBuilder` builds each line's body itself (tiktoken chunks, the class's
invocation parameters, the SDK's key order) instead of running `embed_documents` through a
capturing transport for each text, and checks itself against that reference path on probe
texts at construction (falling back to it for good if they differ, and always for
`model_kwargs` it does not know). `OpenAIVectorParser` decodes an answer with orjson and numpy
(base64 float32, or float lists) and combines a long text's chunk vectors with the same float
operations, in the same order, as `_process_batched_chunked_embeddings`.

The chunk weights of a long text are its chunks' token counts: every chunk but the last has
`embedding_ctx_length` tokens, and the last one has the rest of the tokens the answer's usage
bills (`prompt_tokens`; OpenAI bills exactly the token ids sent). An answer without a usable
count cannot be combined, and fails its request.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import orjson
from langchain_openai import OpenAIEmbeddings

from agent.providers.base import RequestOutcome, jsonl_line, parse_output_line, token_usage
from agent.providers.embedding_common import (
    PROBE_TEXTS,
    VECTOR_DTYPE,
    embedding_text,
    probe_vector,
    vector_bytes,
)
from agent.providers.openai.embeddings import (
    api_calls,
    combined_vector,
    decoded_data,
    embeddings_model,
    reference_vector,
    request_body,
)
from agent.providers.openai.offline_tokens import encoding_for_model
from agent.requests import EMBEDDINGS_URL, BatchRequest, InputError
from agent.state import Usage

logger = logging.getLogger("batch_agent")

# `model_kwargs` the fast builder writes itself (the SDK's named `embeddings.create` fields).
_FAST_KWARGS: Final = frozenset({"user", "encoding_format"})


class OpenAIEmbeddingBuilder:
    """Builds `{custom_id, method, url, body}` lines of one text each."""

    def __init__(self, model: str, params: Mapping[str, Any]) -> None:
        """Build the reference class once, and check the fast bodies against it.

        Raises:
            InputError: A setting is not one a batch carries, or the class rejects it.
        """
        self.embeddings = embeddings_model(model, params)
        emb = self.embeddings
        self._encoding = (
            encoding_for_model(emb.tiktoken_model_name or emb.model)
            if emb.check_embedding_ctx_length
            else None
        )
        self._encoder_kwargs: dict[str, Any] = {
            key: value
            for key, value in {
                "allowed_special": emb.allowed_special,
                "disallowed_special": emb.disallowed_special,
            }.items()
            if value is not None
        }
        kwargs = dict(emb.model_kwargs)
        self.fast = set(kwargs) <= _FAST_KWARGS
        # The SDK's key order: model, input, user, dimensions, encoding_format.
        self._tail: dict[str, Any] = {}
        if "user" in kwargs:
            self._tail["user"] = kwargs["user"]
        if emb.dimensions is not None:
            self._tail["dimensions"] = emb.dimensions
        self._tail["encoding_format"] = kwargs.get("encoding_format", "base64")
        if self.fast:
            self.fast = self._self_check()

    def _self_check(self) -> bool:
        for text in PROBE_TEXTS:
            try:
                fast = self._fast_body(text, "probe")
                reference = request_body(self.embeddings, text, "probe")
            except InputError:
                return True  # the settings refuse even the probe; each request says so
            if fast != reference:
                logger.warning(
                    "OpenAI embeddings fast path disabled: it differs from OpenAIEmbeddings for %r",
                    text,
                )
                return False
        return True

    def _fast_body(self, text: str, request_id: str) -> dict[str, Any]:
        emb = self.embeddings
        inputs: Any
        if self._encoding is None:
            inputs = [text]
        else:
            if emb.model.endswith("001"):
                # What `_tokenize` does for first-generation models.
                text = text.replace("\n", " ")
            try:
                if self._encoder_kwargs:
                    tokens = self._encoding.encode(text, **self._encoder_kwargs)
                else:
                    tokens = self._encoding.encode_ordinary(text)
            except ValueError as exc:
                raise InputError(
                    f"OpenAIEmbeddings cannot tokenize this text: {exc}",
                    source="input",
                    request_id=request_id,
                ) from None
            size = emb.embedding_ctx_length
            chunks = [tokens[start : start + size] for start in range(0, len(tokens), size)]
            calls = api_calls([len(chunk) for chunk in chunks], emb.chunk_size)
            if calls > 1:
                raise InputError(
                    f"OpenAIEmbeddings embeds this text in {calls} API calls (its {size}-token "
                    "chunks pass chunk_size or the tokens one call may hold); a batch line is "
                    "one call: split the text",
                    source="input",
                    request_id=request_id,
                )
            # An empty text has no chunk: the class embeds "" in a call of its own.
            inputs = chunks if chunks else ""
        return {"model": emb.model, "input": inputs, **self._tail}

    def body(self, request: BatchRequest) -> dict[str, Any]:
        """Return the body `embed_documents([text])` sends for the request's text.

        Raises:
            InputError: The request is not one text, or needs more than one API call.
        """
        text = embedding_text(request)
        try:
            if self.fast:
                return self._fast_body(text, request.id)
            return request_body(self.embeddings, text, request.id)
        except InputError as exc:
            raise exc.located_at(request) from None
        except ValueError as exc:  # tiktoken refusing a special token, through the reference
            raise InputError(
                f"OpenAIEmbeddings cannot embed this text: {exc}",
                source=request.source,
                line=request.line,
                request_id=request.id,
            ) from None

    def line(self, request: BatchRequest) -> bytes:
        """Return the request's JSONL input line."""
        body = self.body(request)
        return jsonl_line(
            {"custom_id": request.id, "method": "POST", "url": EMBEDDINGS_URL, "body": body}
        )


def _decoded(item: Any) -> np.ndarray | None:
    """Return one data item's vector as float64 (what the SDK hands LangChain), None if odd."""
    if not isinstance(item, dict):
        return None
    embedding = item.get("embedding")
    if isinstance(embedding, str):
        return np.frombuffer(binascii.a2b_base64(embedding), dtype=VECTOR_DTYPE).astype(np.float64)
    if isinstance(embedding, list) and embedding and all(type(v) is float for v in embedding):
        return np.asarray(embedding, dtype=np.float64)
    return None


def chunk_tokens(count: int, size: int, usage: Usage | None) -> list[int]:
    """Return the token counts of a text's `count` chunks of at most `size` tokens.

    Raises:
        ValueError: The answer's usage cannot give the last chunk's count.
    """
    if count == 1:
        return [1]
    billed = usage["input_tokens"] if usage is not None else None
    last = billed - size * (count - 1) if billed is not None else 0
    if not 1 <= last <= size:
        raise ValueError(
            f"the answer has {count} chunk embeddings but its usage ({billed} prompt tokens) "
            f"does not fit {count} chunks of up to {size} tokens: they cannot be weighed"
        )
    return [size] * (count - 1) + [last]


def combine(vectors: list[np.ndarray], weights: list[int]) -> np.ndarray:
    """Combine chunk vectors as `_process_batched_chunked_embeddings` does, operation for operation.

    One vector is returned as it is. Several: the weighted sum added up chunk by chunk, divided
    by the total weight, then divided by its norm, whose squares are summed one after another
    (`cumsum`, not numpy's pairwise `sum`) and raised to 0.5 by Python, as LangChain's loops do.

    Raises:
        ZeroDivisionError: The average is the zero vector (chunks that cancel out), where
            LangChain's Python division raises too; numpy would give NaN instead.
    """
    if len(vectors) == 1:
        return vectors[0]
    total = vectors[0] * float(weights[0])
    for vector, weight in zip(vectors[1:], weights[1:], strict=True):
        total = total + vector * float(weight)
    average = total / float(sum(weights))
    magnitude = float(np.cumsum(average * average)[-1]) ** 0.5
    if magnitude == 0.0:
        raise ZeroDivisionError("float division by zero")
    return average / magnitude  # type: ignore[no-any-return]


class OpenAIVectorParser:
    """Parses `/v1/embeddings` batch result lines into one vector per request."""

    def __init__(self, model: str, params: Mapping[str, Any]) -> None:
        """Build the reference class once per job."""
        self.embeddings: OpenAIEmbeddings = embeddings_model(model, params)

    def _usage(self, body: Mapping[str, Any]) -> Usage | None:
        usage = body.get("usage")
        if not isinstance(usage, dict):
            return None
        prompt = usage.get("prompt_tokens")
        return token_usage(prompt, 0, usage.get("total_tokens", prompt))

    def parse_line(self, raw: bytes | str, job_id: str) -> RequestOutcome:
        """Return the request's outcome: its vector, or its error (`VectorParser.parse_line`)."""
        line = orjson.loads(raw)
        response = line.get("response") if isinstance(line, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        if (
            not isinstance(line, dict)
            or line.get("error")
            or not isinstance(response, dict)
            or response.get("status_code") != 200
            or not isinstance(body, dict)
        ):
            custom_id, body, error, retryable = parse_output_line(raw)
            if error is not None:
                return RequestOutcome(custom_id, None, error, retryable)
            assert body is not None  # parse_output_line returns a body or an error
        custom_id = line.get("custom_id")
        custom_id = custom_id if isinstance(custom_id, str) else ""
        usage = self._usage(body)
        return RequestOutcome(custom_id, None, None, False, usage, self.vector(body, usage))

    def vector(self, body: Mapping[str, Any], usage: Usage | None) -> bytes:
        """Return the text's one vector from an answer body, as stored (float32 bytes).

        Raises:
            ValueError: What `embed_documents` raises for the answer, or chunks that cannot be
                weighed (see the module docstring).
        """
        emb = self.embeddings
        data = body.get("data")
        if isinstance(data, list) and len(data) == 1 and not emb.skip_empty:
            # One vector, as the SDK decodes it: base64 of float32 little-endian bytes are
            # already the stored bytes (`a2b_base64` is what the SDK's `b64decode` calls).
            item = data[0]
            embedding = item.get("embedding") if isinstance(item, dict) else None
            if isinstance(embedding, str):
                raw = binascii.a2b_base64(embedding)
                if raw and len(raw) % VECTOR_DTYPE.itemsize == 0:
                    return raw
        decoded = [_decoded(item) for item in data] if isinstance(data, list) else []
        fast = bool(decoded) and all(v is not None for v in decoded) and not emb.skip_empty
        if not emb.check_embedding_ctx_length:
            vectors = [v for v in decoded if v is not None] if fast else decoded_data(body)
            if len(vectors) != 1:
                raise ValueError(f"the answer has {len(vectors)} embeddings for one text")
            return vector_bytes(vectors[0])
        if fast:
            weights = chunk_tokens(len(decoded), emb.embedding_ctx_length, usage)
            return vector_bytes(combine(decoded, weights))  # type: ignore[arg-type]
        lists = decoded_data(body)
        weights = chunk_tokens(len(lists), emb.embedding_ctx_length, usage)
        return vector_bytes(combined_vector(emb, lists, weights))

    def check_reference(self) -> None:
        """Run `embed_documents` on a probe answer, and the chunk combination on two chunks."""
        answer = {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": probe_vector(4)}],
            "model": self.embeddings.model,
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
        reference_vector(self.embeddings, "ping", answer)
        combined_vector(self.embeddings, [probe_vector(4), probe_vector(4)[::-1]], [2, 1])
