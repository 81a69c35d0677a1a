"""Embeddings parity: our batch lines and vectors equal what the LangChain embeddings classes do.

For `OpenAIEmbeddings`, `MistralAIEmbeddings` and `GoogleGenerativeAIEmbeddings`, built by the
test as a user builds them (with an HTTP transport the test injects, the way the SDKs send),
and hypothesis-generated texts (long ones that chunk, for OpenAI with a small
`embedding_ctx_length`), dimensions and settings:

1. the body of our line for a text is the body `embed_documents([text])` puts on the wire;
2. the vector we parse from a batch line holding the emulator's answer to that body equals,
   as float32, what `embed_documents([text])` returns when the API answers the same.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import numpy as np
import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from langchain_google_genai import GoogleGenerativeAIEmbeddings
from langchain_mistralai import MistralAIEmbeddings
from langchain_openai import OpenAIEmbeddings
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from agent.emulator.embedding_answers import gemini_answer, mistral_answer, openai_answer
from agent.endpoints import EMBEDDINGS
from agent.providers.base import line_builder_for, parser_for, read_vector_outcome
from agent.providers.gemini import GeminiProvider
from agent.providers.mistral import MistralProvider
from agent.providers.openai import OpenAIProvider
from agent.requests import BatchRequest, InputError

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=120
) | st.lists(st.sampled_from(["alpha", "beta\n", "gamma,", "δέλτα", "42", " "]), max_size=60).map(
    "".join
)
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class Wire:
    """An HTTP transport handler: records each request body, answers with `answer(body)`."""

    def __init__(self, answer: Callable[[dict[str, Any]], Any], response: Any) -> None:
        """Answer with `answer`, as the library's `Response` class."""
        self.answer = answer
        self.response = response
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        """Record the body; answer 200 with `answer(body)`."""
        body = json.loads(request.read())
        self.bodies.append(body)
        return self.response(200, json=self.answer(body))


def _request(text: str) -> BatchRequest:
    return BatchRequest("r1", [{"role": "user", "content": text}], {})


def _vector(provider: Any, model: str, params: dict[str, Any], line: dict[str, Any]) -> bytes:
    parser = parser_for(provider, model, params, None, EMBEDDINGS)
    outcome = read_vector_outcome(parser, orjson.dumps(line), "job-1")  # type: ignore[arg-type]
    assert outcome.error is None, outcome.error
    assert outcome.vector is not None
    return outcome.vector


def _float32(vector: list[float]) -> bytes:
    return np.asarray(np.float32(vector), dtype="<f4").tobytes()


# -- OpenAI ------------------------------------------------------------------------

OPENAI_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "dimensions": st.integers(min_value=1, max_value=48),
        "embedding_ctx_length": st.integers(min_value=1, max_value=12),
        "check_embedding_ctx_length": st.booleans(),
        "chunk_size": st.integers(min_value=1, max_value=200),
        "model_kwargs": st.sampled_from([{"user": "someone"}, {"encoding_format": "float"}]),
    },
)


def _openai_answer(body: dict[str, Any]) -> dict[str, Any]:
    answer, _ = openai_answer(body)
    return answer


@EXAMPLES
@given(
    text=TEXT,
    model=st.sampled_from(["text-embedding-3-small", "text-embedding-ada-002"]),
    params=OPENAI_SETTINGS,
)
@example(text="word, " * 40, model="text-embedding-3-small", params={"embedding_ctx_length": 7})
@example(text="a\nb " * 9, model="text-embedding-ada-002", params={"embedding_ctx_length": 4})
def test_openai_lines_and_vectors_equal_openai_embeddings(
    text: str, model: str, params: dict[str, Any]
) -> None:
    if model.endswith("002"):
        params.pop("dimensions", None)  # only text-embedding-3 models take dimensions
    wire = Wire(_openai_answer, httpx2.Response)
    realtime = OpenAIEmbeddings(
        model=model,
        api_key="sk-test",  # type: ignore[arg-type]
        http_client=httpx2.Client(transport=httpx2.MockTransport(wire)),
        max_retries=0,
        **params,
    )
    provider = OpenAIProvider(emulated=True, base_url="")
    build = line_builder_for(provider, model, params, None, EMBEDDINGS)
    try:
        line = orjson.loads(build(_request(text)))
    except InputError as exc:
        # Refused only where embed_documents makes more than one call for the text.
        assert "API calls" in str(exc)
        wire.answer = _openai_answer
        realtime.embed_documents([text])
        assert len(wire.bodies) > 1
        return
    if text == "" and params.get("check_embedding_ctx_length", True):
        wire.answer = lambda body: _openai_answer({**body, "input": " "})  # OpenAI refuses ""
    vectors = realtime.embed_documents([text])

    assert len(wire.bodies) == 1
    assert line["body"] == wire.bodies[0]
    assert line["url"] == "/v1/embeddings" and line["method"] == "POST"
    answer = wire.answer(line["body"])
    vector = _vector(
        provider,
        model,
        params,
        {"custom_id": "r1", "response": {"status_code": 200, "body": answer}},
    )
    assert vector == _float32(vectors[0])


# -- Mistral -----------------------------------------------------------------------


@EXAMPLES
@given(text=TEXT)
def test_mistral_lines_and_vectors_equal_mistral_embeddings(text: str) -> None:
    wire = Wire(lambda body: mistral_answer(body, None)[0], httpx.Response)
    realtime = MistralAIEmbeddings(
        model="mistral-embed",
        api_key="test",  # type: ignore[arg-type]
        client=httpx.Client(
            transport=httpx.MockTransport(wire), base_url="https://api.mistral.ai/v1/"
        ),
        tokenizer=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
        max_retries=None,
    )
    provider = MistralProvider(emulated=True, base_url="")
    line = orjson.loads(
        line_builder_for(provider, "mistral-embed", {}, None, EMBEDDINGS)(_request(text))
    )

    vectors = realtime.embed_documents([text])

    assert line["body"] == wire.bodies[0]
    answer, _ = mistral_answer(line["body"], "mistral-embed")
    vector = _vector(
        provider,
        "mistral-embed",
        {},
        {"custom_id": "r1", "response": {"status_code": 200, "body": answer}},
    )
    assert vector == _float32(vectors[0])


# -- Gemini ------------------------------------------------------------------------

GEMINI_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "dimensions": st.integers(min_value=1, max_value=48),
        "task_type": st.sampled_from(["CLUSTERING", "retrieval_query", "SEMANTIC_SIMILARITY"]),
    },
)


def _gemini_realtime_answer(body: dict[str, Any]) -> dict[str, Any]:
    embeddings = []
    for request in body["requests"]:
        answer, _ = gemini_answer(request, request["model"].removeprefix("models/"))
        embeddings.append(answer["embedding"])
    return {"embeddings": embeddings}


@EXAMPLES
@given(text=TEXT, params=GEMINI_SETTINGS)
def test_gemini_lines_and_vectors_equal_google_generative_ai_embeddings(
    text: str, params: dict[str, Any]
) -> None:
    model = "gemini-embedding-001"
    wire = Wire(_gemini_realtime_answer, httpx2.Response)
    own = dict(params)
    if "dimensions" in own:
        own["output_dimensionality"] = own.pop("dimensions")
    realtime = GoogleGenerativeAIEmbeddings(
        model=model,
        api_key="test",  # type: ignore[arg-type]
        client_args={"transport": httpx2.MockTransport(wire), "verify": _NO_TLS, "ssl": _NO_TLS},
        **own,
    )
    provider = GeminiProvider(emulated=True, base_url="")
    line = orjson.loads(line_builder_for(provider, model, params, None, EMBEDDINGS)(_request(text)))

    vectors = realtime.embed_documents([text])

    (sent,) = wire.bodies[0]["requests"]
    assert sent.pop("model") == f"models/{model}"  # a batch names its model once, in its URL
    assert line == {"key": "r1", "request": sent}
    answer, _ = gemini_answer(line["request"], model)
    vector = _vector(provider, model, params, {"key": "r1", "response": answer})
    assert vector == _float32(vectors[0])
