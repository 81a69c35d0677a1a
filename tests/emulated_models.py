"""LangChain chat models of the four providers, against the in-process emulator.

`batch_model` is the model a notebook hands to batch-agent (no key: the batch goes to the
in-process emulator); `realtime_model` is the same model with its HTTP client calling the
emulator's realtime endpoint (`agent.emulator.realtime_routes`), so a test can compare a realtime
run with a batched one; `comparable` strips what legitimately differs between the two (ids, and
Anthropic's service tier).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from langchain_core.messages import AIMessage, BaseMessage

from agent.emulator import IN_PROCESS_BASE_URL, ManualClock, use_clock

MODELS: dict[str, str] = {
    "openai": "gpt-4o-mini",
    "mistral": "mistral-small-latest",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash",
}
PROVIDERS = tuple(MODELS)
"""The four providers, in the order tests list them."""


def batch_model(provider: str) -> Any:
    """The chat model a notebook would hand to `run_batch` (no key: the emulator answers)."""
    if provider == "openai":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(model=MODELS[provider], api_key="sk-unused", use_responses_api=False)  # type: ignore[arg-type]
    if provider == "mistral":
        from langchain_mistralai import ChatMistralAI

        return ChatMistralAI(model=MODELS[provider], api_key="unused")  # type: ignore[arg-type,call-arg]
    if provider == "anthropic":
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(model=MODELS[provider], api_key="unused")  # type: ignore[arg-type,call-arg]
    from langchain_google_genai import ChatGoogleGenerativeAI

    return ChatGoogleGenerativeAI(model=MODELS[provider], api_key="unused")


def realtime_model(
    provider: str,
    state_dir: Path,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    **options: Any,
) -> Any:
    """The same chat model, its HTTP client calling the in-process emulator's realtime endpoint.

    `options` go to the constructor (e.g. ``max_retries=0``).
    """
    app = use_clock(clock, state_dir)  # the app the batch runs on (same state, same clock)
    if provider == "openai":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=MODELS[provider],
            api_key="sk-unused",  # type: ignore[arg-type]
            use_responses_api=False,
            base_url=f"{IN_PROCESS_BASE_URL}/openai/v1",
            http_client=httpx2.Client(transport=httpx2.WSGITransport(app=app)),
            **options,
        )
    if provider == "mistral":
        from langchain_mistralai import ChatMistralAI

        # langchain-mistralai talks plain httpx; a client it is given carries the key itself.
        mistral_http = httpx.Client(
            base_url=f"{IN_PROCESS_BASE_URL}/mistral/v1",
            headers={"Authorization": "Bearer unused"},
            transport=httpx.WSGITransport(app=app),
        )
        return ChatMistralAI(  # type: ignore[call-arg]
            model=MODELS[provider],
            api_key="unused",  # type: ignore[arg-type]
            client=mistral_http,
            **options,
        )
    if provider == "anthropic":
        import langchain_anthropic.chat_models as chat_models
        from langchain_anthropic import ChatAnthropic

        def client(**kwargs: Any) -> httpx2.Client:
            return httpx2.Client(
                transport=httpx2.WSGITransport(app=app), base_url=kwargs["base_url"]
            )

        # ChatAnthropic builds its SDK client on an httpx2 client from this factory.
        monkeypatch.setattr(chat_models, "_get_default_httpx_client", client)
        return ChatAnthropic(  # type: ignore[call-arg]
            model=MODELS[provider],
            api_key="unused",  # type: ignore[arg-type]
            base_url=f"{IN_PROCESS_BASE_URL}/anthropic",
            **options,
        )
    from langchain_google_genai import ChatGoogleGenerativeAI

    return ChatGoogleGenerativeAI(
        model=MODELS[provider],
        api_key="unused",
        base_url=f"{IN_PROCESS_BASE_URL}/gemini",
        client_args={"transport": httpx2.WSGITransport(app=app)},
        **options,
    )


def comparable(message: BaseMessage, provider: str, side: str) -> dict[str, Any]:
    """A message's dump without its ids (and Anthropic's service tier, checked here).

    The message id embeds a random run id; the provider's answer id (``response_metadata.id``)
    hashes a batch line's custom_id; a Gemini function call has no id and gets a uuid4. Tool
    call ids are replaced by their position wherever they appear. Anthropic bills a batch
    answer at the ``batch`` tier and a realtime one at ``standard``, as the real API reports.
    """
    assert isinstance(message, AIMessage)
    dumped: dict[str, Any] = message.model_dump(exclude={"id"})
    dumped["response_metadata"].pop("id", None)
    if provider == "anthropic":
        tier = dumped["response_metadata"]["usage"].pop("service_tier")
        assert tier == ("batch" if side == "batch" else "standard")
    text = json.dumps(dumped, default=str, sort_keys=True)
    for index, call in enumerate(message.tool_calls):
        if call["id"]:
            text = text.replace(call["id"], f"call-{index}")
    return dict(json.loads(text))
