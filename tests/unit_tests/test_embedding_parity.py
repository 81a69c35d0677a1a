"""Embeddings parity: our batch lines and vectors equal what the LangChain embeddings classes do.

For `OpenAIEmbeddings`, `MistralAIEmbeddings` and `GoogleGenerativeAIEmbeddings`, built by the
test as a user builds them and pointed at the emulator's realtime embeddings endpoints (through
a transport that records what goes over the wire), and hypothesis-generated texts (long ones
that chunk, for OpenAI with a small `embedding_ctx_length`), dimensions and settings:

1. the body of our line for a text is the body `embed_documents([text])` puts on the wire;
2. the vector we parse from a batch line holding the answer the emulator gave that body equals,
   as float32, what `embed_documents([text])` returned for it.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import httpx2
import numpy as np
import openai
import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from langchain_google_genai import GoogleGenerativeAIEmbeddings
from langchain_mistralai import MistralAIEmbeddings
from langchain_openai import OpenAIEmbeddings
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from agent.emulator import IN_PROCESS_BASE_URL, ManualClock, use_clock
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
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Wire:
    """What went over the wire: each request's JSON body and the JSON answer it got."""

    def __init__(self) -> None:
        """Start with nothing sent."""
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[Any] = []

    def record(self, request: Any, response: Any) -> None:
        """Keep a request's body and its response's JSON."""
        self.bodies.append(json.loads(request.read()))
        response.read()
        self.answers.append(response.json())


class _Recording2(httpx2.BaseTransport):
    """An httpx2 transport to the emulator that records the exchange (`Wire`)."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.inner = httpx2.WSGITransport(app=use_clock(ManualClock(ticking=True)))

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        self.wire.record(request, response)
        return response


class _Recording(httpx.BaseTransport):
    """The same for httpx (`MistralAIEmbeddings` sends through httpx)."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.inner = httpx.WSGITransport(app=use_clock(ManualClock(ticking=True)))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.wire.record(request, response)
        return response


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


@EXAMPLES
@given(
    text=TEXT,
    model=st.sampled_from(["text-embedding-3-small", "text-embedding-ada-002"]),
    params=OPENAI_SETTINGS,
)
@example(text="word, " * 40, model="text-embedding-3-small", params={"embedding_ctx_length": 7})
@example(text="a\\nb " * 9, model="text-embedding-ada-002", params={"embedding_ctx_length": 4})
@example(
    text="0=", model="text-embedding-3-small", params={"dimensions": 1, "embedding_ctx_length": 1}
)
def test_openai_lines_and_vectors_equal_openai_embeddings(
    text: str, model: str, params: dict[str, Any]
) -> None:
    if model.endswith("002"):
        params.pop("dimensions", None)  # only text-embedding-3 models take dimensions
    wire = Wire()
    realtime = OpenAIEmbeddings(
        model=model,
        api_key="sk-test",  # type: ignore[arg-type]
        base_url=f"{IN_PROCESS_BASE_URL}/openai/v1",
        http_client=httpx2.Client(transport=_Recording2(wire)),
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
        realtime.embed_documents([text])
        assert len(wire.bodies) > 1
        return
    try:
        vectors = realtime.embed_documents([text])
    except openai.BadRequestError:
        # OpenAI refuses an empty input (a batch line fails alike); the body is the same.
        assert wire.bodies == [line["body"]]
        return
    except ZeroDivisionError:
        # Chunk vectors that cancel out: the class's normalisation raises, so the batch
        # result fails as an answer realtime raises for, never a NaN vector.
        assert wire.bodies == [line["body"]]
        answer = {"custom_id": "r1", "response": {"status_code": 200, "body": wire.answers[0]}}
        parser = parser_for(provider, model, params, None, EMBEDDINGS)
        outcome = read_vector_outcome(parser, orjson.dumps(answer), "job-1")  # type: ignore[arg-type]
        assert outcome.vector is None and outcome.error is not None
        assert outcome.error["code"] == "invalid_response"
        assert "ZeroDivisionError" in outcome.error["message"]
        return

    assert wire.bodies == [line["body"]]
    assert line["url"] == "/v1/embeddings" and line["method"] == "POST"
    answer = {"custom_id": "r1", "response": {"status_code": 200, "body": wire.answers[0]}}
    assert _vector(provider, model, params, answer) == _float32(vectors[0])


# -- Mistral -----------------------------------------------------------------------


@EXAMPLES
@given(text=TEXT)
def test_mistral_lines_and_vectors_equal_mistral_embeddings(text: str) -> None:
    wire = Wire()
    realtime = MistralAIEmbeddings(
        model="mistral-embed",
        api_key="test",  # type: ignore[arg-type]
        # A client given to the class is used as it is: it carries the key header itself.
        client=httpx.Client(
            transport=_Recording(wire),
            base_url=f"{IN_PROCESS_BASE_URL}/mistral/v1/",
            headers={"Authorization": "Bearer test"},
        ),
        tokenizer=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
        max_retries=None,
    )
    provider = MistralProvider(emulated=True, base_url="")
    build = line_builder_for(provider, "mistral-embed", {}, None, EMBEDDINGS)
    line = orjson.loads(build(_request(text)))

    vectors = realtime.embed_documents([text])

    assert wire.bodies == [line["body"]]
    answer = {"custom_id": "r1", "response": {"status_code": 200, "body": wire.answers[0]}}
    assert _vector(provider, "mistral-embed", {}, answer) == _float32(vectors[0])


# -- Gemini ------------------------------------------------------------------------

GEMINI_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "dimensions": st.integers(min_value=1, max_value=48),
        "task_type": st.sampled_from(["CLUSTERING", "retrieval_query", "SEMANTIC_SIMILARITY"]),
    },
)


@EXAMPLES
@given(text=TEXT, params=GEMINI_SETTINGS)
def test_gemini_lines_and_vectors_equal_google_generative_ai_embeddings(
    text: str, params: dict[str, Any]
) -> None:
    model = "gemini-embedding-001"
    wire = Wire()
    own = dict(params)
    if "dimensions" in own:
        own["output_dimensionality"] = own.pop("dimensions")
    realtime = GoogleGenerativeAIEmbeddings(
        model=model,
        api_key="test",  # type: ignore[arg-type]
        base_url=f"{IN_PROCESS_BASE_URL}/gemini",
        # No CA bundle for a transport that never connects (google-genai loads it otherwise).
        client_args={"transport": _Recording2(wire), "verify": _NO_TLS, "ssl": _NO_TLS},
        **own,
    )
    provider = GeminiProvider(emulated=True, base_url="")
    build = line_builder_for(provider, model, params, None, EMBEDDINGS)
    line = orjson.loads(build(_request(text)))

    vectors = realtime.embed_documents([text])

    (sent,) = wire.bodies[0]["requests"]
    assert sent.pop("model") == f"models/{model}"  # a batch names its model once, in its URL
    assert line == {"key": "r1", "request": sent}
    (embedding,) = wire.answers[0]["embeddings"]
    answer = {"key": "r1", "response": {"embedding": embedding}}
    assert _vector(provider, model, params, answer) == _float32(vectors[0])
