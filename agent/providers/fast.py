"""The shared kit of the parity-checked fast paths: what every provider's `fast.py` builds on.

Batch lines must be exactly what a realtime `.invoke()` would send, and results exactly the
`AIMessage` it would return, so each provider's reference path (`agent.providers.<name>.reference`)
delegates to its LangChain chat model. That costs tens of microseconds per request to build and
hundreds to parse, which dominates preparing or collecting a job of 50,000 requests; each
provider's `fast.py` reproduces the *result* of its reference path directly for the shapes that
make up nearly all traffic, and leaves everything else to the reference, so a fast-path object
always returns what the reference returns; fast is only ever an optimisation.

This module holds what those fast paths share:

- `message_id` (the `lc_run-` id `finish_message` derives, without building UUIDs) and
  `ai_message`, which installs a tool-call-free message's `__dict__` as a validated
  `AIMessage`'s state, as `BaseModel.model_construct` does (valid while `RAW_CONSTRUCT_OK`);
- `plain_messages`, the plain `{role, content}` message shapes OpenAI and Mistral bodies share,
  and `BodyBuilder`, the fast path with its reference fallback (all three builders);
- `MessageParser`, the fast parse with its reference fallback and reference check (all three
  parsers), and the reading of the chat-completion output line (`{custom_id, response:
  {status_code, body}, error}`) OpenAI and Mistral share, around a provider's body parse;
- the self-check every fast builder and parser runs when created (`fast_path_agrees`, with
  `probe_requests` and `self_check_builder` / `self_check_parser`): it runs a few probes
  through both paths and disables the fast path (with a warning) if any differs, so a library
  upgrade that changes the reference for these shapes costs speed rather than silently
  changing results. The property tests (`tests/unit_tests/test_fastpath.py`,
  `test_anthropic_fastpath.py`) are the real guarantee.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import orjson
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.utils.utils import LC_ID_PREFIX

from agent.providers.base import (
    FastExtra,
    chat_completion_usage,
    message_dump,
    parse_output_line,
)
from agent.requests import BatchRequest
from agent.state import RequestError, Usage

logger = logging.getLogger("batch_agent")
_Probe = TypeVar("_Probe")

OutputLine = tuple[str, AIMessage | None, RequestError | None, bool]
"""`(custom_id, message, error, retryable)`: one parsed output or error line."""

MISSING: Final = object()

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
RAW_CONSTRUCT_OK: Final = (
    tuple(AIMessage.model_fields) == _AI_FIELDS
    and AIMessage.model_config.get("extra") == "allow"
    and not AIMessage.__private_attributes__
    and AIMessage.__pydantic_post_init__ is None
)
_object_setattr = object.__setattr__


def ai_message(
    content: str | list[Any],
    additional_kwargs: dict[str, Any],
    response_metadata: dict[str, Any],
    message_key: str,
    usage_metadata: dict[str, Any] | None,
    fields_set: set[str],
) -> AIMessage:
    """Return the tool-call-free AIMessage a parse builds, as `model_construct` would.

    Its state is installed directly, in the field order of a validated `AIMessage` (which
    parity compares), with the `message_id` of `message_key` and no tool calls.

    Args:
        content: The message content.
        additional_kwargs: The message's `additional_kwargs`.
        response_metadata: The message's `response_metadata`.
        message_key: `"{job_id}/{custom_id}"`, from which the message id is derived.
        usage_metadata: The message's `usage_metadata` (None when the answer had no usage).
        fields_set: The fields the reference parse sets explicitly.
    """
    message = AIMessage.__new__(AIMessage)
    _object_setattr(
        message,
        "__dict__",
        {
            "content": content,
            "additional_kwargs": additional_kwargs,
            "response_metadata": response_metadata,
            "type": "ai",
            "name": None,
            "id": message_id(message_key),
            "tool_calls": [],
            "invalid_tool_calls": [],
            "usage_metadata": usage_metadata,
        },
    )
    _object_setattr(message, "__pydantic_fields_set__", fields_set)
    _object_setattr(message, "__pydantic_extra__", FastExtra())
    _object_setattr(message, "__pydantic_private__", None)
    return message


def same_json(a: Any, b: Any) -> bool:
    """Tell whether two JSON-like values are equal *and* serialise to the same bytes (order)."""
    try:
        return bool(a == b) and json.dumps(a, ensure_ascii=False) == json.dumps(
            b, ensure_ascii=False
        )
    except (TypeError, ValueError):
        return False


def same_message(a: AIMessage, b: AIMessage) -> bool:
    """Tell whether two messages are equal, dump the same and have the same set fields."""
    return (
        a == b
        and a.model_fields_set == b.model_fields_set
        and same_json(a.model_dump(), b.model_dump())
        and same_json(message_dump(a), b.model_dump())
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


def plain_messages(
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


class BodyBuilder:
    """What the body builders share: the fast path with its reference fallback."""

    fast_enabled: bool

    def build(self, request: BatchRequest) -> dict[str, Any]:
        """Return the body the provider's reference path builds for `request`.

        That is `request_body(chat_model(model, ctx_params), request)` (OpenAI, Mistral) or
        `request_params(...)` (Anthropic).

        Args:
            request: One validated request.

        Returns:
            The body of the batch line (chat completions without `stream`, or Messages).

        Raises:
            InputError: The reference path refuses the request.
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


def probe_requests() -> list[BatchRequest]:
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


def self_check_builder(builder: BodyBuilder, probes: list[BatchRequest] | None = None) -> bool:
    """Tell whether `builder`'s fast path builds every probe request as its reference does.

    `probes` defaults to the shared `probe_requests`; a provider with its own message rules
    (Anthropic) passes its own.
    """
    return fast_path_agrees(
        f"fast body building for {type(builder).__name__}",
        probe_requests() if probes is None else probes,
        builder.build_fast,
        builder.build_reference,
        same_json,
    )


# --------------------------------------------------------------------------------------------
# Result parsing
# --------------------------------------------------------------------------------------------


class MessageParser:
    """What the parsers share: the fallback wiring, `parse_line` and the reference check.

    Anthropic's parser overrides `parse_line` and `billed_usage` (its results file is not the
    chat-completion output file).
    """

    fast_enabled: bool
    probes: list[dict[str, Any]]
    """Answer bodies of the common shapes, parsed by both paths when the parser is built."""

    def check_reference(self) -> None:
        """Parse every probe through the reference path, raising whatever it raises."""
        for probe in self.probes:
            self.parse_reference(fresh_copy(probe), "probe/r1")

    def parse(self, body: dict[str, Any], message_key: str) -> AIMessage:
        """Return the AIMessage the reference parse returns for `body`.

        Args:
            body: The `response.body` of a successful output line (Anthropic: the
                `result.message` of a succeeded line).
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


def self_check_parser(parser: MessageParser) -> bool:
    """Tell whether `parser`'s fast path parses every one of its probes as its reference does."""
    return fast_path_agrees(
        f"fast result parsing for {type(parser).__name__}",
        parser.probes,
        lambda probe: parser.parse_fast(fresh_copy(probe), "probe/r1"),
        lambda probe: parser.parse_reference(fresh_copy(probe), "probe/r1"),
        same_message,
    )


def fast_parsing_enabled(parser: MessageParser, llm: BaseChatModel, chat_class: type) -> bool:
    """Tell whether a parser's fast path may run for `llm`, after checking it on its probes.

    It may when messages can be built raw (`RAW_CONSTRUCT_OK`), `llm` is exactly `chat_class`
    (a subclass may parse differently) with v0 output (v1 content blocks go through the
    reference), and the fast path parses every probe (`parser.probes`, set before this call)
    as the reference does. The parser's own conditions (the SDK's answer shapes) come first.
    """
    return (
        RAW_CONSTRUCT_OK
        and llm.output_version != "v1"
        and type(llm) is chat_class
        and self_check_parser(parser)
    )


def fresh_copy(probe: dict[str, Any]) -> Any:
    """Return a deep copy of a probe body, as a downloaded line decodes (no shared objects)."""
    return orjson.loads(orjson.dumps(probe))
