"""The LangChain reference path for OpenAI embeddings: bodies and vectors as `OpenAIEmbeddings` has them.

A batch line holds one text, and its body is what `OpenAIEmbeddings.embed_documents([text])`
sends for it: with `check_embedding_ctx_length` (the default) the text's tiktoken token ids in
chunks of `embedding_ctx_length` as `input`, else `input: [text]`; an empty text is sent as
`input: ""` (the class's own second call for it); plus `_invocation_params` (model,
dimensions, model_kwargs) and the SDK's wire default `encoding_format: "base64"`. A text the
class would send in more than one call (more chunks than `chunk_size`, or more tokens than one
request may hold) is refused. The vector is what `embed_documents` returns from that line's
answer: the SDK decodes base64, and the chunks of a long text are combined by
`_process_batched_chunked_embeddings` (a token-weighted average, normalised).

The class runs with HTTP clients whose transport records what it sends and answers with what
the batch answered (`CapturingTransport`): no call can reach the network.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

import httpx2
from langchain_openai import OpenAIEmbeddings
from langchain_openai.embeddings.base import (
    MAX_TOKENS_PER_REQUEST,
    _process_batched_chunked_embeddings,
)
from openai import omit
from openai._models import construct_type
from openai.lib._parsing._embeddings import parse_embedding_response
from openai.types import CreateEmbeddingResponse
from pydantic import SecretStr

from agent.providers.embedding_common import CapturingTransport, embedding_settings
from agent.providers.openai.offline_tokens import ensure_offline
from agent.providers.settings import HEADERS, PROXY, build_chat_model, rules_for
from agent.requests import InputError

# The settings a batch carries (the class's fields that shape a body or its vector); every
# other field is in SETTING_RULES.
CARRIED: Final = frozenset(
    {
        "dimensions",
        "embedding_ctx_length",
        "allowed_special",
        "disallowed_special",
        "chunk_size",
        "tiktoken_model_name",
        "model_kwargs",
        "skip_empty",
        "check_embedding_ctx_length",
        "tiktoken_enabled",
    }
)
SETTING_RULES: Final = rules_for(
    OpenAIEmbeddings,
    no_effect=frozenset(
        {
            "client",
            "async_client",
            "openai_api_key",
            "max_retries",
            "request_timeout",
            "http_client",
            "http_async_client",
            "show_progress_bar",
            "retry_min_seconds",
            "retry_max_seconds",
            "deployment",  # Azure's deployment name; OpenAI's body names the model
            "openai_api_version",  # Azure only
            "headers",  # a field the class never reads
        }
    ),
    endpoint={"openai_api_base": "base_url", "openai_organization": "organization"},
    refused={
        "openai_proxy": PROXY,
        "default_headers": HEADERS,
        "default_query": "a batch request cannot carry query parameters",
        "openai_api_type": "Azure OpenAI is not batched through OpenAIEmbeddings",
    },
)
# `model_kwargs` the SDK's `embeddings.create` takes as request options, not body fields.
_HTTP_OPTIONS: Final = frozenset({"extra_headers", "extra_query"})
_CAPTURE: Final = CapturingTransport(httpx2.Response)
_CLIENT: Final = httpx2.Client(transport=httpx2.MockTransport(_CAPTURE), trust_env=False)
_ASYNC_CLIENT: Final = httpx2.AsyncClient(transport=httpx2.MockTransport(_CAPTURE), trust_env=False)


def embeddings_model(model: str, params: Mapping[str, Any]) -> OpenAIEmbeddings:
    """Return the `OpenAIEmbeddings` whose `embed_documents` our batch lines reproduce.

    `params` are its settings as plain JSON (a generic `dimensions` is the class's own).

    Raises:
        InputError: A setting is not one a batch carries, or the class rejects it.
    """
    settings = embedding_settings(OpenAIEmbeddings, params, "dimensions", "openai")
    if settings.get("tiktoken_enabled") is False:
        raise InputError(
            "model setting 'tiktoken_enabled': False splits texts with a HuggingFace "
            "tokenizer downloaded at run time, which batch-agent does not reproduce",
            source="context",
        )
    kwargs = settings.get("model_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise InputError("model setting 'model_kwargs' must be an object", source="context")
    refused = sorted(_HTTP_OPTIONS & set(kwargs))
    if refused:
        raise InputError(
            f"model_kwargs {', '.join(refused)} travel as HTTP headers or query parameters, "
            "which a batch line cannot carry",
            source="context",
        )
    if kwargs.get("encoding_format") == "base64":
        raise InputError(
            "model_kwargs encoding_format 'base64' makes embed_documents return base64 "
            "strings, not vectors; leave it unset (the SDK asks for base64 and decodes it)",
            source="context",
        )
    factory = functools.partial(
        OpenAIEmbeddings,
        model=model,
        api_key=SecretStr("unused-for-body-building"),
        http_client=_CLIENT,
        http_async_client=_ASYNC_CLIENT,
        max_retries=0,
    )
    embeddings = build_chat_model(factory, settings, SETTING_RULES)
    ensure_offline(embeddings.tiktoken_model_name or embeddings.model)
    return embeddings


def api_calls(chunk_tokens: Sequence[int], chunk_size: int) -> int:
    """Return how many `embeddings.create` calls `embed_documents` makes for these chunks.

    The loop of `_get_len_safe_embeddings`: up to `chunk_size` chunks per call, fewer when
    their tokens would pass `MAX_TOKENS_PER_REQUEST` (a single chunk over it still goes alone).
    """
    calls, start = 0, 0
    while start < len(chunk_tokens):
        total, end = 0, start
        for index in range(start, min(start + chunk_size, len(chunk_tokens))):
            if total + chunk_tokens[index] > MAX_TOKENS_PER_REQUEST:
                if end == start:
                    end = index + 1
                break
            total += chunk_tokens[index]
            end = index + 1
        calls += 1
        start = end
    return calls


def _stand_in_answer(body: dict[str, Any]) -> dict[str, Any]:
    """Answer a captured call with one small vector per input (only the body is wanted)."""
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) else 1
    data = [{"object": "embedding", "index": i, "embedding": [1.0, 0.0]} for i in range(count)]
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


def request_body(embeddings: OpenAIEmbeddings, text: str, request_id: str) -> dict[str, Any]:
    """Return the body `embeddings.embed_documents([text])` sends for `text`.

    Raises:
        InputError: The class would embed `text` in more than one API call.
    """
    with _CAPTURE.answering(_stand_in_answer) as bodies:
        embeddings.embed_documents([text])
    if len(bodies) != 1:
        raise InputError(
            f"OpenAIEmbeddings embeds this text in {len(bodies)} API calls (its "
            f"{embeddings.embedding_ctx_length}-token chunks pass chunk_size or "
            f"{MAX_TOKENS_PER_REQUEST} tokens per call); a batch line is one call: "
            "split the text",
            source="input",
            request_id=request_id,
        )
    return bodies[0]


def decoded_data(body: Any) -> list[list[float]]:
    """Return the vectors the SDK's `embeddings.create` returns for an answer body, in order.

    The SDK builds a `CreateEmbeddingResponse` leniently and decodes base64 embeddings into
    float lists (`parse_embedding_response`), as `embed_documents` gets them.

    Raises:
        ValueError: The answer has no embedding data (the SDK raises it too).
    """
    response = cast(
        CreateEmbeddingResponse, construct_type(type_=CreateEmbeddingResponse, value=body)
    )
    parsed = parse_embedding_response(response, encoding_format=omit)
    return [item.model_dump()["embedding"] for item in parsed.data]


def combined_vector(
    embeddings: OpenAIEmbeddings, vectors: list[list[float]], chunk_tokens: Sequence[int]
) -> list[float]:
    """Return the one vector `embed_documents` makes of a text's chunk vectors.

    `_process_batched_chunked_embeddings` itself: one chunk's vector as it is, several averaged
    weighted by their token counts and normalised.

    Raises:
        ValueError: No vector is left (`skip_empty` skipped them all: the class would call
            the API again).
    """
    tokens: list[list[int] | str] = [[0] * count for count in chunk_tokens]
    (vector,) = _process_batched_chunked_embeddings(
        1, tokens, vectors, [0] * len(vectors), embeddings.skip_empty
    )
    if vector is None:
        raise ValueError("every chunk's embedding was skipped (skip_empty)")
    return vector


def reference_vector(embeddings: OpenAIEmbeddings, text: str, answer: Any) -> list[float]:
    """Return what `embeddings.embed_documents([text])` returns when the API answers `answer`."""
    with _CAPTURE.answering(lambda body: answer):
        (vector,) = embeddings.embed_documents([text])
    return vector
