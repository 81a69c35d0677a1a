"""Fast, exact equivalents of the Mistral reference body building and result parsing.

`agent.providers.mistral.reference` builds every body through
`ChatMistralAI._create_message_dicts`, and answers are parsed by
`ChatMistralAI._create_chat_result` (`MistralMessageParser.parse_reference`); the classes here
reproduce the *result* of that for plain `{role, content}` messages with the common sampling
parameters (`MISTRAL_FAST_PARAMS`) and one-choice text answers, on the shared kit
`agent.providers.fast`. The builder replays the reference merging rules (`developer` is sent as
`system`, and a call's `stop` of None means the model's own stop and an empty one none),
preserving key order. Everything else takes the reference path.

Usage, one object per job:

    builder = MistralBodyBuilder(model, ctx_params, spec)
    body = builder.build(request)                        # == request_body(chat_model(...), request)

    parser = MistralMessageParser(job_chat_model(job), params=job["params"])
    custom_id, message, error, retryable = parser.parse_line(raw, job["job_id"])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from langchain_core.messages import AIMessage
from langchain_mistralai import ChatMistralAI

from agent.providers.base import finish_message
from agent.providers.fast import (
    MISSING,
    RAW_CONSTRUCT_OK,
    BodyBuilder,
    MessageParser,
    ai_message,
    plain_messages,
    self_check_builder,
    self_check_parser,
)
from agent.providers.mistral.reference import chat_model, request_body
from agent.requests import BatchRequest
from agent.structured import OutputSpec, bind_kwargs

__all__ = ["MISTRAL_FAST_PARAMS", "MistralBodyBuilder", "MistralMessageParser"]

# Per-request parameters the builder handles itself: `request_body` passes call kwargs through
# untouched, so these only need the merge rules; anything else is left to the reference path.
MISTRAL_FAST_PARAMS: Final = frozenset(
    {
        "model",
        "temperature",
        "max_tokens",
        "top_p",
        "stop",
        "random_seed",
        "seed",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "safe_prompt",
        "prompt_mode",
    }
)
_MISTRAL_FIELDS_SET: Final = frozenset(
    {"content", "additional_kwargs", "tool_calls", "invalid_tool_calls", "response_metadata", "id"}
)


class MistralBodyBuilder(BodyBuilder):
    """Build Mistral batch bodies equal to `mistral.request_body`.

    Attributes:
        llm: The reference `ChatMistralAI` (also used by the fallback).
        fast_enabled: False when the construction-time self-check found a difference.
    """

    _ROLES: Final = {
        "system": "system",
        "developer": "system",
        "user": "user",
        "assistant": "assistant",
    }

    def __init__(
        self, model: str, ctx_params: dict[str, Any], spec: OutputSpec | None = None
    ) -> None:
        """Read the reference model's parameters and self-check the fast path.

        Args:
            model: The run's model (a request naming its own is sent as given, with this
                model's rules).
            ctx_params: Model parameters from the run context (`agent.planning.context_params`).
            spec: The request set's tools / response schema; with one, every request takes the
                reference path (bound through `bind_tools` / `with_structured_output`).
        """
        self.llm: ChatMistralAI = chat_model(model, ctx_params)
        self._bound: dict[str, Any] = bind_kwargs(self.llm, spec)
        # `_create_message_dicts(messages, stop)`: the client params, then `stop` (the call's,
        # else the model's own) when it is not empty.
        self._params: dict[str, Any] = self.llm._client_params
        self._stop: list[str] | None = self.llm.stop
        self.fast_enabled = (
            not self._bound
            and type(self.llm).__name__ == "ChatMistralAI"
            and self_check_builder(self)
        )

    def build_reference(self, request: BatchRequest) -> dict[str, Any]:
        """Build the body through `ChatMistralAI._create_message_dicts` (the reference path)."""
        return request_body(self.llm, request, self._bound)

    def build_fast(self, request: BatchRequest) -> dict[str, Any] | None:
        """Build the body directly, or return None if the request needs the reference path."""
        params = request.params
        for key in params:
            if key not in MISTRAL_FAST_PARAMS:
                return None
        messages = plain_messages(request.messages, self._ROLES, False)
        if messages is None:
            return None
        body: dict[str, Any] = {"messages": messages}
        body.update(self._params)
        stop = params.get("stop")
        if stop is None:
            stop = self._stop
        if stop:
            body["stop"] = stop
        for key, value in params.items():
            if key != "stop":
                body[key] = value
        return body


class MistralMessageParser(MessageParser):
    """Parse Mistral chat-completion result bodies into the AIMessage `.invoke()` returns.

    Equal to `finish_message(llm, llm._create_chat_result(body), key)` with
    `llm = chat_model(model, {})`, which is what `MistralProvider.results` does.

    Attributes:
        llm: The reference `ChatMistralAI` (also used by the fallback).
        fast_enabled: False when the construction-time self-check found a difference.
    """

    def __init__(self, model: str, params: Mapping[str, Any] | None = None) -> None:
        """Build the reference model and self-check the fast path.

        Args:
            model: The model of the job's chat model object (`Job.chat_model`).
            params: That chat model's settings (`Job.params`; `output_version` changes the
                parsed message).
        """
        self.llm: ChatMistralAI = chat_model(model, params or {})
        self._model = self.llm.model
        self.fast_enabled = (
            RAW_CONSTRUCT_OK
            and self.llm.output_version != "v1"
            and type(self.llm).__name__ == "ChatMistralAI"
        )
        self.probes = _MISTRAL_PROBES
        if self.fast_enabled:
            self.fast_enabled = self_check_parser(self)

    def parse_reference(self, body: dict[str, Any], message_key: str) -> AIMessage:
        """Parse through `ChatMistralAI._create_chat_result`."""
        return finish_message(self.llm, self.llm._create_chat_result(body), message_key)

    def parse_fast(self, body: Any, message_key: str) -> AIMessage | None:
        """Parse the common response shape directly, or return None for the reference path.

        Handled: one choice whose message is `assistant` with string, null or absent content and
        no tool calls; usage absent, null or an object whose counts are ints (missing ones count
        0). Other keys are ignored, as the reference
        ignores them (the model name comes from the job's model, as in the reference).
        """
        if type(body) is not dict:
            return None
        choices = body.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return None
        choice = choices[0]
        if type(choice) is not dict:
            return None
        message = choice.get("message")
        if type(message) is not dict or message.get("role") != "assistant":
            return None
        content = message.get("content", "")
        if (content is not None and type(content) is not str) or message.get("tool_calls"):
            return None
        token_usage = body.get("usage", MISSING)
        if token_usage is MISSING:
            token_usage = {}
        elif token_usage is not None and type(token_usage) is not dict:
            return None
        fields_set = set(_MISTRAL_FIELDS_SET)
        usage_metadata: dict[str, Any] | None = None
        if token_usage:
            usage_metadata = {
                "input_tokens": token_usage.get("prompt_tokens", 0),
                "output_tokens": token_usage.get("completion_tokens", 0),
                "total_tokens": token_usage.get("total_tokens", 0),
            }
            # The reference copies counts as given; only int ones are summed and stored as is.
            for count in usage_metadata.values():
                if type(count) is not int:
                    return None
            fields_set.add("usage_metadata")
        model = self._model
        return ai_message(
            content or "",
            {},
            {
                "token_usage": token_usage,
                "model_name": model,
                "model": model,
                "finish_reason": choice.get("finish_reason"),
                "model_provider": "mistralai",
            },
            message_key,
            usage_metadata,
            fields_set,
        )


_MISTRAL_PROBES: Final[list[dict[str, Any]]] = [
    {
        "id": "cmpl-probe",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "mistral-probe",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Fine.", "tool_calls": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20},
    },
    {"choices": [{"message": {"role": "assistant"}}]},
]
