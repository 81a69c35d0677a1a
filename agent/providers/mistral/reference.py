"""The LangChain reference path for Mistral: bodies and answers exactly as `ChatMistralAI` has them.

Bodies are built the way `ChatMistralAI` builds its realtime request (`_create_message_dicts` plus
the call's keyword arguments) and parsed by `ChatMistralAI._create_chat_result` (in
`agent.providers.mistral.fast`, whose fast paths reproduce this for the common shapes).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final

from langchain_mistralai import ChatMistralAI

from agent.providers.base import lc_messages
from agent.providers.settings import STREAMING, build_chat_model, rules_for
from agent.requests import BatchRequest


def api_root(endpoint: str) -> str | None:
    """Return the Mistral SDK's server URL for a ChatMistralAI `endpoint` (which ends in /v1)."""
    root = endpoint.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else None


SETTING_RULES: Final = rules_for(
    ChatMistralAI,
    no_effect=frozenset(
        {
            "client",
            "async_client",
            "mistral_api_key",
            "max_retries",
            "timeout",
            "max_concurrent_requests",
        }
    ),
    endpoint={"endpoint": "base_url"},
    refused={"streaming": STREAMING},
    base_url=api_root,
)


def chat_model(model: str, params: Mapping[str, Any]) -> ChatMistralAI:
    """Return the `ChatMistralAI` whose realtime calls our batch lines reproduce.

    Raises:
        InputError: A setting is not one a batch carries, or ChatMistralAI rejects it.
    """
    factory = functools.partial(ChatMistralAI, model=model, api_key="unused-for-body-building")  # type: ignore[call-arg,arg-type]
    return build_chat_model(factory, params, SETTING_RULES)


def request_body(
    llm: ChatMistralAI, request: BatchRequest, bound: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the chat-completions body `llm.invoke(messages, **params)` would send.

    `bound` holds what a `bind_tools` / `with_structured_output` wrapper passes to the model on
    every call (`agent.structured.bind_kwargs`); the request's own parameters win.
    """
    # A request's own `model` is a call kwarg too: only the model sent changes, not `llm`'s rules.
    kwargs = {**(bound or {}), **request.params}
    # `stop` is a named argument of `invoke()`, handed to `_create_message_dicts`: None means
    # the model's own stop, an empty list none at all; it is never a body key as given.
    stop = kwargs.pop("stop", None)
    message_dicts, params = llm._create_message_dicts(lc_messages(request), stop)
    # Realtime adds "stream": False; batch lines carry no streaming flag.
    return {"messages": message_dicts, **params, **kwargs}
