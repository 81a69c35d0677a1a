"""Fast, exact equivalents of the OpenAI reference body building and result parsing.

`agent.providers.openai.reference` builds every body through `ChatOpenAI._get_request_payload`
and parses every answer through the SDK's lenient `ChatCompletion` construction and
`ChatOpenAI._create_chat_result`; the classes here reproduce the *result* of that for the shapes
that make up nearly all traffic (on the shared kit `agent.providers.fast`):

- bodies whose messages are plain `system`/`developer`/`user`/`assistant` dicts with only `role`
  and `content`, content being a string or a list of `{"type": "text", "text": str}` parts, and
  whose per-request parameters are `OPENAI_FAST_PARAMS`;
- result bodies with one choice, string (or null) content, no tool calls, function call, audio or
  logprobs.

Everything else takes the reference path. The builder reads the chat model's default parameters
once and replays the reference merging rules (call kwargs override defaults in place, `stop=None`
is ignored, `max_tokens` becomes `max_completion_tokens`, o-series models send `system` as
`developer`, `stream` is dropped), preserving key order so the JSONL bytes are identical too.
The parser reproduces what `ChatCompletion.model_dump()` yields after `construct_type` (every
declared field present, missing optional ones as `None`, token details expanded to all their
fields), taking field names from the SDK models themselves.

Usage, one object per job:

    builder = OpenAIBodyBuilder(model, ctx_params, spec)
    body = builder.build(request)                        # == request_body(chat_model(...), request)

    parser = OpenAIMessageParser(job_chat_model(job), spec, params=job["params"])
    custom_id, message, error, retryable = parser.parse_line(raw, job["job_id"])
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessage
from openai.types.completion_usage import (
    CompletionTokensDetails,
    CompletionUsage,
    PromptTokensDetails,
)

from agent.providers.base import UnusableAnswer, finish_message
from agent.providers.fast import (
    MISSING,
    BodyBuilder,
    MessageParser,
    ai_message,
    fast_parsing_enabled,
    fresh_copy,
    plain_messages,
    self_check_builder,
)
from agent.providers.openai.reference import (
    CREATE_ARGS,
    REQUEST_OPTIONS,
    bound_kwargs,
    chat_model,
    parse_completion,
    parse_structured,
    request_body,
    responses_only_model,
    responses_trigger,
    wire_body,
)
from agent.requests import BatchRequest
from agent.structured import OutputSpec

__all__ = ["OPENAI_FAST_PARAMS", "OpenAIBodyBuilder", "OpenAIMessageParser"]

# Per-request parameters the builders handle themselves. `_get_request_payload` and
# `request_body` pass call kwargs through untouched, so these only need the merge rules; anything
# else (tools, response_format, ...) is left to the reference path on purpose.
OPENAI_FAST_PARAMS: Final = frozenset(
    {
        "model",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "top_p",
        "stop",
        "seed",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "service_tier",
        "reasoning_effort",
        "verbosity",
        "metadata",
        "store",
        "prompt_cache_key",
        "safety_identifier",
    }
)
# `model_fields_set` of the reference messages (before `usage_metadata` is assigned, if it is).
_OPENAI_FIELDS_SET: Final = frozenset(
    {
        "content",
        "additional_kwargs",
        "name",
        "id",
        "tool_calls",
        "invalid_tool_calls",
        "response_metadata",
    }
)


class OpenAIBodyBuilder(BodyBuilder):
    """Build OpenAI chat-completions batch bodies equal to `openai.request_body`.

    Construct once per job (model and run-context parameters); `build` is then safe to call for
    every request.

    Attributes:
        llm: The reference `ChatOpenAI` (also used by the fallback).
        fast_enabled: False when the construction-time self-check found a difference, in which
            case every request takes the reference path.
    """

    def __init__(
        self, model: str, ctx_params: dict[str, Any], spec: OutputSpec | None = None
    ) -> None:
        """Read the reference model's defaults and self-check the fast path.

        Args:
            model: The run's model (a request naming its own is sent as given, with this
                model's rules).
            ctx_params: Model parameters from the run context (`agent.planning.context_params`).
            spec: The request set's tools / response schema; with one, every request takes the
                reference path (bound through `bind_tools` / `with_structured_output`).
        """
        self.llm: ChatOpenAI = chat_model(model, ctx_params)
        self._bound: dict[str, Any] = bound_kwargs(self.llm, spec)
        self._defaults: dict[str, Any] = self.llm._default_params
        # Defaults the SDK does not send as they are (`extra_body`, int `logit_bias` keys):
        # every body then goes through `wire_body`, as the reference's does.
        self._wire = "logit_bias" in self._defaults or not self._defaults.keys().isdisjoint(
            REQUEST_OPTIONS
        )
        # `ChatOpenAI._get_request_payload` sends system messages as `developer` to o-series.
        o_series = bool(self.llm.model_name and re.match(r"^o\d", self.llm.model_name))
        self._roles: dict[str, str] = {
            "system": "developer" if o_series else "system",
            "developer": "developer",
            "user": "user",
            "assistant": "assistant",
        }
        # A request of the fast shapes goes to the Responses API only through the model's own
        # settings (refused, by the reference path) or a request naming a Responses-only model.
        self._check_model = self.llm.use_responses_api is not False
        self.fast_enabled = (
            not self._bound
            and type(self.llm) is ChatOpenAI
            and responses_trigger(self.llm, {}) is None
            # Every key the fast path can emit is one the SDK takes (others are refused by the
            # reference path, as realtime refuses them).
            and self._defaults.keys() | OPENAI_FAST_PARAMS <= CREATE_ARGS
        )
        if self.fast_enabled:
            self.fast_enabled = self_check_builder(self)

    def build_reference(self, request: BatchRequest) -> dict[str, Any]:
        """Build the body through `ChatOpenAI._get_request_payload` (the reference path)."""
        return request_body(self.llm, request, self._bound)

    def build_fast(self, request: BatchRequest) -> dict[str, Any] | None:
        """Build the body directly, or return None if the request needs the reference path."""
        params = request.params
        for key in params:
            if key not in OPENAI_FAST_PARAMS:
                return None
        if self._check_model and "model" in params and responses_only_model(params["model"]):
            return None  # refused by the reference path, with the request's id
        messages = plain_messages(request.messages, self._roles, True)
        if messages is None:
            return None
        payload = self._defaults.copy()
        stop: Any = None
        for key, value in params.items():
            if key == "stop":
                stop = value
            else:
                payload[key] = value
        # `stop` is a named argument of `_get_request_payload`: None means "not given", and a
        # given value is added after the other kwargs.
        if stop is not None:
            payload["stop"] = stop
        payload["messages"] = messages
        if "max_tokens" in payload:
            payload["max_completion_tokens"] = payload.pop("max_tokens")
        payload.pop("stream", None)
        if self._wire or "logit_bias" in params:
            return wire_body(payload, request.id)
        return payload


# Fields `construct_type(...).model_dump()` always yields for a message, usage and token details.
_MESSAGE_FIELDS: Final = frozenset(ChatCompletionMessage.model_fields)
_USAGE_FIELDS: Final = tuple(CompletionUsage.model_fields)
_USAGE_FIELD_SET: Final = frozenset(_USAGE_FIELDS)
_PROMPT_DETAILS: Final[dict[str, None]] = dict.fromkeys(PromptTokensDetails.model_fields)
_COMPLETION_DETAILS: Final[dict[str, None]] = dict.fromkeys(CompletionTokensDetails.model_fields)
# The fast parser writes the usage dump in this order and reads these detail fields.
_USAGE_SHAPE_OK: Final = (
    _USAGE_FIELDS
    == (
        "completion_tokens",
        "prompt_tokens",
        "total_tokens",
        "completion_tokens_details",
        "prompt_tokens_details",
    )
    and {"audio_tokens", "cached_tokens", "cache_write_tokens"} <= _PROMPT_DETAILS.keys()
    and {"audio_tokens", "reasoning_tokens"} <= _COMPLETION_DETAILS.keys()
)
_TIERS: Final = frozenset({"priority", "flex"})


def _token_details(details: Any, template: dict[str, None]) -> Any:
    """Dump a token-details object as the SDK would, or return `MISSING` if unusual.

    `template` maps every field of the SDK model to None in declaration order, so merging the
    known keys into it yields `model_dump()`'s dict: all fields, in order, missing ones None.
    Only int (or null) counts are handled: the SDK's lenient construction turns `"7"`, `0.0` or
    `true` into an int and keeps `7.5` as it is, which the reference path reproduces.
    """
    if details is None:
        return None
    if type(details) is not dict or not details.keys() <= template.keys():
        return MISSING
    for value in details.values():
        if value is not None and type(value) is not int:
            return MISSING
    return {**template, **details}


def _openai_usage_metadata(usage: dict[str, Any], service_tier: Any) -> dict[str, Any] | None:
    """`langchain_openai`'s `_create_usage_metadata` for already-dumped usage with int counts.

    Returns None (use the reference path) if the service-tier arithmetic meets a non-number.
    """
    input_tokens = usage["prompt_tokens"]
    output_tokens = usage["completion_tokens"]
    prompt_details = usage["prompt_tokens_details"]
    completion_details = usage["completion_tokens_details"]
    if service_tier not in _TIERS:
        # The common case, unrolled: keys without a tier prefix, None values dropped.
        input_details: dict[str, Any] = {}
        output_details: dict[str, Any] = {}
        if prompt_details:
            if (value := prompt_details["audio_tokens"]) is not None:
                input_details["audio"] = value
            if (value := prompt_details["cached_tokens"]) is not None:
                input_details["cache_read"] = value
            if (value := prompt_details["cache_write_tokens"]) is not None:
                input_details["cache_creation"] = value
        if completion_details:
            if (value := completion_details["audio_tokens"]) is not None:
                output_details["audio"] = value
            if (value := completion_details["reasoning_tokens"]) is not None:
                output_details["reasoning"] = value
        return {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": usage["total_tokens"],
            "input_token_details": input_details,
            "output_token_details": output_details,
        }
    prompt_details = prompt_details or {}
    completion_details = completion_details or {}
    prefix = f"{service_tier}_"
    input_all = {
        "audio": prompt_details.get("audio_tokens"),
        f"{prefix}cache_read": prompt_details.get("cached_tokens"),
        f"{prefix}cache_creation": prompt_details.get("cache_write_tokens"),
    }
    output_all = {
        "audio": completion_details.get("audio_tokens"),
        f"{prefix}reasoning": completion_details.get("reasoning_tokens"),
    }
    try:
        input_all[service_tier] = input_tokens - (input_all[f"{prefix}cache_read"] or 0)
        output_all[service_tier] = output_tokens - (output_all[f"{prefix}reasoning"] or 0)
    except TypeError:
        return None
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": usage["total_tokens"],
        "input_token_details": {k: v for k, v in input_all.items() if v is not None},
        "output_token_details": {k: v for k, v in output_all.items() if v is not None},
    }


class OpenAIMessageParser(MessageParser):
    """Parse OpenAI chat-completion result bodies into the AIMessage `.invoke()` returns.

    Equal to `finish_message(llm, llm._create_chat_result(parse_completion(body)), key)` with
    `llm = chat_model(model, {})`, which is what `OpenAIProvider.results` does.

    Attributes:
        llm: The reference `ChatOpenAI` (also used by the fallback).
        fast_enabled: False when the construction-time self-check found a difference.
    """

    def __init__(
        self, model: str, spec: OutputSpec | None = None, params: Mapping[str, Any] | None = None
    ) -> None:
        """Build the reference model and self-check the fast path.

        Args:
            model: The model of the job's chat model object (`Job.chat_model`).
            spec: The request set's tools / response schema. With a response format, realtime
                parses through the SDK's `chat.completions.parse`, and so does every answer here
                (the reference path).
            params: That chat model's settings (`Job.params`; `output_version` changes the
                parsed message).
        """
        self.llm: ChatOpenAI = chat_model(model, params or {})
        bound = bound_kwargs(self.llm, spec)
        self._response_format: Any = bound.get("response_format")
        self._input_tools: list[Any] | None = bound.get("tools")
        self.probes = _OPENAI_PROBES
        self.fast_enabled = (
            self._response_format is None
            and _USAGE_SHAPE_OK
            and fast_parsing_enabled(self, self.llm, ChatOpenAI)
        )

    def parse_reference(self, body: dict[str, Any], message_key: str) -> AIMessage:
        """Parse through the SDK's `ChatCompletion` and `ChatOpenAI._create_chat_result`.

        Raises:
            UnusableAnswer: With a response format, the SDK's `chat.completions.parse` refuses
                the answer (cut at `max_tokens`, stopped by a content filter, unparseable strict
                tool arguments), which realtime `.invoke()` raises; it carries that exception
                and the plain message, if one can be built.
        """
        completion = parse_completion(body)
        if self._response_format is not None:
            try:
                parsed = parse_structured(completion, self._response_format, self._input_tools)
            except Exception as exc:
                raise UnusableAnswer(exc, self._plain_message(completion, message_key)) from exc
            completion = parsed
        result = self.llm._create_chat_result(completion)
        return finish_message(self.llm, result, message_key)

    def check_reference(self) -> None:
        """Parse every probe as realtime parses a plain answer, raising whatever that raises.

        The SDK's `chat.completions.parse` of a response format is left out: the probes are not
        answers to one (its functions are in `tests/unit_tests/test_private_api_contract.py`).
        """
        for probe in self.probes:
            completion = parse_completion(fresh_copy(probe))
            finish_message(self.llm, self.llm._create_chat_result(completion), "probe/r1")

    def _plain_message(self, completion: Any, message_key: str) -> AIMessage | None:
        """Build the message of a completion the SDK's `parse` refused, if LangChain can."""
        try:
            return finish_message(self.llm, self.llm._create_chat_result(completion), message_key)
        except Exception:  # noqa: BLE001 (then there is no message to keep)
            return None

    def parse_fast(self, body: Any, message_key: str) -> AIMessage | None:
        """Parse the common response shape directly, or return None for the reference path.

        Handled: one choice whose message is `assistant` with string or null content, optional
        refusal and annotations, and null (or absent) audio, function call and tool calls;
        null logprobs; usage absent, null, or with int counts and optional int-valued details;
        any string or null `service_tier`/`system_fingerprint`. Unknown top-level and choice keys
        are ignored, as the reference ignores them; unknown message or usage keys are not.
        """
        if type(body) is not dict:
            return None
        response_id = body.get("id")
        model = body.get("model")
        choices = body.get("choices")
        if (
            type(response_id) is not str
            or type(model) is not str
            or type(choices) is not list
            or len(choices) != 1
            or type(body.get("created")) is not int
            or type(body.get("object")) is not str
            or body.get("error") is not None
        ):
            return None
        service_tier = body.get("service_tier")
        fingerprint = body.get("system_fingerprint")
        if (service_tier is not None and type(service_tier) is not str) or (
            fingerprint is not None and type(fingerprint) is not str
        ):
            return None
        metadata = body.get("metadata")
        moderation = body.get("moderation")
        if (metadata is not None and type(metadata) is not dict) or (
            moderation is not None and type(moderation) is not dict
        ):
            return None

        choice = choices[0]
        if type(choice) is not dict or "finish_reason" not in choice:
            return None
        finish_reason = choice["finish_reason"]
        message = choice.get("message")
        if (
            (finish_reason is not None and type(finish_reason) is not str)
            or type(choice.get("index")) is not int
            or choice.get("logprobs") is not None
            or type(message) is not dict
            or not message.keys() <= _MESSAGE_FIELDS
            or message.get("role") != "assistant"
            or message.get("audio") is not None
            or message.get("function_call") is not None
            or message.get("tool_calls") not in (None, [])
        ):
            return None
        content = message.get("content")
        refusal = message.get("refusal")
        annotations = message.get("annotations")
        if (
            (content is not None and type(content) is not str)
            or (refusal is not None and type(refusal) is not str)
            or (
                annotations is not None
                and (
                    type(annotations) is not list
                    or any(type(item) is not dict for item in annotations)
                )
            )
        ):
            return None

        usage = body.get("usage")
        token_usage: dict[str, Any] | None
        if usage is None:
            token_usage = None
        else:
            if type(usage) is not dict or not usage.keys() <= _USAGE_FIELD_SET:
                return None
            completion_tokens = usage.get("completion_tokens")
            prompt_tokens = usage.get("prompt_tokens")
            total_tokens = usage.get("total_tokens")
            if (
                type(completion_tokens) is not int
                or type(prompt_tokens) is not int
                or type(total_tokens) is not int
            ):
                return None
            completion_details = _token_details(
                usage.get("completion_tokens_details"), _COMPLETION_DETAILS
            )
            prompt_details = _token_details(usage.get("prompt_tokens_details"), _PROMPT_DETAILS)
            if completion_details is MISSING or prompt_details is MISSING:
                return None
            token_usage = {
                "completion_tokens": completion_tokens,
                "prompt_tokens": prompt_tokens,
                "total_tokens": total_tokens,
                "completion_tokens_details": completion_details,
                "prompt_tokens_details": prompt_details,
            }

        response_metadata: dict[str, Any] = {
            "token_usage": token_usage,
            "model_provider": "openai",
            "model_name": model,
            "system_fingerprint": fingerprint,
            "id": response_id,
        }
        if service_tier:
            response_metadata["service_tier"] = service_tier
        response_metadata["finish_reason"] = finish_reason
        response_metadata["logprobs"] = None
        fields_set = set(_OPENAI_FIELDS_SET)
        usage_metadata: dict[str, Any] | None = None
        if token_usage:
            usage_metadata = _openai_usage_metadata(token_usage, service_tier)
            if usage_metadata is None:
                return None
            fields_set.add("usage_metadata")
        return ai_message(
            content or "",
            {"refusal": refusal},
            response_metadata,
            message_key,
            usage_metadata,
            fields_set,
        )


_OPENAI_PROBES: Final[list[dict[str, Any]]] = [
    {
        "id": "chatcmpl-probe",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-probe",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Fine.",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 21,
            "completion_tokens": 3,
            "total_tokens": 24,
            "prompt_tokens_details": {"cached_tokens": 5, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": 0},
        },
        "service_tier": "priority",
        "system_fingerprint": "fp_probe",
    },
    {
        "id": "chatcmpl-probe-2",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-probe",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": "No."},
                "finish_reason": "length",
            }
        ],
    },
]
