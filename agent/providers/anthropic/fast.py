"""Fast, exact equivalents of the Anthropic body building and result parsing.

Why this module exists: `agent.providers.anthropic.reference` builds every request line through
`ChatAnthropic._get_request_payload` (message coercion, formatting, payload rules) and parses
every result through the SDK's `Message` construction and `ChatAnthropic._format_output`. That is
exact by construction but slow (about 16,000 bodies/s and 3,400 results/s on one core), which
dominates preparing or collecting a job of 50,000 requests.

The classes here reproduce the *result* of those reference paths directly, for the shapes that
make up nearly all traffic, and leave everything else to the reference (same design as
`agent.providers.openai.fast`, on the shared kit `agent.providers.fast`):

- bodies whose messages are plain `{role, content}` dicts with string content and role
  `system` (leading only), `user` or `assistant`, whose per-request parameters are
  `ANTHROPIC_FAST_PARAMS`, for a model with no thinking, effort, output config, betas,
  containers, MCP servers or extra model kwargs, and no tools or response schema;
- `succeeded` results whose message holds one or more plain text blocks (no citations), with
  usage made of counts, optional cache counts (and the 5m/1h cache-creation split), optional
  thinking-token details and any service tier / geo / speed string.

Everything else (tool use, thinking, citations, images, list contents, mid-conversation system
messages, errored/canceled/expired lines, unknown fields, ...) takes the reference path.

How exactness is kept:

- The builder replays `_get_request_payload`'s dict construction (defaults, then call kwargs
  overriding in place, `stop or stop_sequences`), its `None` filtering and
  `_route_unsupported_sampling_params` (which moves temperature/top_p/top_k to `extra_body`,
  iterating the *same* frozenset, so the key order matches the reference in this process), then
  `wire_params`' merge of `extra_body` at the end. Message formatting replays `_merge_messages`
  and `_format_messages` for string contents: runs of system or user messages merge into text
  block lists (blank user blocks dropped), an empty assistant turn before the last is dropped,
  the final assistant turn is right-stripped.
- The parser writes the `Message.model_dump()` the reference's `_format_output` spreads into
  `response_metadata` (every declared field, missing ones None, field names taken from the SDK
  models), then `_create_usage_metadata`'s arithmetic, and installs the AIMessage with
  `agent.providers.fast.ai_message`.
- Both run probes through the fast and reference paths when created and disable their fast path
  (with a warning) on any difference; `tests/unit_tests/test_anthropic_fastpath.py` holds the
  property tests that are the real guarantee.

Usage, one object per job:

    builder = AnthropicBodyBuilder(model, ctx_params, spec)
    params = builder.build(request)             # == anthropic.request_params(llm, request, bound)

    parser = AnthropicMessageParser(job_chat_model(job), job["params"])
    custom_id, message, error, retryable = parser.parse_line(raw, job["job_id"])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson
from anthropic.types import CacheCreation, Message, TextBlock, Usage
from anthropic.types.output_tokens_details import OutputTokensDetails
from langchain_anthropic import ChatAnthropic
from langchain_anthropic._sdk_compat import _unsupported_sampling_params
from langchain_core.messages import AIMessage

from agent.providers.anthropic.reference import (
    CREATE_ARGS,
    AnthropicLineParser,
    chat_model,
    parse_message,
    request_params,
)
from agent.providers.fast import (
    BodyBuilder,
    MessageParser,
    OutputLine,
    ai_message,
    fast_parsing_enabled,
    self_check_builder,
)
from agent.requests import BatchRequest
from agent.state import Usage as TokenUsage
from agent.structured import OutputSpec, bind_kwargs

__all__ = ["ANTHROPIC_FAST_PARAMS", "AnthropicBodyBuilder", "AnthropicMessageParser"]


# Per-request parameters the builder handles: `_get_request_payload` only merges these (no
# special rules beyond `stop`), and `wire_params` passes them on.
ANTHROPIC_FAST_PARAMS: Final = frozenset(
    {
        "model",
        "temperature",
        "max_tokens",
        "top_p",
        "top_k",
        "stop",
        "stop_sequences",
        "metadata",
        "service_tier",
    }
)
# Body keys the fast builder may emit outside `extra_body`; all must be `messages.create`
# arguments, or the reference refuses the request (and so must we, by falling back).
_NAMED_BODY_KEYS: Final = frozenset(
    {"model", "max_tokens", "messages", "stop_sequences", "system", "metadata", "service_tier"}
)
# ChatAnthropic settings that add payload content or rules the builder does not replay: any of
# them set sends every request through the reference path. These are sent unless None ...
_UNHANDLED_SETTINGS: Final = (
    "thinking",
    "inference_geo",
    "betas",
    "context_management",
    "mcp_servers",
    "container",
    "user_profile_id",
)
# ... and these apply only when truthy.
_UNHANDLED_TRUTHY_SETTINGS: Final = ("output_config", "reasoning_effort", "model_kwargs")
# Models with their own sampling restrictions or payload rewrites in `_get_request_payload`.
_SPECIAL_MODEL_PREFIXES: Final = ("claude-fable-5", "claude-sonnet-5-5", "claude-opus-5")
_ROLES: Final = frozenset({"system", "user", "assistant"})

# --------------------------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------------------------


def _text_blocks(texts: list[str]) -> list[dict[str, str]]:
    return [{"type": "text", "text": text} for text in texts]


def _format_messages(messages: Any) -> tuple[Any, list[dict[str, Any]]] | None:
    """Return `(system, messages)` as `_format_messages` would, or None if not handled.

    Handles string contents only, with system messages only at the start (a later one is hoisted
    or sent in place depending on the model profile, which is left to the reference).
    """
    if type(messages) is not list or not messages:
        return None
    # `_merge_messages`: runs of system (or of user) messages become one message.
    merged: list[tuple[str, list[str]]] = []
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role = message.get("role")
        text = message.get("content")
        if type(text) is not str or role not in _ROLES:
            return None
        if merged and role != "assistant" and merged[-1][0] == role:
            merged[-1][1].append(text)
        else:
            if role == "system" and merged:
                return None
            merged.append((role, [text]))
    system: Any = None
    if merged[0][0] == "system":
        texts = merged.pop(0)[1]
        system = texts[0] if len(texts) == 1 else _text_blocks(texts)
    out: list[dict[str, Any]] = []
    last = len(merged) - 1
    for index, (role, texts) in enumerate(merged):
        content: Any
        if role == "user":
            if len(texts) == 1:
                content = texts[0]
            else:
                # Merged turns are text blocks, and blank blocks are not sent.
                content = [{"type": "text", "text": t} for t in texts if t.strip()]
        else:
            content = texts[0]
            if index == last:
                content = content.rstrip()
            elif not content:
                continue  # Anthropic refuses empty turns except a final assistant one
        out.append({"role": role, "content": content})
    return system, out


class AnthropicBodyBuilder(BodyBuilder):
    """Build Message Batches `params` equal to `anthropic.request_params`.

    Construct once per job (model, run-context parameters, output spec); `build` is then safe to
    call for every request.

    Attributes:
        llm: The reference `ChatAnthropic` (also used by the fallback).
        fast_enabled: False when the model's settings need the reference path or the
            construction-time self-check found a difference.
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
        self.llm: ChatAnthropic = chat_model(model, ctx_params)
        self._bound: dict[str, Any] = bind_kwargs(self.llm, spec)
        llm = self.llm
        self._model = llm.model
        self._max_tokens = llm.max_tokens
        self._temperature = llm.temperature
        self._top_k = llm.top_k
        self._top_p = llm.top_p
        self._stop = llm.stop_sequences
        # The very frozenset the reference iterates, so relocated keys come in its order.
        self._relocated: frozenset[str] = _unsupported_sampling_params()
        self.fast_enabled = (
            not self._bound
            and type(llm) is ChatAnthropic
            and all(getattr(llm, name, None) is None for name in _UNHANDLED_SETTINGS)
            and not any(getattr(llm, name, None) for name in _UNHANDLED_TRUTHY_SETTINGS)
            and not llm.model.startswith(_SPECIAL_MODEL_PREFIXES)
            and _NAMED_BODY_KEYS <= CREATE_ARGS
            and (ANTHROPIC_FAST_PARAMS - {"stop"}) <= (CREATE_ARGS | self._relocated)
        )
        if self.fast_enabled:
            self.fast_enabled = self_check_builder(self, _probe_requests())

    def build_reference(self, request: BatchRequest) -> dict[str, Any]:
        """Build the body through `ChatAnthropic._get_request_payload` (the reference path)."""
        return request_params(self.llm, request, self._bound)

    def build_fast(self, request: BatchRequest) -> dict[str, Any] | None:
        """Build the body directly, or return None if the request needs the reference path."""
        params = request.params
        for key in params:
            if key not in ANTHROPIC_FAST_PARAMS:
                return None
        formatted = _format_messages(request.messages)
        if formatted is None:
            return None
        system, messages = formatted
        payload: dict[str, Any] = {
            "model": self._model,
            "max_tokens": self._max_tokens,
            "messages": messages,
            "temperature": self._temperature,
            "top_k": self._top_k,
            "top_p": self._top_p,
            # `stop` is a named argument of `_get_request_payload`: `stop or stop_sequences`.
            "stop_sequences": params.get("stop") or self._stop,
            "system": system,
        }
        for key, value in params.items():
            if key != "stop":
                payload[key] = value
        body = {k: v for k, v in payload.items() if v is not None}
        # `_route_unsupported_sampling_params` moves these to `extra_body`, which `wire_params`
        # merges back in at the end.
        relocated = {k: body.pop(k) for k in self._relocated if k in body}
        if relocated:
            body.update(relocated)
        return body


def _probe_requests() -> list[BatchRequest]:
    """Return requests covering every merge and formatting rule the builder handles."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be terse."},
        {"role": "system", "content": ""},
        {"role": "user", "content": "Bonjour ?"},
        {"role": "user", "content": " \n"},
        {"role": "user", "content": "é\u2028"},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "Oui. "},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "Je \n"},
    ]
    return [
        BatchRequest("probe-1", messages, {}),
        BatchRequest(
            "probe-2",
            messages[2:],
            {
                "stop": ["\n"],
                "temperature": 0.5,
                "max_tokens": 7,
                "model": "x",
                "top_k": 3,
                "metadata": {"user_id": "u"},
                "service_tier": "auto",
            },
        ),
        BatchRequest("probe-3", messages[:1], {"stop": None, "top_p": 0.5, "temperature": None}),
    ]


# --------------------------------------------------------------------------------------------
# Result parsing
# --------------------------------------------------------------------------------------------

# `Message.model_dump()` minus what `_format_output` leaves out of `llm_output`, in field order.
_LLM_OUTPUT_FIELDS: Final = tuple(
    k for k in Message.model_fields if k not in ("content", "role", "type")
)
_MESSAGE_FIELDS: Final = frozenset(Message.model_fields)
# Message fields the parser reads; every other one must be null or absent.
_MESSAGE_READ: Final = frozenset(
    {"id", "content", "model", "role", "stop_reason", "stop_sequence", "type", "usage"}
)
_USAGE_FIELDS: Final = tuple(Usage.model_fields)
_USAGE_FIELD_SET: Final = frozenset(_USAGE_FIELDS)
_USAGE_COUNTS: Final = ("input_tokens", "output_tokens")
_USAGE_OPTIONAL_COUNTS: Final = ("cache_creation_input_tokens", "cache_read_input_tokens")
_USAGE_STRINGS: Final = ("service_tier", "inference_geo", "speed")
_USAGE_NESTED: Final = {
    "cache_creation": tuple(CacheCreation.model_fields),
    "output_tokens_details": tuple(OutputTokensDetails.model_fields),
}
_USAGE_READ: Final = frozenset({*_USAGE_COUNTS, *_USAGE_OPTIONAL_COUNTS, *_USAGE_STRINGS})
# How each handled usage field is checked (any other must be null or absent).
_USAGE_KINDS: Final[dict[str, Any]] = {
    **dict.fromkeys((*_USAGE_COUNTS, *_USAGE_OPTIONAL_COUNTS), int),
    **dict.fromkeys(_USAGE_STRINGS, str),
    **_USAGE_NESTED,
}
_TEXT_BLOCK_KEYS: Final = frozenset(TextBlock.model_fields)
# What the parser assumes about the SDK models; a change sends everything to the reference.
_SHAPE_OK: Final = (
    tuple(TextBlock.model_fields) == ("citations", "text", "type")
    and _MESSAGE_READ <= _MESSAGE_FIELDS
    and (_USAGE_READ | _USAGE_NESTED.keys()) <= _USAGE_FIELD_SET
    and {"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}
    <= set(_USAGE_NESTED["cache_creation"])
    and "thinking_tokens" in _USAGE_NESTED["output_tokens_details"]
)
_FIELDS_SET: Final = frozenset({"content", "response_metadata", "usage_metadata", "id"})
_CACHE_CREATION_KEYS: Final = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


def _dump_usage(usage: Any) -> dict[str, Any] | None:
    """Return `Usage.model_dump()` for the handled usage shape, or None if it is unusual."""
    if type(usage) is not dict or not usage.keys() <= _USAGE_FIELD_SET:
        return None
    dumped = dict.fromkeys(_USAGE_FIELDS)
    for key, value in usage.items():
        if value is None:
            continue
        kind = _USAGE_KINDS.get(key)
        if kind is int or kind is str:
            if type(value) is not kind:
                return None
        else:
            # A nested model is dumped in field order; only complete all-int ones are handled.
            if kind is None or type(value) is not dict or value.keys() != set(kind):
                return None
            value = {f: value[f] for f in kind}
            for count in value.values():
                if type(count) is not int:
                    return None
        dumped[key] = value
    if type(dumped["input_tokens"]) is not int or type(dumped["output_tokens"]) is not int:
        return None
    return dumped


def _usage_metadata(usage: dict[str, Any]) -> dict[str, Any]:
    """`langchain_anthropic`'s `_create_usage_metadata` for an already-dumped usage."""
    input_details: dict[str, Any] = {
        "cache_read": usage["cache_read_input_tokens"],
        "cache_creation": usage["cache_creation_input_tokens"],
    }
    specific = 0
    cache_creation = usage["cache_creation"]
    if cache_creation:
        for key in _CACHE_CREATION_KEYS:
            specific += cache_creation.get(key, 0)
            input_details[key] = cache_creation.get(key)
        if specific > 0:
            # The split replaces the generic count (no double counting).
            input_details["cache_creation"] = 0
    input_tokens = (
        usage["input_tokens"]
        + (input_details["cache_read"] or 0)
        + (specific or input_details["cache_creation"] or 0)
    )
    output_tokens = usage["output_tokens"]
    metadata: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "input_token_details": {k: v for k, v in input_details.items() if v is not None},
    }
    details = usage["output_tokens_details"]
    if details and details["thinking_tokens"] is not None:
        metadata["output_token_details"] = {"reasoning": details["thinking_tokens"]}
    return metadata


class AnthropicMessageParser(MessageParser):
    """Parse Anthropic results lines into the outcomes `AnthropicLineParser` returns.

    A `succeeded` message is parsed into what `anthropic.parse_message(llm, message, key)` returns
    (realtime `ChatAnthropic.invoke()`), with `llm = chat_model(model, {})`.

    Attributes:
        reference: The reference `AnthropicLineParser` (every fallback goes through it).
        llm: Its `ChatAnthropic`.
        fast_enabled: False when the construction-time self-check found a difference.
    """

    def __init__(self, model: str, params: Mapping[str, Any] | None = None) -> None:
        """Build the reference parser and self-check the fast path.

        Args:
            model: The model of the job's chat model object (`Job.chat_model`).
            params: That chat model's settings (`Job.params`; `output_version` changes the
                parsed message).
        """
        self.reference = AnthropicLineParser(model, params)
        self.llm: ChatAnthropic = self.reference.llm
        self.probes = _PROBES
        self.fast_enabled = _SHAPE_OK and fast_parsing_enabled(self, self.llm, ChatAnthropic)

    def parse_reference(self, message: dict[str, Any], message_key: str) -> AIMessage:
        """Parse through the SDK's `Message` and `ChatAnthropic._format_output`."""
        return parse_message(self.llm, message, message_key)

    def parse_line(self, raw: bytes | str, job_id: str) -> OutputLine:
        """Parse one results line into `(custom_id, message, error, retryable)`.

        Same result as `AnthropicLineParser.parse_line`; succeeded lines of the handled shape are
        parsed here, every other line (errors included) by the reference.
        """
        if self.fast_enabled:
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                line = None
            if type(line) is dict:
                result = line.get("result")
                custom_id = line.get("custom_id")
                if (
                    type(result) is dict
                    and result.get("type") == "succeeded"
                    and type(custom_id) is str
                ):
                    parsed = self.parse_fast(result.get("message"), f"{job_id}/{custom_id}")
                    if parsed is not None:
                        return custom_id, parsed, None, False
        return self.reference.parse_line(raw, job_id)

    def billed_usage(self, line: Any) -> TokenUsage | None:
        """Return the usage billed for a decoded results line (as the reference reads it)."""
        return self.reference.billed_usage(line)

    def parse_fast(self, message: Any, message_key: str) -> AIMessage | None:
        """Parse the common message shape directly, or return None for the reference path.

        Handled: `type` "message", `role` "assistant", string `id` and `model`, one or more text
        blocks without citations, string or null `stop_reason` / `stop_sequence`, every other
        message field null or absent, and usage as `_dump_usage` accepts it.
        """
        if type(message) is not dict or not message.keys() <= _MESSAGE_FIELDS:
            return None
        model = message.get("model")
        content = message.get("content")
        stop_reason = message.get("stop_reason")
        stop_sequence = message.get("stop_sequence")
        if (
            type(message.get("id")) is not str
            or type(model) is not str
            or message.get("role") != "assistant"
            or message.get("type") != "message"
            or type(content) is not list
            or not content
            or (stop_reason is not None and type(stop_reason) is not str)
            or (stop_sequence is not None and type(stop_sequence) is not str)
        ):
            return None
        for key in message:
            if key not in _MESSAGE_READ and message[key] is not None:
                return None
        texts = []
        for block in content:
            if (
                type(block) is not dict
                or not block.keys() <= _TEXT_BLOCK_KEYS
                or block.get("type") != "text"
                or block.get("citations") is not None
            ):
                return None
            text = block.get("text")
            if type(text) is not str:
                return None
            texts.append(text)
        usage = _dump_usage(message.get("usage"))
        if usage is None:
            return None
        response_metadata: dict[str, Any] = {}
        for key in _LLM_OUTPUT_FIELDS:
            response_metadata[key] = usage if key == "usage" else message.get(key)
        response_metadata["model_name"] = model
        response_metadata["model_provider"] = "anthropic"
        return ai_message(
            texts[0] if len(texts) == 1 else [{"text": text, "type": "text"} for text in texts],
            {},
            response_metadata,
            message_key,
            _usage_metadata(usage),
            set(_FIELDS_SET),
        )


_PROBES: Final[list[dict[str, Any]]] = [
    {
        "id": "msg_probe",
        "type": "message",
        "role": "assistant",
        "model": "claude-probe",
        "content": [{"type": "text", "text": "Fine.", "citations": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 21,
            "output_tokens": 3,
            "cache_creation_input_tokens": 4,
            "cache_read_input_tokens": 5,
            "service_tier": "batch",
        },
    },
    {
        "id": "msg_probe_2",
        "type": "message",
        "role": "assistant",
        "model": "claude-probe",
        "content": [{"type": "text", "text": "A"}, {"type": "text", "text": ""}],
        "stop_reason": None,
        "usage": {
            "input_tokens": 2,
            "output_tokens": 9,
            "cache_creation_input_tokens": 6,
            "cache_creation": {"ephemeral_5m_input_tokens": 6, "ephemeral_1h_input_tokens": 0},
            "output_tokens_details": {"thinking_tokens": 4},
        },
    },
]
