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
    """

    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    digest: str
    tool_calls: tuple[ToolCall, ...] = ()

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
    prompt_tokens = 0
    for message in messages:
        text = message_text(message)
        prompt_tokens += PER_MESSAGE_OVERHEAD + len(text.split())
        if message.get("role") == "user":
            last_user = text
    content = REPLY_PREFIX + last_user
    structured, tool_calls = plan_answer(body, last_user, content)
    if tool_calls:
        return Reply(
            content="",
            finish_reason="tool_calls",
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(len(call.arguments.split()) for call in tool_calls),
            digest=body_digest(body),
            tool_calls=tuple(tool_calls),
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
    )
