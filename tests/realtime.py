"""The realtime side of the parity tests: the real LangChain chat models on recording transports.

`ChatOpenAI`, `ChatMistralAI` and `ChatAnthropic` are built as a user builds them, with only their
HTTP client swapped for a mock transport that records each JSON body sent and answers with a
canned provider response (`OPENAI_RESPONSE`, ... or the test's own). Also the message sets the
parity tests share and the Message Batches batch object the `anthropic` SDK reads before it
fetches a results file.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import httpx2
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_mistralai import ChatMistralAI
from langchain_openai import ChatOpenAI

MESSAGE_SETS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Classify: my invoice is wrong"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Summarise the plot of Hamlet."},
    ],
    [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
    ],
]

CHAT_USAGE = {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}


def openai_response(
    message: dict[str, Any], finish_reason: str, usage: dict[str, Any] = CHAT_USAGE
) -> dict[str, Any]:
    """Return a Chat Completions response whose one choice is the assistant `message`."""
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, "annotations": [], **message},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": dict(usage),
        "service_tier": "default",
        "system_fingerprint": "fp_123",
    }


def mistral_response(
    message: dict[str, Any], finish_reason: str, usage: dict[str, Any] = CHAT_USAGE
) -> dict[str, Any]:
    """Return a Mistral chat completion whose one choice is the assistant `message`."""
    return {
        "id": "cmpl-e5cc70bb28c444948073e77776eb30ef",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "mistral-small-latest",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "prefix": False, **message},
                "finish_reason": finish_reason,
            }
        ],
        "usage": dict(usage),
    }


def anthropic_response(
    content: list[dict[str, Any]],
    stop_reason: str,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return an Anthropic message with the content blocks `content`."""
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 40, "output_tokens": 12, "service_tier": "batch"},
    }


# The plain-text answers of the parity tests, with every usage detail the SDKs read.
OPENAI_RESPONSE = openai_response(
    {"content": "Billing issue."},
    "stop",
    {
        "prompt_tokens": 21,
        "completion_tokens": 3,
        "total_tokens": 24,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
)
MISTRAL_RESPONSE = mistral_response(
    {"content": "Billing issue.", "tool_calls": None},
    "length",
    {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20},
)
ANTHROPIC_RESPONSE = anthropic_response(
    [{"type": "text", "text": "Billing issue."}],
    "end_turn",
    {
        "input_tokens": 21,
        "output_tokens": 3,
        "cache_creation_input_tokens": 4,
        "cache_read_input_tokens": 7,
        "service_tier": "batch",
    },
)


def recording_openai(
    response: dict[str, Any], ctor: dict[str, Any], model: str = "gpt-4o-mini"
) -> tuple[ChatOpenAI, list[dict[str, Any]]]:
    """Return a Chat Completions `ChatOpenAI` answering `response`, and the bodies it sends.

    Args:
        response: The chat completion every call gets back.
        ctor: Constructor parameters (the run context's).
        model: The model the chat model is built for.
    """
    sent: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json=response)

    llm = ChatOpenAI(
        model=model,
        api_key="sk-test",
        use_responses_api=False,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        **ctor,
    )
    return llm, sent


def recording_mistral(
    response: dict[str, Any], ctor: dict[str, Any], model: str = "mistral-small-latest"
) -> tuple[ChatMistralAI, list[dict[str, Any]]]:
    """Return a `ChatMistralAI` answering `response`, and the bodies it sends.

    Args:
        response: The chat completion every call gets back.
        ctor: Constructor parameters (the run context's).
        model: The model the chat model is built for.
    """
    sent: list[dict[str, Any]] = []

    # langchain-mistralai talks plain httpx, not httpx2.
    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=response)

    client = httpx.Client(
        base_url="https://api.mistral.ai/v1", transport=httpx.MockTransport(handler)
    )
    llm = ChatMistralAI(model=model, api_key="test", client=client, **ctor)  # type: ignore[arg-type]
    return llm, sent


def recording_anthropic(
    response: dict[str, Any],
    ctor: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    model: str = "claude-haiku-4-5",
) -> tuple[ChatAnthropic, list[dict[str, Any]]]:
    """Return a `ChatAnthropic` answering `response`, and the Messages bodies it sends.

    Args:
        response: The message every call gets back.
        ctor: Constructor parameters (the run context's).
        monkeypatch: Swaps ChatAnthropic's HTTP client factory for this test only.
        model: The model the chat model is built for.
    """
    import langchain_anthropic.chat_models as chat_models

    sent: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/messages"
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json=response)

    def client(**kwargs: Any) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(handler), base_url=kwargs["base_url"])

    # ChatAnthropic builds its SDK client on an httpx2 client from this factory.
    monkeypatch.setattr(chat_models, "_get_default_httpx_client", client)
    llm = ChatAnthropic(model=model, api_key="sk-ant-test", **ctor)  # type: ignore[arg-type]
    return llm, sent


def invoke_recorded(
    recorded: tuple[BaseChatModel, list[dict[str, Any]]],
    messages: list[dict[str, Any]],
    call: dict[str, Any],
) -> tuple[dict[str, Any], AIMessage]:
    """`.invoke()` a recording chat model once; return the one body it sent and its message.

    Args:
        recorded: A `recording_*` chat model and its list of sent bodies.
        messages: The conversation.
        call: Per-call parameters (the request record's).
    """
    llm, sent = recorded
    message = llm.invoke(messages, **call)
    assert isinstance(message, AIMessage)
    (body,) = sent
    return body, message


def message_batch(batch_id: str, processing_status: str = "ended") -> dict[str, Any]:
    """Return a Message Batches batch object: one request succeeded, results at files.invalid."""
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": processing_status,
        "request_counts": {
            "processing": 0,
            "succeeded": 1,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        },
        "created_at": "2026-11-22T10:00:00.000000Z",
        "expires_at": "2026-11-23T10:00:00.000000Z",
        "ended_at": "2026-11-22T10:10:00.000000Z",
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": f"https://files.invalid/v1/messages/batches/{batch_id}/results",
    }


def gemini_response(
    parts: list[dict[str, Any]],
    finish_reason: str = "STOP",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a `generateContent` answer whose one candidate holds `parts`."""
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": finish_reason,
                "index": 0,
            }
        ],
        "usageMetadata": usage
        or {"promptTokenCount": 40, "candidatesTokenCount": 12, "totalTokenCount": 52},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-abc123",
    }


GEMINI_RESPONSE = gemini_response(
    [{"text": "Billing issue."}],
    "STOP",
    {
        "promptTokenCount": 21,
        "candidatesTokenCount": 3,
        "thoughtsTokenCount": 6,
        "cachedContentTokenCount": 8,
        "totalTokenCount": 30,
    },
)


def recording_gemini(
    response: dict[str, Any], ctor: dict[str, Any], model: str = "gemini-2.5-flash"
) -> tuple[Any, list[dict[str, Any]]]:
    """Return a `ChatGoogleGenerativeAI` answering `response`, and the request bodies it sends.

    Each recorded body gets the model it was sent to under `"_model"` (it travels in the URL,
    `.../models/{model}:generateContent`).

    Args:
        response: The `generateContent` answer every call gets back.
        ctor: Constructor parameters (the run context's).
        model: The model the chat model is built for.
    """
    from langchain_google_genai import ChatGoogleGenerativeAI

    sent: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        assert path.endswith(":generateContent"), path
        body = json.loads(request.content)
        body["_model"] = path.rsplit("/", 1)[-1].removesuffix(":generateContent")
        sent.append(body)
        return httpx2.Response(200, json=response)

    # google-genai builds its httpx2 client with `client_args`: the transport is all we swap,
    # with a TLS context that loads no CA bundle (300 ms a model otherwise; nothing is sent).
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    llm = ChatGoogleGenerativeAI(
        model=model,
        api_key="test-key",
        client_args={"transport": httpx2.MockTransport(handler), "verify": tls, "ssl": tls},
        **ctor,
    )
    return llm, sent
