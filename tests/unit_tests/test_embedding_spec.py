"""`embeddings_spec`: a user's LangChain embeddings object as the plain JSON a batch takes.

What the spec says must rebuild the very lines the object would send: a line built from the
spec equals the body the object itself puts on the wire (through an injected transport). The
API key is never in the spec; settings a batch cannot reproduce are refused by name.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import httpx2
import orjson
import pytest
from langchain_google_genai import GoogleGenerativeAIEmbeddings
from langchain_mistralai import MistralAIEmbeddings
from langchain_openai import AzureOpenAIEmbeddings, OpenAIEmbeddings
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from agent.endpoints import EMBEDDINGS
from agent.providers.base import line_builder_for
from agent.providers.embedding_spec import embeddings_spec
from agent.providers.gemini import GeminiProvider
from agent.providers.mistral import MistralProvider
from agent.providers.openai import OpenAIProvider
from agent.requests import BatchRequest

KEY = "sk-secret-key-never-in-a-spec"
TEXT = "a text that is long enough to be split into several chunks of tokens"
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _sent(bodies: list[dict[str, Any]], response: Any = httpx2.Response) -> Any:
    """Return a transport handler recording each body and answering one small vector per input.

    `response` is the HTTP library's `Response` (httpx for `MistralAIEmbeddings`).
    """

    def handler(request: Any) -> Any:
        body = json.loads(request.read())
        bodies.append(body)
        if "requests" in body:  # Gemini's batchEmbedContents
            return response(200, json={"embeddings": [{"values": [1.0]}]})
        count = len(body["input"]) if isinstance(body["input"], list) else 1
        data = [{"object": "embedding", "index": i, "embedding": [1.0]} for i in range(count)]
        return response(200, json={"object": "list", "data": data, "model": body["model"]})

    return handler


def _line(provider: Any, spec: dict[str, Any]) -> dict[str, Any]:
    build = line_builder_for(provider, spec["model"], spec["params"], None, EMBEDDINGS)
    request = BatchRequest("r1", [{"role": "user", "content": TEXT}], {})
    return orjson.loads(build(request))  # type: ignore[no-any-return]


def test_an_openai_object_rebuilds_the_body_it_sends() -> None:
    bodies: list[dict[str, Any]] = []
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-large",
        dimensions=256,
        embedding_ctx_length=5,
        api_key=KEY,  # type: ignore[arg-type]
        max_retries=9,
        http_client=httpx2.Client(transport=httpx2.MockTransport(_sent(bodies))),
    )

    spec = embeddings_spec(embeddings)
    embeddings.embed_documents([TEXT])

    assert spec == {
        "provider": "openai",
        "model": "text-embedding-3-large",
        "params": {"dimensions": 256, "embedding_ctx_length": 5},
    }
    assert KEY not in json.dumps(spec)
    assert _line(OpenAIProvider(emulated=True, base_url=""), spec)["body"] == bodies[0]


def test_a_mistral_object_rebuilds_the_body_it_sends() -> None:
    bodies: list[dict[str, Any]] = []
    embeddings = MistralAIEmbeddings(
        model="mistral-embed",
        api_key=KEY,  # type: ignore[arg-type]
        client=httpx.Client(
            transport=httpx.MockTransport(_sent(bodies, httpx.Response)),
            base_url="https://api.mistral.ai/v1/",
        ),
        tokenizer=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
    )

    spec = embeddings_spec(embeddings)
    embeddings.embed_documents([TEXT])

    assert spec == {"provider": "mistral", "model": "mistral-embed", "params": {}}
    assert _line(MistralProvider(emulated=True, base_url=""), spec)["body"] == bodies[0]


def test_a_gemini_object_rebuilds_the_request_it_sends() -> None:
    bodies: list[dict[str, Any]] = []
    embeddings = GoogleGenerativeAIEmbeddings(
        model="gemini-embedding-001",
        api_key=KEY,  # type: ignore[arg-type]
        task_type="clustering",
        output_dimensionality=96,
        client_args={
            "transport": httpx2.MockTransport(_sent(bodies)),
            "verify": _NO_TLS,
            "ssl": _NO_TLS,
        },
    )

    spec = embeddings_spec(embeddings)
    embeddings.embed_documents([TEXT])

    assert spec["params"] == {"task_type": "clustering", "output_dimensionality": 96}
    assert KEY not in json.dumps(spec)
    (sent,) = bodies[0]["requests"]
    sent.pop("model")
    assert _line(GeminiProvider(emulated=True, base_url=""), spec)["request"] == sent


def test_the_endpoint_is_carried_as_the_context_fields() -> None:
    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small",
        api_key=KEY,  # type: ignore[arg-type]
        base_url="https://proxy.example/v1",
        organization="org-1",
    )

    spec = embeddings_spec(embeddings)

    assert spec["base_url"] == "https://proxy.example/v1" and spec["organization"] == "org-1"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (
            lambda: OpenAIEmbeddings(
                model="text-embedding-3-small", api_key=KEY, default_headers={"x-key": "v"}
            ),
            "default_headers",
        ),
        (
            lambda: GoogleGenerativeAIEmbeddings(
                model="gemini-embedding-001", api_key=KEY, additional_headers={"x": "y"}
            ),
            "additional_headers",
        ),
    ],
)
def test_what_a_batch_cannot_reproduce_is_refused_by_name(make: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words) as info:
        embeddings_spec(make())
    assert "x-key" not in str(info.value) and KEY not in str(info.value)


def test_other_objects_are_refused() -> None:
    azure = AzureOpenAIEmbeddings(
        model="text-embedding-3-small",
        api_key=KEY,  # type: ignore[arg-type]
        azure_endpoint="https://example.openai.azure.com",
        api_version="2024-02-01",
    )
    with pytest.raises(TypeError, match="Azure"):
        embeddings_spec(azure)
    with pytest.raises(TypeError, match="not an embeddings class"):
        embeddings_spec(object())
