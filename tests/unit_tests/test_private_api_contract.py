"""The private LangChain and SDK names batch-agent calls, and what happens when one is gone.

Batch lines and parsed answers equal realtime `.invoke()` because they are made by the chat
model's own private methods (`_get_request_payload`, `_create_chat_result`, ...) and the SDKs'
private helpers. Two promises follow:

- every such name exists with the parameters we call it with (this list is the contract; the
  version ranges in pyproject.toml are narrowed to the releases it passed on);
- a release that renamed one stops a run while planning, before anything is uploaded: the
  answer parser is built and tried then, not first at collect, after the batch was paid for.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_mistralai import ChatMistralAI
from langchain_openai.chat_models.base import BaseChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent.context import Context
from agent.emulator import list_jobs, read_access_log
from agent.graph import build_graph
from agent.requests import InputError

# (module, attribute path, parameters in order; None: a property, read not called).
CONTRACT: list[tuple[str, str, list[str] | None]] = [
    # langchain-openai
    ("langchain_openai", "ChatOpenAI._get_request_payload", ["self", "input_", "stop", "kwargs"]),
    (
        "langchain_openai",
        "ChatOpenAI._create_chat_result",
        ["self", "response", "generation_info"],
    ),
    ("langchain_openai", "ChatOpenAI._use_responses_api", ["self", "payload"]),
    ("langchain_openai", "ChatOpenAI._default_params", None),
    ("langchain_openai.chat_models.base", "_model_prefers_responses_api", ["model_name"]),
    # openai
    ("openai._models", "construct_type", ["value", "type_", "metadata"]),
    (
        "openai.lib._parsing._completions",
        "parse_chat_completion",
        ["response_format", "input_tools", "chat_completion"],
    ),
    ("openai.lib._parsing._completions", "type_to_response_format_param", ["response_format"]),
    ("openai.lib._parsing._completions", "validate_input_tools", ["tools"]),
    ("openai.lib._parsing._completions", "maybe_parse_content", ["response_format", "message"]),
    # The Responses API (agent.providers.openai.responses)
    (
        "langchain_openai.chat_models.base",
        "_construct_lc_result_from_responses_api",
        ["response", "schema", "metadata", "output_version"],
    ),
    ("openai.lib._parsing._responses", "type_to_text_format_param", ["type_"]),
    # What a failed batched call raises (agent.providers.*.realtime_errors): the integrations'
    # own re-raise of an SDK error, and Anthropic's status -> class choice
    ("langchain_openai.chat_models.base", "_handle_openai_bad_request", ["e"]),
    ("langchain_openai.chat_models.base", "_handle_openai_api_error", ["e"]),
    ("langchain_anthropic.chat_models", "_handle_anthropic_bad_request", ["e"]),
    ("langchain_anthropic.chat_models", "_handle_anthropic_api_error", ["e"]),
    ("anthropic._error_classes", "make_status_error", ["err_msg", "body", "response"]),
    ("langchain_google_genai.chat_models", "_handle_client_error", ["e", "request"]),
    ("langchain_google_genai.chat_models", "_handle_server_error", ["e"]),
    # langchain-mistralai
    ("langchain_mistralai", "ChatMistralAI._create_message_dicts", ["self", "messages", "stop"]),
    ("langchain_mistralai", "ChatMistralAI._create_chat_result", ["self", "response"]),
    ("langchain_mistralai", "ChatMistralAI._client_params", None),
    # langchain-anthropic and anthropic
    (
        "langchain_anthropic",
        "ChatAnthropic._get_request_payload",
        ["self", "input_", "stop", "kwargs"],
    ),
    (
        "langchain_anthropic",
        "ChatAnthropic._format_output",
        ["self", "data", "generation_info", "kwargs"],
    ),
    ("langchain_anthropic._sdk_compat", "_unsupported_sampling_params", []),
    ("anthropic._models", "construct_type", ["value", "type_", "metadata"]),
    # langchain-google-genai and google-genai (agent.providers.gemini)
    (
        "langchain_google_genai",
        "ChatGoogleGenerativeAI._prepare_request",
        [
            "self",
            "messages",
            "stop",
            "tools",
            "functions",
            "safety_settings",
            "tool_config",
            "tool_choice",
            "generation_config",
            "cached_content",
            "kwargs",
        ],
    ),
    ("langchain_google_genai", "ChatGoogleGenerativeAI._supports_code_execution", None),
    (
        "langchain_google_genai.chat_models",
        "_response_to_result",
        ["response", "stream", "prev_usage"],
    ),
    ("langchain_google_genai.chat_models", "_is_gemini_3_or_later", ["model_name"]),
    (
        "google.genai.batches",
        "_InlinedRequest_to_mldev",
        ["api_client", "from_object", "parent_object"],
    ),
    (
        "google.genai.models",
        "_GenerateContentResponse_from_mldev",
        ["from_object", "parent_object", "root_object"],
    ),
    ("google.genai.types", "GenerateContentResponse._from_response", ["cls", "response", "kwargs"]),
    ("google.genai._common", "convert_to_dict", ["obj", "convert_keys"]),
    ("google.genai._common", "encode_unserializable_types", ["data"]),
    ("google.genai._common", "recursive_dict_update", ["target_dict", "update_dict"]),
    # google-genai's API client, reached as `Client._api_client` (checked below): the raw batch
    # operation (its `batchStats`, which `BatchJob` drops) and the streamed responses file
    (
        "google.genai._api_client",
        "BaseApiClient.request",
        ["self", "http_method", "path", "request_dict", "http_options"],
    ),
    (
        "google.genai._api_client",
        "BaseApiClient._build_request",
        ["self", "http_method", "path", "request_dict", "http_options"],
    ),
    # Embeddings (agent.providers.*.embeddings): how OpenAIEmbeddings combines a long text's
    # chunk vectors, and how the SDK decodes a base64 answer
    (
        "langchain_openai.embeddings.base",
        "_process_batched_chunked_embeddings",
        ["num_texts", "tokens", "batched_embeddings", "indices", "skip_empty"],
    ),
    ("openai.lib._parsing._embeddings", "parse_embedding_response", ["obj", "encoding_format"]),
    # pydantic: attribute docstrings copied into the state's channel types (agent.state), which
    # is how Studio's state schema gets its field descriptions
    ("pydantic._internal._docs_extraction", "extract_docstrings_from_cls", ["cls", "use_inspect"]),
    # langchain-core
    (
        "langchain_core.language_models.chat_models",
        "_update_message_content_to_blocks",
        ["message", "output_version"],
    ),
]


def _resolve(module: str, path: str) -> Any:
    owner: Any = importlib.import_module(module)
    for part in path.split("."):
        # `getattr_static` finds a property on the class without calling it.
        owner = inspect.getattr_static(owner, part)
    # A classmethod is checked as the function it wraps (`cls` first).
    return owner.__func__ if isinstance(owner, classmethod) else owner


@pytest.mark.parametrize(
    ("module", "path", "parameters"), CONTRACT, ids=[f"{m}:{p}" for m, p, _ in CONTRACT]
)
def test_private_name_exists_with_the_parameters_we_pass(
    module: str, path: str, parameters: list[str] | None
) -> None:
    target = _resolve(module, path)
    if parameters is None:
        assert isinstance(target, property), f"{module}.{path} is no longer a property"
        return
    assert callable(target), f"{module}.{path} is not callable"
    assert list(inspect.signature(target).parameters) == parameters


def test_the_genai_client_keeps_its_api_client_where_the_gemini_provider_reads_it() -> None:
    """`GeminiProvider` reads `Client._api_client` (status as raw JSON, streamed downloads)."""
    from google import genai
    from google.genai._api_client import BaseApiClient, HttpRequest

    client = genai.Client(api_key="contract-check", vertexai=False)
    api_client = client._api_client
    assert isinstance(api_client, BaseApiClient)
    built = api_client._build_request("get", "files/x:download?alt=media", {})
    assert isinstance(built, HttpRequest)
    assert built.url.endswith("/v1/files/x:download?alt=media")
    assert built.headers["x-goog-api-key"] == "contract-check"
    assert {"url", "headers", "timeout"} <= set(vars(built))


def test_tiktoken_finds_the_vocabulary_written_where_its_cache_looks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """`offline_tokens` writes tiktoken's download into the cache `read_file_cached` reads.

    With the network refused, tiktoken only finds `cl100k_base` in that cache (its file name
    and hash check are tiktoken's own).
    """
    import tiktoken.load
    import tiktoken.registry

    from agent.providers.openai import offline_tokens

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(offline_tokens, "_done", set())
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})

    def no_network(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    encoding = offline_tokens.encoding_for_model("text-embedding-3-small")
    assert encoding.name == "cl100k_base"
    assert encoding.encode_ordinary("hello world") == [15339, 1917]


# A private method of each reference parser, taken away as a release renaming it would.
VANISHING = [
    ("openai", BaseChatOpenAI, "_create_chat_result"),
    ("mistral", ChatMistralAI, "_create_chat_result"),
    ("anthropic", ChatAnthropic, "_format_output"),
]


@pytest.mark.parametrize(("provider", "owner", "name"), VANISHING, ids=[v[0] for v in VANISHING])
def test_a_vanished_parser_method_stops_the_run_before_any_upload(
    provider: str, owner: type, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(owner, name)
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    records = [{"id": "t1", "prompt": "Classify: my invoice is wrong"}]
    with pytest.raises(InputError) as info:
        graph.invoke(
            {"requests": records},
            {"configurable": {"thread_id": "t"}},
            context=Context(provider=provider),
        )
    message = str(info.value)
    assert name in message and "nothing was uploaded" in message
    assert read_access_log() == [] and list_jobs() == []  # no upload, no create
