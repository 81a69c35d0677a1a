"""The deterministic reply rule shared by both emulated providers.

The emulator never calls a model. A chat-completions request body is answered
from the body alone, so the same body always gets the same reply and the same
derived ids, in any process and on any day:

- **Content**: ``"Emulated reply to: " + <text of the last user message>``. When a
  message's ``content`` is a list of parts, the ``text`` of its text parts is
  concatenated (without separator). When there is no user message the text is empty.
- **Truncation**: if ``max_completion_tokens`` (preferred) or ``max_tokens`` is a
  positive integer, the reply is cut to that many whitespace-separated words,
  joined by single spaces, and ``finish_reason`` is ``"length"`` when words were
  actually dropped; otherwise ``finish_reason`` is ``"stop"``.
- **Tokens**: ``prompt_tokens`` = sum over messages of (3 + number of
  whitespace-separated words in the message text); ``completion_tokens`` = number
  of whitespace-separated words in the reply; ``total_tokens`` = their sum.
- **Tools and JSON answers**: a body with ``tools`` is answered with a tool call
  (``finish_reason`` ``"tool_calls"``), a body with a ``response_format`` with JSON built
  from its schema; the rules, and the markers ``[emulator:invalid_json]`` /
  ``[emulator:schema_violation]`` that break such answers on purpose, are in
  `agent.emulator.structured_answers`. A tool call's tokens are the words of its arguments.
- **Odd answers on purpose** (prompt markers in the last user message, shapes real providers
  do send; each protocol renders what applies to it, see `reshape_completion` /
  `reshape_message`):
  ``[emulator:refusal]``: a refusal. OpenAI: ``content: null`` with ``refusal`` set; Mistral:
  ``content: null``; Anthropic: ``stop_reason: "refusal"`` with the refusal text as content.
  ``[emulator:error_body]``: a 200 body that also carries an ``error`` object (OpenAI, Mistral).
  ``[emulator:no_choices]``: a 200 body with ``choices: []`` (OpenAI, Mistral).
  ``[emulator:tool_args_array]`` / ``[emulator:tool_args_string]``: tool-call arguments that are
  JSON but not an object (an array of the values, or the first value alone; for Anthropic the
  ``tool_use`` ``input`` is then that array or string); ``[emulator:tool_args_raw]``: OpenAI and
  Mistral tool-call ``arguments`` sent as the JSON value itself instead of a JSON string.
  Tokens are counted as for the normal answer (the provider bills them).
- **Invalid bodies**: a body that is not an object, lacks a non-empty ``messages``
  list, contains a message that is not an object, or a message whose ``role`` is
  not one of system/developer/user/assistant/tool, is rejected: the request gets an
  error line with HTTP status 400 and an ``invalid_request_error``.
- **Ids**: ``body_digest`` is the SHA-256 of the body serialised as canonical JSON
  (sorted keys, compact separators). Reply ids (``chatcmpl-…``, ``req_…``) are
  taken from it; per-line ids (``batch_req_…``, ``batch-…``) also hash the
  ``custom_id`` so two identical bodies in one batch keep distinct line ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from agent.emulator.structured_answers import ToolCall, plan_answer

REPLY_PREFIX = "Emulated reply to: "
REFUSAL_MARKER = "[emulator:refusal]"
ERROR_BODY_MARKER = "[emulator:error_body]"
NO_CHOICES_MARKER = "[emulator:no_choices]"
TOOL_ARGS_RAW_MARKER = "[emulator:tool_args_raw]"
SHAPE_MARKERS = frozenset(
    {REFUSAL_MARKER, ERROR_BODY_MARKER, NO_CHOICES_MARKER, TOOL_ARGS_RAW_MARKER}
)
REFUSAL_TEXT = "I can't help with that."
ALLOWED_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# Every message costs this many tokens on top of its words (role and separators).
PER_MESSAGE_OVERHEAD = 3


@dataclass(frozen=True)
class Reply:
    """A computed answer to one chat-completions request body.

    Attributes:
        content: The assistant message text.
        finish_reason: ``"stop"`` or ``"length"``.
        prompt_tokens: Tokens charged for the input, per the module rule.
        completion_tokens: Words in `content`.
        digest: Hex SHA-256 of the canonical body, the seed of derived ids.
        tool_calls: The tool calls of the answer (then `content` is empty).
        shapes: The odd-shape markers (`SHAPE_MARKERS`) found in the last user message.
    """

    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    digest: str
    tool_calls: tuple[ToolCall, ...] = ()
    shapes: frozenset[str] = frozenset()

    @property
    def total_tokens(self) -> int:
        """Return prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


class InvalidRequest(ValueError):
    """Raised for a body that the rule rejects; the message is user-facing.

    Args:
        message: Human-readable reason.
        param: The offending parameter, if any (reported in the error object).
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        """Store the message and parameter for the error object."""
        super().__init__(message)
        self.message = message
        self.param = param


def body_digest(body: Any) -> str:
    """Return the hex SHA-256 of a body serialised as canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def line_digest(custom_id: Any, digest: str) -> str:
    """Return a hex digest for a batch line from its custom_id and body digest."""
    return hashlib.sha256(f"{custom_id!r}\x00{digest}".encode()).hexdigest()


def message_text(message: dict[str, Any]) -> str:
    """Return the text of a message: its string content or its text parts joined.

    Args:
        message: A chat message object.

    Returns:
        The text; empty for missing or non-text content.
    """
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def validate_body(body: Any) -> list[dict[str, Any]]:
    """Check a chat-completions body and return its messages.

    Args:
        body: The decoded request body.

    Returns:
        The list of message objects.

    Raises:
        InvalidRequest: If the body breaks the rule in the module docstring.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", "body")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{index}] must be an object.", f"messages[{index}]")
        role = message.get("role")
        if role not in ALLOWED_ROLES:
            raise InvalidRequest(
                f"Invalid value for messages[{index}].role: {role!r}. Supported values are: "
                "'system', 'developer', 'user', 'assistant' and 'tool'.",
                f"messages[{index}].role",
            )
    return messages


def _word_limit(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        # bool is an int subclass; True must not mean "one word".
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def prompt_token_count(messages: Any) -> int:
    """Return the prompt tokens of chat messages by the module's rule (3 + words each).

    What a chat answer's usage reports, and what the OpenAI emulator's enqueued-token quota
    counts (`enqueued_token_limit`); anything that is not a list of messages counts 0.
    """
    if not isinstance(messages, list):
        return 0
    return sum(
        PER_MESSAGE_OVERHEAD + len(message_text(message).split())
        for message in messages
        if isinstance(message, dict)
    )


def compute_reply(body: Any) -> Reply:
    """Answer a chat-completions body by the deterministic rule.

    Args:
        body: The decoded request body.

    Returns:
        The reply with token counts and the body digest.

    Raises:
        InvalidRequest: If the body is rejected (see `validate_body`).
    """
    messages = validate_body(body)
    last_user = ""
    prompt_tokens = prompt_token_count(messages)
    for message in messages:
        if message.get("role") == "user":
            last_user = message_text(message)
    content = REPLY_PREFIX + last_user
    structured, tool_calls = plan_answer(body, last_user, content)
    shapes = frozenset(marker for marker in SHAPE_MARKERS if marker in last_user)
    if tool_calls:
        return Reply(
            content="",
            finish_reason="tool_calls",
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(len(call.arguments.split()) for call in tool_calls),
            digest=body_digest(body),
            tool_calls=tuple(tool_calls),
            shapes=shapes,
        )
    if structured is not None:
        content = structured
    finish_reason = "stop"
    limit = _word_limit(body)
    if limit is not None:
        words = content.split()
        if len(words) > limit:
            content = " ".join(words[:limit])
            finish_reason = "length"
    return Reply(
        content=content,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(content.split()),
        digest=body_digest(body),
        shapes=shapes,
    )


def reshape_completion(completion: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Give a chat-completions body (OpenAI, Mistral) the odd shapes `reply.shapes` ask for.

    Args:
        completion: The normal response body for `reply`; changed in place.
        reply: The computed answer (its `shapes`).

    Returns:
        `completion`.
    """
    if not reply.shapes:
        return completion
    for choice in completion.get("choices") or []:
        message = choice["message"]
        if REFUSAL_MARKER in reply.shapes:
            message["content"] = None
            message.pop("tool_calls", None)
            if "refusal" in message:  # OpenAI's field; Mistral's messages have none
                message["refusal"] = REFUSAL_TEXT
            choice["finish_reason"] = "stop"
        if TOOL_ARGS_RAW_MARKER in reply.shapes:
            for call in message.get("tool_calls") or []:
                call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    if ERROR_BODY_MARKER in reply.shapes:
        completion["error"] = {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    if NO_CHOICES_MARKER in reply.shapes:
        completion["choices"] = []
    return completion


def reshape_message(message: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """Give an Anthropic `Message` the odd shapes `reply.shapes` ask for (a refusal).

    Args:
        message: The normal `succeeded` message for `reply`; changed in place.
        reply: The computed answer (its `shapes`).

    Returns:
        `message`.
    """
    if REFUSAL_MARKER in reply.shapes:
        message["content"] = [{"type": "text", "text": REFUSAL_TEXT}]
        message["stop_reason"] = "refusal"
    return message
