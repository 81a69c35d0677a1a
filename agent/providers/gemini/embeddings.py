"""The LangChain reference path for Gemini embeddings: requests and vectors as `GoogleGenerativeAIEmbeddings` has them.

`GoogleGenerativeAIEmbeddings.embed_documents([text])` calls google-genai's
`models.embed_content`, which posts `{"requests": [EmbedContentRequest]}` to
`models/<model>:batchEmbedContents` (one text is always one call: the class's batching only
groups several texts). A batch line's `request` is that one `EmbedContentRequest`
(`content`, `taskType` — `RETRIEVAL_DOCUMENT` unless the class sets another —,
`outputDimensionality`) without its `model`, which the batch job names once, as chat lines
do. The vector is `list(values)` of the answer's embedding. A generic `dimensions` setting is
the class's `output_dimensionality`.

The class's google-genai client gets a transport that records what it sends and answers with
what the batch answered: no call can reach the network.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final

import httpx2
from langchain_google_genai import GoogleGenerativeAIEmbeddings
from pydantic import SecretStr

from agent.providers.embedding_common import CapturingTransport, embedding_settings
from agent.providers.gemini.reference import NO_TLS, VERTEX
from agent.providers.settings import HEADERS, build_chat_model, rules_for

# The class's fields a batch carries (the ones that shape a request).
CARRIED: Final = frozenset({"task_type", "output_dimensionality"})
SETTING_RULES: Final = rules_for(
    GoogleGenerativeAIEmbeddings,
    no_effect=frozenset(
        {
            "client",
            "google_api_key",
            "client_args",
            "api_version",  # which REST version realtime talks to; the request is the same
            "request_options",  # a field the class never reads
        }
    ),
    endpoint={"base_url": "base_url"},
    refused={
        "additional_headers": HEADERS,
        "vertexai": VERTEX,
        "project": VERTEX,
        "location": VERTEX,
        "credentials": VERTEX,
    },
)
_CAPTURE: Final = CapturingTransport(httpx2.Response)
# No CA bundle for a client that never connects (google-genai would load it, ~150 ms).
_CLIENT_ARGS: Final = {
    "transport": httpx2.MockTransport(_CAPTURE),
    "verify": NO_TLS,
    "ssl": NO_TLS,
}


def embeddings_model(model: str, params: Mapping[str, Any]) -> GoogleGenerativeAIEmbeddings:
    """Return the `GoogleGenerativeAIEmbeddings` whose `embed_documents` our lines reproduce.

    Raises:
        InputError: A setting is not one a batch carries, or the class rejects it.
    """
    settings = embedding_settings(
        GoogleGenerativeAIEmbeddings, params, "output_dimensionality", "gemini"
    )
    factory = functools.partial(
        GoogleGenerativeAIEmbeddings,
        model=model,
        api_key=SecretStr("unused-for-body-building"),
        client_args=_CLIENT_ARGS,
        vertexai=False,
    )
    return build_chat_model(factory, settings, SETTING_RULES)


def request_body(embeddings: GoogleGenerativeAIEmbeddings, text: str) -> dict[str, Any]:
    """Return the batch `request` for `text`: the one `EmbedContentRequest` realtime sends.

    Its `model` is left out: a batch job names the model once.
    """

    def stand_in(body: dict[str, Any]) -> dict[str, Any]:
        return {"embeddings": [{"values": [1.0, 0.0]} for _ in body.get("requests") or ()]}

    with _CAPTURE.answering(stand_in) as bodies:
        embeddings.embed_documents([text])
    (body,) = bodies
    (request,) = body["requests"]
    request.pop("model", None)
    return request  # type: ignore[no-any-return]


def reference_vectors(
    embeddings: GoogleGenerativeAIEmbeddings, text: str, response: Any
) -> list[list[float]]:
    """Return what `embed_documents([text])` returns when a batch line answered `response`.

    A batch line's `response` is a `SingleEmbedContentResponse` (`{"embedding": {"values"}}`);
    realtime's `batchEmbedContents` answers `{"embeddings": [embedding]}` for one text.
    """
    embedding = response.get("embedding") if isinstance(response, dict) else None
    answer = {"embeddings": [embedding] if embedding is not None else []}
    with _CAPTURE.answering(lambda body: answer):
        return embeddings.embed_documents([text])
