"""Fast, exact equivalents of the LangChain body building and result parsing.

Why this module exists: batch lines must be exactly what a realtime `.invoke()` would send, and
results exactly the `AIMessage` it would return, so `agent.providers.openai` and
`agent.providers.mistral` delegate to the LangChain chat models (`_get_request_payload`,
`_create_message_dicts`, `_create_chat_result`) and, for OpenAI, to the SDK's lenient
`ChatCompletion` construction. That costs tens of microseconds per request to build and hundreds
to parse (message coercion, pydantic validation, SDK model construction and dumping), which
dominates preparing or collecting a job of 50,000 requests.

The classes here reproduce the *result* of those reference paths directly, for the shapes that
make up nearly all traffic:

- bodies whose messages are plain `system`/`developer`/`user`/`assistant` dicts with only `role`
  and `content`, content being a string or a list of `{"type": "text", "text": str}` parts, and
  whose per-request parameters are common sampling parameters (temperature, max_tokens, top_p,
  stop, seed, n, penalties, ...);
- result bodies with one choice, string (or null) content, no tool calls, function call, audio or
  logprobs.

Everything else (tool calls and tool messages, names, images, `tools`, `response_format`, extra
or malformed fields, several choices, ...) takes the reference path, so a fast-path object always
returns what the reference returns; fast is only ever an optimisation.

How exactness is kept:

- Builders read the chat model's default parameters once and replay the reference merging rules
  (call kwargs override defaults in place; for OpenAI `stop=None` is ignored, `max_tokens`
  becomes `max_completion_tokens`, o-series models send `system` as `developer` and `stream` is
  dropped; for Mistral `developer` is sent as `system`, and a call's `stop` of None means the
  model's own stop and an empty one none), preserving key order so the JSONL bytes are identical
  too.
- The OpenAI parser reproduces what `ChatCompletion.model_dump()` yields after
  `construct_type` (every declared field present, missing optional ones as `None`, token details
  expanded to all their fields), taking field names from the SDK models themselves.
- Messages are assembled as the `__dict__` the validated `AIMessage` would have (including
  `model_fields_set`), then installed the way `BaseModel.model_construct` does, which skips
  validation but yields an equal object that dumps and serialises identically.
- Every builder and parser runs a few probes through both paths when it is created and disables
  its fast path (with a warning) if any probe differs, so a library upgrade that changes the
  reference for these shapes costs speed rather than silently changing results. The property
  tests in `tests/unit_tests/test_fastpath.py` are the real guarantee.

Usage, one object per job:

    builder = OpenAIBodyBuilder(model, ctx_params)       # or MistralBodyBuilder
    body = builder.build(request)                        # == request_body(chat_model(...), request)

    parser = OpenAIMessageParser(job_chat_model(job), params=job["params"])  # or Mistral...
    custom_id, message, error, retryable = parser.parse_line(raw, job["job_id"])
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
from langchain_core.messages import AIMessage
from langchain_core.utils.utils import LC_ID_PREFIX
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessage
from openai.types.completion_usage import (
    CompletionTokensDetails,
    CompletionUsage,
    PromptTokensDetails,
)

from agent.providers import openai as openai_provider
from agent.providers.base import (
    FastExtra,
    UnusableAnswer,
    chat_completion_usage,
    finish_message,
    message_dump,
    parse_output_line,
)
from agent.requests import BatchRequest
from agent.state import RequestError, Usage
from agent.structured import OutputSpec, bind_kwargs

if TYPE_CHECKING:
    from langchain_mistralai import ChatMistralAI

__all__ = [
    "MistralBodyBuilder",
    "MistralMessageParser",
    "OpenAIBodyBuilder",
    "OpenAIMessageParser",
    "OutputLine",
    "message_id",
]

logger = logging.getLogger("batch_agent")
_Probe = TypeVar("_Probe")

OutputLine = tuple[str, AIMessage | None, RequestError | None, bool]
"""`(custom_id, message, error, retryable)`: one parsed output or error line."""

_MISSING: Final = object()

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

# --------------------------------------------------------------------------------------------
# Message ids and AIMessage assembly
# --------------------------------------------------------------------------------------------

_NAMESPACE_URL_BYTES: Final = uuid.NAMESPACE_URL.bytes
# uuid5 forces the variant bits 10xx into the first hex digit of the 4th group.
_VARIANT_DIGIT: Final = {d: "89ab"[int(d, 16) & 0x3] for d in "0123456789abcdef"}


def message_id(message_key: str) -> str:
    """Return the id `finish_message` gives a message parsed for `message_key`.

    Equal to `f"{LC_ID_PREFIX}-{uuid.uuid5(uuid.NAMESPACE_URL, message_key)}-0"`, computed
    without building `UUID` objects (several times faster).

    Args:
        message_key: `"{job_id}/{custom_id}"`.

    Returns:
        The `lc_run-` message id.
    """
    h = hashlib.sha1(_NAMESPACE_URL_BYTES + message_key.encode()).hexdigest()
    return f"{LC_ID_PREFIX}-{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}-0"


_AI_FIELDS: Final = (
    "content",
    "additional_kwargs",
    "response_metadata",
    "type",
    "name",
    "id",
    "tool_calls",
    "invalid_tool_calls",
    "usage_metadata",
)
# Installing a prepared `__dict__` is only equivalent to validation while AIMessage keeps this
# exact field list, allows extras and has no private attributes or post-init hook.
_RAW_CONSTRUCT_OK: Final = (
    tuple(AIMessage.model_fields) == _AI_FIELDS
    and AIMessage.model_config.get("extra") == "allow"
    and not AIMessage.__private_attributes__
    and AIMessage.__pydantic_post_init__ is None
)
_object_setattr = object.__setattr__
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
_MISTRAL_FIELDS_SET: Final = frozenset(
    {"content", "additional_kwargs", "tool_calls", "invalid_tool_calls", "response_metadata", "id"}
)


def _ai_message(values: dict[str, Any], fields_set: set[str]) -> AIMessage:
    """Install `values` as a validated AIMessage's state, as `model_construct` does."""
    message = AIMessage.__new__(AIMessage)
    _object_setattr(message, "__dict__", values)
    _object_setattr(message, "__pydantic_fields_set__", fields_set)
    _object_setattr(message, "__pydantic_extra__", FastExtra())
    _object_setattr(message, "__pydantic_private__", None)
    return message


def _same_json(a: Any, b: Any) -> bool:
    """Tell whether two JSON-like values are equal *and* serialise to the same bytes (order)."""
    try:
        return bool(a == b) and json.dumps(a, ensure_ascii=False) == json.dumps(
            b, ensure_ascii=False
        )
    except (TypeError, ValueError):
        return False


def _same_message(a: AIMessage, b: AIMessage) -> bool:
    """Tell whether two messages are equal, dump the same and have the same set fields."""
    return (
        a == b
        and a.model_fields_set == b.model_fields_set
        and _same_json(a.model_dump(), b.model_dump())
        and _same_json(message_dump(a), b.model_dump())
    )


# --------------------------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------------------------


def _text_parts(content: list[Any]) -> list[dict[str, str]] | None:
    """Copy a list of plain text parts, or return None if any part is something else."""
    parts = []
    for part in content:
        if type(part) is not dict or len(part) != 2 or part.get("type") != "text":
            return None
        text = part.get("text")
        if type(text) is not str:
            return None
        parts.append({"type": "text", "text": text})
    return parts


def _plain_messages(
    messages: Any, roles: Mapping[str, str], content_first: bool
) -> list[dict[str, Any]] | None:
    """Convert plain `{role, content}` dicts to wire dicts, or None if one is not plain.

    Args:
        messages: The request's message dicts.
        roles: Input role -> wire role; a role missing here is not handled.
        content_first: OpenAI's dicts put `content` before `role`, Mistral's after.
    """
    if type(messages) is not list:
        return None
    out: list[dict[str, Any]] = []
    for message in messages:
        if type(message) is not dict or len(message) != 2 or "content" not in message:
            return None
        role = message.get("role")
        if type(role) is not str:
            return None
        role = roles.get(role)
        if role is None:
            return None
        content = message["content"]
        if type(content) is str:
            pass
        elif type(content) is list and content:
            content = _text_parts(content)
            if content is None:
                return None
        elif not content:
            # `convert_to_messages` turns None (and other falsy content) into "".
            content = ""
        else:
            return None
        out.append(
            {"content": content, "role": role}
            if content_first
            else {"role": role, "content": content}
        )
    return out


class _BodyBuilder:
    """What both body builders share: the fast path with its reference fallback."""

    fast_enabled: bool

    def build(self, request: BatchRequest) -> dict[str, Any]:
        """Return the body `request_body(chat_model(model, ctx_params), request)` returns.

        Args:
            request: One validated request.

        Returns:
            The chat-completions body (without `stream`).
        """
        if self.fast_enabled:
            body = self.build_fast(request)
            if body is not None:
                return body
        return self.build_reference(request)

    def build_fast(self, request: BatchRequest) -> dict[str, Any] | None:
        """Build the body directly, or return None if it needs the reference path."""
        raise NotImplementedError

    def build_reference(self, request: BatchRequest) -> dict[str, Any]:
        """Build the body through the LangChain chat model (the reference path)."""
        raise NotImplementedError


class OpenAIBodyBuilder(_BodyBuilder):
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
            ctx_params: Model parameters from the run context (as given to `prepare`).
            spec: The request set's tools / response schema; with one, every request takes the
                reference path (bound through `bind_tools` / `with_structured_output`).
        """
        self.llm: ChatOpenAI = openai_provider.chat_model(model, ctx_params)
        self._bound: dict[str, Any] = openai_provider.bound_kwargs(self.llm, spec)
        self._defaults: dict[str, Any] = self.llm._default_params
        # Defaults the SDK does not send as they are (`extra_body`, int `logit_bias` keys):
        # every body then goes through `wire_body`, as the reference's does.
        self._wire = "logit_bias" in self._defaults or not self._defaults.keys().isdisjoint(
            openai_provider.REQUEST_OPTIONS
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
            and openai_provider.responses_trigger(self.llm, {}) is None
            # Every key the fast path can emit is one the SDK takes (others are refused by the
            # reference path, as realtime refuses them).
            and self._defaults.keys() | OPENAI_FAST_PARAMS <= openai_provider.CREATE_ARGS
        )
        if self.fast_enabled:
            self.fast_enabled = _self_check_builder(self)

    def build_reference(self, request: BatchRequest) -> dict[str, Any]:
        """Build the body through `ChatOpenAI._get_request_payload` (the reference path)."""
        return openai_provider.request_body(self.llm, request, self._bound)

    def build_fast(self, request: BatchRequest) -> dict[str, Any] | None:
        """Build the body directly, or return None if the request needs the reference path."""
        params = request.params
        for key in params:
            if key not in OPENAI_FAST_PARAMS:
                return None
        if (
            self._check_model
            and "model" in params
            and openai_provider.responses_only_model(params["model"])
        ):
            return None  # refused by the reference path, with the request's id
        messages = _plain_messages(request.messages, self._roles, True)
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
            return openai_provider.wire_body(payload, request.id)
        return payload


class MistralBodyBuilder(_BodyBuilder):
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
            ctx_params: Model parameters from the run context (as given to `prepare`).
            spec: The request set's tools / response schema; with one, every request takes the
                reference path (bound through `bind_tools` / `with_structured_output`).
        """
        from agent.providers import mistral as mistral_provider  # imported only for Mistral jobs

        self.llm: ChatMistralAI = mistral_provider.chat_model(model, ctx_params)
        self._bound: dict[str, Any] = bind_kwargs(self.llm, spec)
        # `_create_message_dicts(messages, stop)`: the client params, then `stop` (the call's,
        # else the model's own) when it is not empty.
        self._params: dict[str, Any] = self.llm._client_params
        self._stop: list[str] | None = self.llm.stop
        self.fast_enabled = (
            not self._bound
            and type(self.llm).__name__ == "ChatMistralAI"
            and _self_check_builder(self)
        )

    def build_reference(self, request: BatchRequest) -> dict[str, Any]:
        """Build the body through `ChatMistralAI._create_message_dicts` (the reference path)."""
        from agent.providers import mistral as mistral_provider

        return mistral_provider.request_body(self.llm, request, self._bound)

    def build_fast(self, request: BatchRequest) -> dict[str, Any] | None:
        """Build the body directly, or return None if the request needs the reference path."""
        params = request.params
        for key in params:
            if key not in MISTRAL_FAST_PARAMS:
                return None
        messages = _plain_messages(request.messages, self._ROLES, False)
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


def _probe_requests() -> list[BatchRequest]:
    """Return requests covering every role, content form and merge rule the builders handle."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Bonjour ?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Oui."}]},
        {"role": "assistant", "content": ""},
        {
            "role": "user",
            "content": [{"type": "text", "text": "é\u2028"}, {"type": "text", "text": ""}],
        },
    ]
    return [
        BatchRequest("probe-1", messages, {}),
        BatchRequest(
            "probe-2",
            messages,
            {"stop": ["\n"], "temperature": 0.5, "max_tokens": 7, "model": "x", "seed": 1},
        ),
        BatchRequest("probe-3", messages[2:3], {"stop": None, "top_p": 0.5, "n": 2}),
        BatchRequest("probe-4", messages[:3], {"stop": [], "seed": 2}),
    ]


def fast_path_agrees(
    what: str,
    probes: Iterable[_Probe],
    fast: Callable[[_Probe], Any],
    reference: Callable[[_Probe], Any],
    same: Callable[[Any, Any], bool],
) -> bool:
    """Run `probes` through a fast path and its reference; tell whether every result agrees.

    The self-check every fast builder and parser runs when created. At the first probe that
    raises, that the fast path declines (None), or whose results differ, it logs that `what` is
    disabled and returns False, so a library upgrade costs speed rather than changing results.
    """
    for probe in probes:
        try:
            got = fast(probe)
            expected = reference(probe)
        except Exception:
            logger.warning("%s disabled: self-check raised", what, exc_info=True)
            return False
        if got is None or not same(got, expected):
            logger.warning("%s disabled: it differs from the reference", what)
            return False
    return True


def _self_check_builder(builder: OpenAIBodyBuilder | MistralBodyBuilder) -> bool:
    return fast_path_agrees(
        f"fast body building for {type(builder).__name__}",
        _probe_requests(),
        builder.build_fast,
        builder.build_reference,
        _same_json,
    )


# --------------------------------------------------------------------------------------------
# Result parsing
# --------------------------------------------------------------------------------------------

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
    """Dump a token-details object as the SDK would, or return `_MISSING` if unusual.

    `template` maps every field of the SDK model to None in declaration order, so merging the
    known keys into it yields `model_dump()`'s dict: all fields, in order, missing ones None.
    Only int (or null) counts are handled: the SDK's lenient construction turns `"7"`, `0.0` or
    `true` into an int and keeps `7.5` as it is, which the reference path reproduces.
    """
    if details is None:
        return None
    if type(details) is not dict or not details.keys() <= template.keys():
        return _MISSING
    for value in details.values():
        if value is not None and type(value) is not int:
            return _MISSING
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


class _MessageParser:
    """What both parsers share: the fallback wiring and `parse_line`."""

    fast_enabled: bool

    def parse(self, body: dict[str, Any], message_key: str) -> AIMessage:
        """Return the AIMessage the reference parse returns for `body`.

        Args:
            body: The `response.body` of a successful output line.
            message_key: `"{job_id}/{custom_id}"`, from which the message id is derived.

        Returns:
            A message equal to the reference one (same fields, dump and serialisation).
        """
        if self.fast_enabled:
            message = self.parse_fast(body, message_key)
            if message is not None:
                return message
        return self.parse_reference(body, message_key)

    def parse_fast(self, body: Any, message_key: str) -> AIMessage | None:
        """Parse `body` directly, or return None if it needs the reference path."""
        raise NotImplementedError

    def parse_reference(self, body: dict[str, Any], message_key: str) -> AIMessage:
        """Parse `body` through the LangChain chat model (the reference path)."""
        raise NotImplementedError

    def parse_line(self, raw: bytes | str, job_id: str) -> OutputLine:
        """Parse one output/error file line into `(custom_id, message, error, retryable)`.

        Same result as `parse_output_line(raw)` followed by the reference parse of the body with
        the key `f"{job_id}/{custom_id}"`. Successful lines are decoded with `orjson` and parsed
        here; failed or unusual lines (including anything `orjson` rejects but `json` accepts)
        go through `parse_output_line` itself, so error codes and retryability are unchanged.

        Args:
            raw: One line of the output or error file.
            job_id: The provider's job id (first half of the message key).

        Returns:
            `(custom_id, message, None, False)` for a success, `(custom_id, None, error,
            retryable)` for a failure.

        Raises:
            Exception: What the reference parse of the answer raises (realtime `.invoke()` would
                raise it); `agent.providers.base.read_outcome` makes it the request's failure.
        """
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._reference_line(raw, job_id)
        if type(line) is not dict or line.get("error"):
            return self._reference_line(raw, job_id)
        response = line.get("response")
        if type(response) is not dict:
            return self._reference_line(raw, job_id)
        status_code = response.get("status_code")
        body = response.get("body")
        if (
            (status_code is not None and type(status_code) is not int)
            or (status_code or 0) >= 400
            or type(body) is not dict
        ):
            return self._reference_line(raw, job_id)
        custom_id = line.get("custom_id")
        if type(custom_id) is not str:
            return self._reference_line(raw, job_id)
        return custom_id, self.parse(body, f"{job_id}/{custom_id}"), None, False

    def billed_usage(self, line: Any) -> Usage | None:
        """Return the usage billed for a decoded output line (`response.body.usage`)."""
        return chat_completion_usage(line)

    def _reference_line(self, raw: bytes | str, job_id: str) -> OutputLine:
        custom_id, body, error, retryable = parse_output_line(raw)
        if body is None:
            return custom_id, None, error, retryable
        return custom_id, self.parse(body, f"{job_id}/{custom_id}"), None, False


class OpenAIMessageParser(_MessageParser):
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
        self.llm: ChatOpenAI = openai_provider.chat_model(model, params or {})
        bound = openai_provider.bound_kwargs(self.llm, spec)
        self._response_format: Any = bound.get("response_format")
        self._input_tools: list[Any] | None = bound.get("tools")
        self.fast_enabled = (
            self._response_format is None
            and _RAW_CONSTRUCT_OK
            and _USAGE_SHAPE_OK
            and self.llm.output_version != "v1"
            and type(self.llm) is ChatOpenAI
        )
        if self.fast_enabled:
            self.fast_enabled = _self_check_parser(self, _OPENAI_PROBES)

    def parse_reference(self, body: dict[str, Any], message_key: str) -> AIMessage:
        """Parse through the SDK's `ChatCompletion` and `ChatOpenAI._create_chat_result`.

        Raises:
            UnusableAnswer: With a response format, the SDK's `chat.completions.parse` refuses
                the answer (cut at `max_tokens`, stopped by a content filter, unparseable strict
                tool arguments), which realtime `.invoke()` raises; it carries that exception
                and the plain message, if one can be built.
        """
        completion = openai_provider.parse_completion(body)
        if self._response_format is not None:
            try:
                parsed = openai_provider.parse_structured(
                    completion, self._response_format, self._input_tools
                )
            except Exception as exc:
                raise UnusableAnswer(exc, self._plain_message(completion, message_key)) from exc
            completion = parsed
        result = self.llm._create_chat_result(completion)
        return finish_message(self.llm, result, message_key)

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
            if completion_details is _MISSING or prompt_details is _MISSING:
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
        return _ai_message(
            {
                "content": content or "",
                "additional_kwargs": {"refusal": refusal},
                "response_metadata": response_metadata,
                "type": "ai",
                "name": None,
                "id": message_id(message_key),
                "tool_calls": [],
                "invalid_tool_calls": [],
                "usage_metadata": usage_metadata,
            },
            fields_set,
        )


class MistralMessageParser(_MessageParser):
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
        from agent.providers import mistral as mistral_provider

        self.llm: ChatMistralAI = mistral_provider.chat_model(model, params or {})
        self._model = self.llm.model
        self.fast_enabled = (
            _RAW_CONSTRUCT_OK
            and self.llm.output_version != "v1"
            and type(self.llm).__name__ == "ChatMistralAI"
        )
        if self.fast_enabled:
            self.fast_enabled = _self_check_parser(self, _MISTRAL_PROBES)

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
        token_usage = body.get("usage", _MISSING)
        if token_usage is _MISSING:
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
        return _ai_message(
            {
                "content": content or "",
                "additional_kwargs": {},
                "response_metadata": {
                    "token_usage": token_usage,
                    "model_name": model,
                    "model": model,
                    "finish_reason": choice.get("finish_reason"),
                    "model_provider": "mistralai",
                },
                "type": "ai",
                "name": None,
                "id": message_id(message_key),
                "tool_calls": [],
                "invalid_tool_calls": [],
                "usage_metadata": usage_metadata,
            },
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


def _self_check_parser(parser: _MessageParser, probes: list[dict[str, Any]]) -> bool:
    return fast_path_agrees(
        f"fast result parsing for {type(parser).__name__}",
        probes,
        lambda probe: parser.parse_fast(fresh_copy(probe), "probe/r1"),
        lambda probe: parser.parse_reference(fresh_copy(probe), "probe/r1"),
        _same_message,
    )


def fresh_copy(probe: dict[str, Any]) -> Any:
    """Return a deep copy of a probe body, as a downloaded line decodes (no shared objects)."""
    return orjson.loads(orjson.dumps(probe))
