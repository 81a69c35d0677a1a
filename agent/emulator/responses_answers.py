"""Emulated answers to OpenAI Responses-API bodies (`/v1/responses` batch lines).

A Responses body is answered by the same deterministic rule as a chat-completions body
(`agent.emulator.answers`): it is first read as the chat body it stands for (`chat_view`:
`instructions` and `input` items become messages, function tools and a named `tool_choice`
take their chat shape, `text.format` becomes `response_format`, `max_output_tokens` the word
limit), so the reply text, tool calls, JSON answers, markers and fault knobs are the chat ones.
The answer is then rendered as a `Response` object (`response_body`):

- `output`: a `reasoning` item first when the body asks for `reasoning` (with one
  `summary_text` when a `summary` is asked, and `encrypted_content` when `include` names
  `reasoning.encrypted_content`), then a `message` with one `output_text` (a `refusal` for the
  refusal marker), or one `function_call` item per tool call.
- `usage`: `input_tokens` as the chat rule's prompt tokens, of which the conversation before the
  last message counts as `input_tokens_details.cached_tokens` (a repeated prefix is what the
  prompt cache serves); `output_tokens` are the reply's words plus, with `reasoning`, as many
  reasoning tokens (`output_tokens_details.reasoning_tokens`) as the last user message has words
  (at least one).
- A reply cut at `max_output_tokens` is `status: "incomplete"` with
  `incomplete_details.reason` `max_output_tokens`; the `error_body` marker sets `error`, the
  `no_choices` marker leaves `output` empty.
"""

from __future__ import annotations

import json
from typing import Any, Final

from agent.emulator.answers import (
    ERROR_BODY_MARKER,
    NO_CHOICES_MARKER,
    PER_MESSAGE_OVERHEAD,
    REFUSAL_MARKER,
    REFUSAL_TEXT,
    TOOL_ARGS_RAW_MARKER,
    InvalidRequest,
    Reply,
    compute_reply,
    line_digest,
    message_text,
    validate_body,
)

RESPONSES_ENDPOINT: Final = "/v1/responses"
REASONING_SUMMARY_PREFIX: Final = "Emulated reasoning about: "


def chat_view(body: Any) -> Any:
    """Return the chat-completions body a Responses body stands for (non-objects unchanged).

    Args:
        body: The decoded `/v1/responses` request body.

    Returns:
        A chat body the rule of `agent.emulator.answers` answers; `messages` is missing when
        `input` is (then `validate_body` rejects it).
    """
    if not isinstance(body, dict):
        return body
    view: dict[str, Any] = {"model": body.get("model")}
    messages = _messages(body)
    if messages is not None:
        view["messages"] = messages
    tools = [_chat_tool(tool) for tool in body.get("tools") or [] if isinstance(tool, dict)]
    if tools:
        view["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        view["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None:
        view["tool_choice"] = choice
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: v for k, v in fmt.items() if k in ("name", "schema", "strict", "description")}
        view["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        view["response_format"] = {"type": "json_object"}
    if "max_output_tokens" in body:
        view["max_completion_tokens"] = body["max_output_tokens"]
    return view


def _messages(body: dict[str, Any]) -> list[Any] | None:
    """Return the chat messages of `instructions` and `input` (None without `input`)."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        return None
    messages: list[Any] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    for item in items:
        if not isinstance(item, dict):
            messages.append(item)  # rejected by the chat rule as "not an object"
        elif item.get("type") == "function_call":
            call = {"type": "function", "function": {"name": item.get("name")}}
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": str(item.get("output", ""))})
        elif item.get("type") == "reasoning":
            continue  # a previous turn's reasoning: no message of its own
        else:
            content = item.get("content")
            if isinstance(content, list):
                # `input_text` / `output_text` parts read as text parts.
                content = [
                    {"type": "text", "text": part["text"]}
                    for part in content
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                ]
            messages.append({"role": item.get("role"), "content": content})
    return messages


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """Return a Responses function tool in its chat shape (built-in tools unchanged)."""
    if tool.get("type") != "function" or "function" in tool:
        return tool
    function = {k: v for k, v in tool.items() if k != "type"}
    return {"type": "function", "function": function}


def request_error(body: Any) -> InvalidRequest | None:
    """Return why a Responses body fails on its own (a 400), or None if it is answered."""
    if not isinstance(body, dict):
        return InvalidRequest("The request body must be a JSON object.", "body")
    if _messages(body) is None:
        return InvalidRequest("'input' must be a string or a non-empty list.", "input")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return InvalidRequest("you must provide a model parameter", "model")
    try:
        validate_body(chat_view(body))
    except InvalidRequest as exc:
        return exc
    return None


def response_body(body: dict[str, Any], created: int) -> tuple[dict[str, Any], Reply]:
    """Answer a valid Responses body: the `Response` of a 200 line, and the reply behind it.

    Args:
        body: A request body `request_error` accepts.
        created: The ``created_at`` timestamp of the response.

    Returns:
        The ``response`` object (odd shapes applied) and the computed `Reply` (its tokens
        include the reasoning tokens, as the output line bills them).
    """
    view = chat_view(body)
    reply = compute_reply(view)
    messages = view["messages"]
    last_words = len(message_text(messages[-1]).split()) if isinstance(messages[-1], dict) else 0
    cached = reply.prompt_tokens - (PER_MESSAGE_OVERHEAD + last_words)
    reasoning = body.get("reasoning")
    reasoning_tokens = 0
    output: list[dict[str, Any]] = []
    if isinstance(reasoning, dict):
        user = _last_user(messages)
        reasoning_tokens = max(1, len(user.split()))
        item: dict[str, Any] = {
            "id": f"rs_{reply.digest[:32]}",
            "type": "reasoning",
            "summary": [],
        }
        if reasoning.get("summary"):
            item["summary"] = [
                {"type": "summary_text", "text": REASONING_SUMMARY_PREFIX + user},
            ]
        if "reasoning.encrypted_content" in (body.get("include") or []):
            item["encrypted_content"] = f"emulated-{reply.digest[:48]}"
        output.append(item)
    if reply.tool_calls:
        for index, call in enumerate(reply.tool_calls):
            seed = line_digest(index, reply.digest)
            arguments: Any = call.arguments
            if TOOL_ARGS_RAW_MARKER in reply.shapes:
                arguments = json.loads(call.arguments)
            output.append(
                {
                    "id": f"fc_{seed[:32]}",
                    "type": "function_call",
                    "call_id": f"call_{seed[32:56]}",
                    "name": call.name,
                    "arguments": arguments,
                    "status": "completed",
                }
            )
    else:
        part: dict[str, Any] = {
            "type": "output_text",
            "text": reply.content,
            "annotations": [],
            "logprobs": [],
        }
        if REFUSAL_MARKER in reply.shapes:
            part = {"type": "refusal", "refusal": REFUSAL_TEXT}
        output.append(
            {
                "id": f"msg_{reply.digest[:32]}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [part],
            }
        )
    output_tokens = reply.completion_tokens + reasoning_tokens
    incomplete = reply.finish_reason == "length"
    response: dict[str, Any] = {
        "id": f"resp_{reply.digest[:32]}",
        "object": "response",
        "created_at": created,
        "status": "incomplete" if incomplete else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [] if NO_CHOICES_MARKER in reply.shapes else output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {
            "effort": reasoning.get("effort") if isinstance(reasoning, dict) else None,
            "summary": reasoning.get("summary") if isinstance(reasoning, dict) else None,
        },
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": reply.prompt_tokens,
            "input_tokens_details": {"cached_tokens": max(cached, 0), "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": reply.prompt_tokens + output_tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
    if ERROR_BODY_MARKER in reply.shapes:
        response["error"] = {
            "code": "server_error",
            "message": "The server had an error while processing your request.",
        }
    billed = Reply(
        content=reply.content,
        finish_reason=reply.finish_reason,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=output_tokens,
        digest=reply.digest,
        tool_calls=reply.tool_calls,
        shapes=reply.shapes,
    )
    return response, billed


def _last_user(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""
