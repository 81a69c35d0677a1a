"""The LangChain reference path for Mistral embeddings: bodies and vectors as `MistralAIEmbeddings` has them.

`MistralAIEmbeddings.embed_documents([text])` posts `{"model", "input": [text]}` to
`/v1/embeddings` (one text is always one call: its token batching only groups several texts)
and returns `list(map(float, embedding))` of each answer's `data`. The class has no output
dimension setting, so a generic `dimensions` is refused. The class runs with HTTP clients whose
transport records what it sends and answers with what the batch answered, and with a stand-in
tokenizer (its own would be downloaded from Hugging Face, and only groups texts into calls).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final

import httpx
from langchain_mistralai.embeddings import MistralAIEmbeddings
from pydantic import SecretStr
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from agent.providers.embedding_common import CapturingTransport, embedding_settings
from agent.providers.mistral.reference import api_root
from agent.providers.settings import build_chat_model, rules_for

# The class's fields a batch carries: only the model (which the run names) shapes a body.
CARRIED: Final = frozenset[str]()
SETTING_RULES: Final = rules_for(
    MistralAIEmbeddings,
    no_effect=frozenset(
        {
            "client",
            "async_client",
            "mistral_api_key",
            "max_retries",
            "timeout",
            "wait_time",
            "max_concurrent_requests",
            "tokenizer",  # groups several texts into calls; a batch line holds one
        }
    ),
    endpoint={"endpoint": "base_url"},
    refused={},
    base_url=api_root,
)
# A tokenizer built here, without a download: it only groups several texts into calls.
_STAND_IN_TOKENIZER: Final = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
_BASE_URL: Final = "https://api.mistral.ai/v1/"
_CAPTURE: Final = CapturingTransport(httpx.Response)
_CLIENT: Final = httpx.Client(
    transport=httpx.MockTransport(_CAPTURE), base_url=_BASE_URL, trust_env=False
)
_ASYNC_CLIENT: Final = httpx.AsyncClient(
    transport=httpx.MockTransport(_CAPTURE), base_url=_BASE_URL, trust_env=False
)


def embeddings_model(model: str, params: Mapping[str, Any]) -> MistralAIEmbeddings:
    """Return the `MistralAIEmbeddings` whose `embed_documents` our batch lines reproduce.

    Raises:
        InputError: A setting is not one a batch carries (`dimensions` included), or the
            class rejects it.
    """
    settings = embedding_settings(MistralAIEmbeddings, params, None, "mistral")
    factory = functools.partial(
        MistralAIEmbeddings,
        model=model,
        api_key=SecretStr("unused-for-body-building"),
        client=_CLIENT,
        async_client=_ASYNC_CLIENT,
        tokenizer=_STAND_IN_TOKENIZER,
        max_retries=None,  # no retry decorator: the transport never fails
    )
    return build_chat_model(factory, settings, SETTING_RULES)


def request_body(embeddings: MistralAIEmbeddings, text: str) -> dict[str, Any]:
    """Return the body `embeddings.embed_documents([text])` posts for `text`."""

    def stand_in(body: dict[str, Any]) -> dict[str, Any]:
        return {"data": [{"embedding": [1.0, 0.0]} for _ in body.get("input") or [None]]}

    with _CAPTURE.answering(stand_in) as bodies:
        embeddings.embed_documents([text])
    (body,) = bodies
    return body


def reference_vectors(embeddings: MistralAIEmbeddings, text: str, answer: Any) -> list[list[float]]:
    """Return what `embeddings.embed_documents([text])` returns when the API answers `answer`."""
    with _CAPTURE.answering(lambda body: answer):
        return embeddings.embed_documents([text])
