"""Gemini answers: a ``GenerateContentRequest`` read as a chat body, a `Reply` as a response.

The emulator has one reply rule (`agent.emulator.answers`) and one planner of tool calls and
JSON answers (`agent.emulator.structured_answers`), both over chat-completions bodies. This
module translates a Gemini request into such a body and the computed `Reply` back into a
``GenerateContentResponse`` as the Developer API writes it (camelCase JSON; the snake_case field
names the API also accepts are read too):

- **Messages**: ``systemInstruction`` is a first system message; each of ``contents`` is a
  message, role ``user`` (a content made only of ``functionResponse`` parts is a tool message)
  or ``model`` (an assistant message); the text is its ``text`` parts joined.
- **Settings**: ``generationConfig.maxOutputTokens`` is ``max_tokens``;
  ``tools[].functionDeclarations`` (``parameters``, an OpenAPI schema with upper-case types,
  or ``parametersJsonSchema``) are the tools; ``toolConfig.functionCallingConfig`` (``mode``
  ANY / AUTO / NONE, ``allowedFunctionNames``) the tool choice; ``responseMimeType:
  application/json`` with ``responseSchema`` or ``responseJsonSchema`` a JSON-schema answer
  (without a schema, a JSON object answer).
- **Response**: ``{"candidates": [{"content": {"role": "model", "parts": [{"text"}] or
  [{"functionCall": {"name", "args"}}]}, "finishReason": "STOP" | "MAX_TOKENS", "index": 0}],
  "usageMetadata": {"promptTokenCount", "candidatesTokenCount", "totalTokenCount",
  "promptTokensDetails"}, "modelVersion", "responseId"}``. As in proto3 JSON, zero counts are
  left out. A request with a positive ``generationConfig.thinkingConfig.thinkingBudget`` also
  reports ``thoughtsTokenCount`` = min(budget, candidatesTokenCount), counted in
  ``totalTokenCount`` (thinking tokens are billed as output). Tool-call arguments that are not a JSON object (the
  ``[emulator:invalid_json]`` / ``[emulator:tool_args_array]`` / ``[emulator:tool_args_string]``
  markers) cannot be a ``functionCall.args`` Struct, so they come as a text part.
- **Odd shapes**: ``[emulator:refusal]`` gives a candidate with ``finishReason: "SAFETY"`` and no
  ``content`` (how Gemini withholds an answer); ``[emulator:no_choices]`` a response with no
  ``candidates`` and ``promptFeedback.blockReason: "SAFETY"`` (a blocked prompt). The markers
  ``[emulator:error_body]`` and ``[emulator:tool_args_raw]`` have no Gemini shape and change
  nothing.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from agent.emulator.answers import NO_CHOICES_MARKER, REFUSAL_MARKER, Reply, line_digest

JSON_MIME = "application/json"
_ROLES = {"user": "user", "model": "assistant"}


class InvalidGeminiRequest(ValueError):
    """A request the API would refuse with INVALID_ARGUMENT; the message is user-facing."""


def field(obj: dict[str, Any], camel: str) -> Any:
    """Return ``obj[camel]``, or the snake_case spelling the API also accepts."""
    if camel in obj:
        return obj[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(snake)


def _parts(content: Any) -> list[dict[str, Any]]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _text(content: Any) -> str:
    return "".join(p["text"] for p in _parts(content) if isinstance(p.get("text"), str))


def chat_body(request: Any) -> dict[str, Any]:
    """Translate a ``GenerateContentRequest`` into the chat body the reply rule answers.

    Args:
        request: The decoded ``request`` object of a batch line (or inline request).

    Returns:
        A chat-completions body (messages, max_tokens, tools, tool_choice, response_format).

    Raises:
        InvalidGeminiRequest: No ``contents``, or a content with a role other than user/model.
    """
    if not isinstance(request, dict):
        raise InvalidGeminiRequest("* GenerateContentRequest: the request must be an object.")
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidGeminiRequest("* GenerateContentRequest.contents: contents is not specified")
    messages: list[dict[str, Any]] = []
    system = field(request, "systemInstruction")
    if system:
        messages.append({"role": "system", "content": _text(system)})
    for index, content in enumerate(contents):
        if not isinstance(content, dict):
            raise InvalidGeminiRequest(
                f"* GenerateContentRequest.contents[{index}]: must be an object"
            )
        role = _ROLES.get(content.get("role") or "user")
        if role is None:
            raise InvalidGeminiRequest(
                f"* GenerateContentRequest.contents[{index}].role: Please use a valid role: "
                "user, model."
            )
        parts = _parts(content)
        if role == "user" and parts and all("functionResponse" in p for p in parts):
            role = "tool"  # a tool result, as chat completions would carry it
        messages.append({"role": role, "content": _text(content)})
    body: dict[str, Any] = {"messages": messages}
    config = field(request, "generationConfig") or {}
    limit = field(config, "maxOutputTokens")
    if isinstance(limit, int) and not isinstance(limit, bool):
        body["max_tokens"] = limit
    tools = _tools(field(request, "tools"))
    if tools:
        body["tools"] = tools
        choice = _tool_choice(field(request, "toolConfig"))
        if choice is not None:
            body["tool_choice"] = choice
    response_format = _response_format(config)
    if response_format is not None:
        body["response_format"] = response_format
    return body


def _tools(tools: Any) -> list[dict[str, Any]]:
    """Return the function declarations as chat-completions tools."""
    found: list[dict[str, Any]] = []
    for tool in tools if isinstance(tools, list) else []:
        declarations = field(tool, "functionDeclarations") if isinstance(tool, dict) else None
        for declaration in declarations if isinstance(declarations, list) else []:
            if not isinstance(declaration, dict) or not isinstance(declaration.get("name"), str):
                continue
            schema = field(declaration, "parametersJsonSchema")
            if schema is None:
                schema = json_schema(declaration.get("parameters") or {})
            found.append(
                {
                    "type": "function",
                    "function": {"name": declaration["name"], "parameters": schema},
                }
            )
    return found


def _tool_choice(tool_config: Any) -> Any:
    """Map ``functionCallingConfig`` onto the chat-completions tool choice."""
    calling = field(tool_config, "functionCallingConfig") if isinstance(tool_config, dict) else None
    if not isinstance(calling, dict):
        return None
    mode = str(calling.get("mode") or "AUTO").upper()
    allowed = field(calling, "allowedFunctionNames")
    if mode == "NONE":
        return "none"
    if mode == "ANY":
        if isinstance(allowed, list) and len(allowed) == 1:
            return {"type": "function", "function": {"name": allowed[0]}}
        return "required"
    return "auto"


def _response_format(config: dict[str, Any]) -> dict[str, Any] | None:
    """Return the chat ``response_format`` a JSON answer config asks for, or None."""
    schema = field(config, "responseJsonSchema")
    if schema is None and field(config, "responseSchema") is not None:
        schema = json_schema(field(config, "responseSchema"))
    if schema is not None:
        return {"type": "json_schema", "json_schema": {"schema": schema}}
    if field(config, "responseMimeType") == JSON_MIME:
        return {"type": "json_object"}
    return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_schema(schema: Any) -> Any:
    """Turn a Gemini (OpenAPI subset) schema into JSON Schema: lower-case types, ``nullable``.

    Keys may come in either proto JSON spelling (google-genai sends ``min_items`` and
    ``property_ordering``); integer-valued fields may be strings (int64 in proto3 JSON,
    ``"minItems": "1"``): both are normalised so the instance builder reads them.
    """
    if isinstance(schema, list):
        return [json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for raw_key, value in schema.items():
        key = _camel(raw_key)
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = json_schema(value)
        elif key in ("minItems", "maxItems", "minLength", "maxLength") and isinstance(value, str):
            out[key] = int(value) if value.isdigit() else value
        elif key not in ("nullable", "propertyOrdering"):
            out[key] = value
    if field(schema, "nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def response_id(key: Any, reply: Reply) -> str:
    """Return a ``responseId`` like the API's (22 URL-safe characters), derived from the line."""
    raw = bytes.fromhex(line_digest(key, reply.digest))[:16]
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {name: value for name, value in counts.items() if value}


def thinking_budget(request: Any) -> int:
    """Return the request's positive ``thinkingConfig.thinkingBudget``, else 0."""
    config = field(request, "generationConfig") if isinstance(request, dict) else None
    thinking = field(config, "thinkingConfig") if isinstance(config, dict) else None
    budget = field(thinking, "thinkingBudget") if isinstance(thinking, dict) else None
    if isinstance(budget, str) and budget.isdigit():
        budget = int(budget)
    return budget if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0 else 0


def render_response(reply: Reply, model: str, key: Any, thinking: int = 0) -> dict[str, Any]:
    """Build the ``GenerateContentResponse`` of `reply` (see the module docstring).

    Args:
        reply: The computed answer.
        model: The batch's model (``models/...`` or bare).
        key: The line's key, seeding the ``responseId``.
        thinking: The request's thinking budget (`thinking_budget`); 0 reports no thoughts.

    Returns:
        The response JSON object.
    """
    thoughts = min(thinking, reply.completion_tokens)
    usage = _nonzero(
        {
            "promptTokenCount": reply.prompt_tokens,
            "candidatesTokenCount": reply.completion_tokens,
            "totalTokenCount": reply.total_tokens + thoughts,
            "thoughtsTokenCount": thoughts,
        }
    )
    usage_metadata: dict[str, Any] = dict(usage)
    if reply.prompt_tokens:
        usage_metadata["promptTokensDetails"] = [
            {"modality": "TEXT", "tokenCount": reply.prompt_tokens}
        ]
    response: dict[str, Any] = {
        "candidates": [_candidate(reply)],
        "usageMetadata": usage_metadata,
        "modelVersion": model.removeprefix("models/"),
        "responseId": response_id(key, reply),
    }
    if NO_CHOICES_MARKER in reply.shapes:
        del response["candidates"]
        response["promptFeedback"] = {"blockReason": "SAFETY"}
    return response


def _candidate(reply: Reply) -> dict[str, Any]:
    if REFUSAL_MARKER in reply.shapes:
        return {"finishReason": "SAFETY", "index": 0}
    parts: list[dict[str, Any]] = []
    for call in reply.tool_calls:
        try:
            arguments = json.loads(call.arguments)
        except ValueError:
            arguments = None
        if isinstance(arguments, dict):
            parts.append({"functionCall": {"name": call.name, "args": arguments}})
        else:
            parts.append({"text": call.arguments})  # not a Struct: cannot be `args`
    if not reply.tool_calls:
        parts.append({"text": reply.content})
    finish = "MAX_TOKENS" if reply.finish_reason == "length" else "STOP"
    return {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
