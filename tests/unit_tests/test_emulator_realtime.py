"""The emulator's realtime chat endpoints answer what the batch answers for the same request.

For each provider the LangChain chat model is built twice: as a notebook hands it to `run_batch`
(no key: the batch goes to the in-process emulator), and pointed at the in-process emulator's
realtime endpoint (`agent.emulator.realtime_routes`). `.invoke()` on the second must return the
AIMessage the batch run returns, ids aside. Also: the `realtime_429_rate` knob, the stream
refusal, and invalid bodies answered with the batch line's error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from langchain_core.runnables import Runnable

from agent import run_batch
from agent.emulator import IN_PROCESS_BASE_URL, ManualClock, use_clock
from tests.emulated_models import MODELS, PROVIDERS, batch_model, comparable, realtime_model

CONVERSATIONS: dict[str, list[tuple[str, str]]] = {
    "plain": [("user", "Classify: my invoice is wrong")],
    "system": [("system", "You are terse."), ("user", "Summarise the plot of Hamlet.")],
    "turns": [
        ("system", "Answer in French."),
        ("user", "Hello"),
        ("assistant", "Bonjour"),
        ("user", "How are you?"),
    ],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "celsius": {"type": "boolean"}},
            "required": ["city"],
        },
    },
}
LABEL_SCHEMA = {
    "title": "Label",
    "description": "A support ticket's label.",
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["billing", "bug", "other"]},
        "confidence": {"type": "number"},
    },
    "required": ["label", "confidence"],
}


def _bound(provider: str, llm: Any, kind: str) -> Runnable[Any, Any]:
    """`llm` as the case `kind` uses it: plain, forced to call a tool, or structured."""
    if kind == "tool":
        # Each provider's spelling of "call this tool".
        choice = "any" if provider == "mistral" else "get_weather"
        return llm.bind_tools([WEATHER_TOOL], tool_choice=choice)  # type: ignore[no-any-return]
    if kind == "structured":
        return llm.with_structured_output(LABEL_SCHEMA, include_raw=True)  # type: ignore[no-any-return]
    return llm  # type: ignore[no-any-return]


def _batch_answer(provider: str, kind: str, messages: list[tuple[str, str]]) -> Any:
    """Run one request through `run_batch` on the emulator; return what it gives for it."""
    results = run_batch(
        [{"id": "r", "messages": [{"role": r, "content": c} for r, c in messages]}],
        model=_bound(provider, batch_model(provider), kind),
        poll_interval_seconds=0.1,
        poll_backoff=1.0,
    )
    assert results.status == "completed", results.status
    (result,) = results
    assert result.ok, result.error
    return result.parsed if kind == "structured" else result.message


CASES = [
    (provider, kind, conversation)
    for provider in PROVIDERS
    for kind, conversation in (
        ("plain", "plain"),
        ("plain", "system"),
        ("plain", "turns"),
        ("tool", "plain"),
        ("structured", "plain"),
    )
]


@pytest.mark.parametrize(("provider", "kind", "conversation"), CASES)
def test_realtime_invoke_returns_the_batch_answer(
    provider: str,
    kind: str,
    conversation: str,
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = CONVERSATIONS[conversation]
    batch = _batch_answer(provider, kind, messages)
    llm = realtime_model(provider, isolated_env, emulator_clock, monkeypatch)
    realtime = _bound(provider, llm, kind).invoke(messages)
    if kind == "structured":
        assert realtime["parsing_error"] is None and batch["parsing_error"] is None
        assert realtime["parsed"] == batch["parsed"]
        raw = comparable(realtime["raw"], provider, "realtime")
        assert raw == comparable(batch["raw"], provider, "batch")
        return
    assert comparable(realtime, provider, "realtime") == comparable(batch, provider, "batch")
    if kind == "tool":
        (call,) = realtime.tool_calls
        assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    else:
        assert realtime.content == f"Emulated reply to: {messages[-1][1]}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_realtime_ids_are_deterministic(
    provider: str,
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    llm = realtime_model(provider, isolated_env, emulator_clock, monkeypatch)
    first, second = (llm.invoke("Same body twice") for _ in range(2))
    assert first.response_metadata.get("id") == second.response_metadata.get("id")
    assert first.content == second.content == "Emulated reply to: Same body twice"


# The 429 each provider's SDK raises, and the retry-after header its 429 carries (if any).
RATE_LIMITED = {
    "openai": ("OpenAIRateLimitError", "1"),
    "mistral": ("HTTPStatusError", None),
    "anthropic": ("AnthropicRateLimitError", "1"),
    "gemini": ("GoogleRateLimitError", None),
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_realtime_429_rate_answers_rate_limit_errors(
    provider: str,
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "realtime_429_rate=1")
    llm = realtime_model(provider, isolated_env, emulator_clock, monkeypatch, max_retries=0)
    with pytest.raises(Exception) as raised:
        llm.invoke("Classify: my invoice is wrong")
    assert type(raised.value).__name__ == RATE_LIMITED[provider][0], repr(raised.value)
    assert "429" in str(raised.value) or getattr(raised.value, "status_code", None) == 429
    # The raw answer: the provider's error shape and retry-after header.
    response = _post(provider, isolated_env, emulator_clock, _body(provider, "Hello"))
    assert response.status_code == 429
    assert response.headers.get("retry-after") == RATE_LIMITED[provider][1]
    # Batch routes never see the knob.
    listing = {"gemini": "/gemini/v1beta/batches", "anthropic": "/anthropic/v1/messages/batches"}
    path = listing.get(provider, f"/{provider}/v1/files")
    assert _client(isolated_env, emulator_clock).get(path, headers=_auth(provider)).status_code == (
        200
    )


def test_realtime_429_rate_draws_from_the_seed(
    isolated_env: Path, emulator_clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "realtime_429_rate=0.5,seed=3")
    statuses = [
        _post("openai", isolated_env, emulator_clock, _body("openai", "Hi")).status_code
        for _ in range(40)
    ]
    assert set(statuses) == {200, 429}


@pytest.mark.parametrize("provider", ["openai", "mistral", "anthropic"])
def test_a_streaming_call_is_refused_naming_stream(
    provider: str, isolated_env: Path, emulator_clock: ManualClock
) -> None:
    response = _post(provider, isolated_env, emulator_clock, _body(provider, "Hi", stream=True))
    assert response.status_code == 400
    assert "stream: true is not supported" in response.text


def test_gemini_stream_generate_content_is_refused(
    isolated_env: Path, emulator_clock: ManualClock
) -> None:
    response = _client(isolated_env, emulator_clock).post(
        "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        json=_body("gemini", "Hi"),
        headers=_auth("gemini"),
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "non-streaming only" in error["message"]


def test_a_streaming_chat_model_is_refused(
    isolated_env: Path, emulator_clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = realtime_model("openai", isolated_env, emulator_clock, monkeypatch, max_retries=0)
    with pytest.raises(Exception, match="stream: true is not supported"):
        list(llm.stream("Hi"))


# What the batch line would say for each invalid body or marker, and the error's shape.
@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_bodies_answer_the_batch_lines_error(
    provider: str, isolated_env: Path, emulator_clock: ManualClock
) -> None:
    rejected = _post(provider, isolated_env, emulator_clock, _body(provider, "x [emulator:reject]"))
    assert rejected.status_code == 400
    assert "[emulator:reject]" in json.dumps(rejected.json())
    empty = _body(provider, "x")
    empty["contents" if provider == "gemini" else "messages"] = []
    invalid = _post(provider, isolated_env, emulator_clock, empty)
    assert invalid.status_code == 400
    error = invalid.json()
    if provider == "openai":
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["param"] == "messages"
    elif provider == "mistral":
        assert error["object"] == "error" and error["param"] == "messages"
    elif provider == "anthropic":
        assert error["type"] == "error"
        assert error["error"] == {
            "type": "invalid_request_error",
            "message": "messages: List should have at least 1 item",
        }
    else:
        assert error["error"]["status"] == "INVALID_ARGUMENT"
        assert "contents is not specified" in error["error"]["message"]
    unknown = _post(
        provider, isolated_env, emulator_clock, _body(provider, "x", model="gpt-no-such-model")
    )
    assert unknown.status_code == 404


@pytest.mark.parametrize("provider", PROVIDERS)
def test_realtime_calls_need_a_key(
    provider: str, isolated_env: Path, emulator_clock: ManualClock
) -> None:
    path = _path(provider, MODELS[provider])
    headers = {"anthropic-version": "2023-06-01"} if provider == "anthropic" else {}
    response = _client(isolated_env, emulator_clock).post(
        path, json=_body(provider, "Hi"), headers=headers
    )
    assert response.status_code == (403 if provider == "gemini" else 401)


# -- raw HTTP helpers ------------------------------------------------------------------------


def _client(state_dir: Path, clock: ManualClock) -> httpx2.Client:
    app = use_clock(clock, state_dir)
    return httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url=IN_PROCESS_BASE_URL)


def _auth(provider: str) -> dict[str, str]:
    if provider == "gemini":
        return {"x-goog-api-key": "unused"}
    if provider == "anthropic":
        return {"x-api-key": "unused", "anthropic-version": "2023-06-01"}
    return {"Authorization": "Bearer unused"}


def _path(provider: str, model: str) -> str:
    if provider == "gemini":
        return f"/gemini/v1beta/models/{model}:generateContent"
    if provider == "anthropic":
        return "/anthropic/v1/messages"
    return f"/{provider}/v1/chat/completions"


def _body(
    provider: str, text: str, model: str | None = None, stream: bool = False
) -> dict[str, Any]:
    """A minimal realtime request body for `provider` (Gemini's model travels in the path)."""
    if provider == "gemini":
        gemini: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        return {**gemini, "_model": model} if model else gemini  # `_post` puts it in the path
    body: dict[str, Any] = {
        "model": model or MODELS[provider],
        "messages": [{"role": "user", "content": text}],
    }
    if provider == "anthropic":
        body["max_tokens"] = 64
    if stream:
        body["stream"] = True
    return body


def _post(
    provider: str, state_dir: Path, clock: ManualClock, body: dict[str, Any]
) -> httpx2.Response:
    model = body.pop("_model", MODELS[provider])
    return _client(state_dir, clock).post(
        _path(provider, model), json=body, headers=_auth(provider)
    )
