"""Emulated tool calls and JSON answers: deterministic instances of a request's JSON schemas.

The emulator answers a body that binds tools with a tool call, and a body that asks for a JSON
answer (`response_format`) with JSON, both built from the schemas in the body alone:

- **Which answer**: a forced `tool_choice` (a named function, `"required"`, `"any"`) calls that
  tool (or the first mentioned / first tool); `"none"` never calls one. With `"auto"` or no
  choice, a conversation whose last message is a tool's result gets a plain answer (an agent
  loop ends); otherwise a tool whose name appears in the last user message is called, else the
  first tool is, unless the body also has a `response_format`, in which case the answer is JSON.
  Both wire shapes are read: chat completions (`{"type": "function", "function": {...}}`
  tools, `response_format`) and Anthropic Messages (`{"name", "input_schema"}` tools,
  `{"type": "tool" | "any" | "auto" | "none"}` choices, `output_config.format`).
- **Instances**: every property of an object is filled (required or not); strings are
  `"emulated <property>"` (respecting `minLength`), an `enum` takes the first value that
  appears in the last user message (case-insensitive), else its first value; numbers take
  `minimum` or 0, booleans `true`, arrays `minItems` (at least 1) items; `$ref` into `$defs` /
  `definitions`, `anyOf`/`oneOf` (first non-null branch), `allOf` (merged), `const` are
  followed. `json_object` mode answers `{"reply": "Emulated reply to: ..."}`.
- **Broken answers on purpose** (prompt markers in the last user message):
  `[emulator:invalid_json]` cuts the JSON (content or tool arguments) in half, so it does not
  parse; `[emulator:schema_violation]` answers valid JSON that breaks the schema (a required
  property dropped, else a property of the wrong type, else a value of the wrong type);
  `[emulator:tool_args_array]` makes a tool call's arguments a JSON array of the argument values,
  `[emulator:tool_args_string]` the first value alone as a JSON string (JSON, but not an object).
  The other odd shapes (refusals, `error` bodies, no choices, non-string arguments) are rendered
  by the protocols, see `agent.emulator.answers`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

INVALID_JSON_MARKER: Final = "[emulator:invalid_json]"
SCHEMA_VIOLATION_MARKER: Final = "[emulator:schema_violation]"
TOOL_ARGS_ARRAY_MARKER: Final = "[emulator:tool_args_array]"
TOOL_ARGS_STRING_MARKER: Final = "[emulator:tool_args_string]"
_MAX_DEPTH: Final = 8


@dataclass(frozen=True)
class ToolCall:
    """One emulated tool call: the tool's name and its JSON arguments (a string)."""

    name: str
    arguments: str


def plan_answer(
    body: dict[str, Any], last_user: str, reply_text: str
) -> tuple[str | None, list[ToolCall]]:
    """Decide the structured part of an answer.

    Args:
        body: The chat-completions body.
        last_user: Text of the last user message (markers, enum and tool-name matching).
        reply_text: The plain reply, used by `json_object` mode.

    Returns:
        `(json content, [])` for a JSON answer, `(None, [call])` for a tool call, or
        `(None, [])` when the body asks for neither (a plain text reply).
    """
    tools = [t for t in body.get("tools") or [] if _function(t) is not None]
    response_format = body.get("response_format") or _anthropic_format(body)
    name = _chosen_tool(
        tools,
        _tool_choice(body.get("tool_choice")),
        last_user,
        response_format is not None,
        after_tool_result=_ends_with_tool_result(body),
    )
    if name is not None:
        function = next(f for f in map(_function, tools) if f and f.get("name") == name)
        arguments = _answer_json(function.get("parameters") or {}, last_user)
        return None, [ToolCall(name=name, arguments=_not_an_object(arguments, last_user))]
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            return _answer_json(schema, last_user), []
        if kind == "json_object":
            return _answer_json({"type": "object"}, last_user, {"reply": reply_text}), []
    return None, []


def _function(tool: Any) -> dict[str, Any] | None:
    """Return a tool as `{"name", "parameters"}` (chat-completions or Anthropic shape)."""
    if not isinstance(tool, dict):
        return None
    if tool.get("type", "function") == "function":
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return function
    if isinstance(tool.get("name"), str) and isinstance(tool.get("input_schema"), dict):
        return {"name": tool["name"], "parameters": tool["input_schema"]}
    return None


def _tool_choice(choice: Any) -> Any:
    """Map an Anthropic tool choice onto the chat-completions forms `_chosen_tool` reads."""
    if isinstance(choice, dict) and choice.get("type") in ("tool", "any", "auto", "none"):
        if choice["type"] == "tool":
            return {"type": "function", "function": {"name": choice.get("name")}}
        return choice["type"]
    return choice


def _anthropic_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """Return Anthropic's `output_config.format` JSON schema as a chat `response_format`."""
    output_format = (body.get("output_config") or {}).get("format")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        schema = output_format.get("schema") or {}
        return {"type": "json_schema", "json_schema": {"schema": schema}}
    return None


def _ends_with_tool_result(body: dict[str, Any]) -> bool:
    """Tell whether the conversation's last message is a tool's result (the model's turn next)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return False
    last = messages[-1]
    if last.get("role") == "tool":  # chat completions (and Gemini's functionResponse, mapped)
        return True
    content = last.get("content")
    return isinstance(content, list) and any(  # Anthropic: a user turn of tool_result blocks
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    )


def _chosen_tool(
    tools: list[dict[str, Any]],
    choice: Any,
    text: str,
    has_response_format: bool,
    *,
    after_tool_result: bool = False,
) -> str | None:
    names = [str(f["name"]) for f in map(_function, tools) if f]
    if not names or choice == "none":
        return None
    if isinstance(choice, dict):
        named = (choice.get("function") or {}).get("name")
        return named if named in names else names[0]
    if after_tool_result and choice not in ("required", "any", True):
        # The tool has answered: the model answers in words, as an agent loop expects (it
        # would otherwise call a tool for ever).
        return None
    lowered = text.lower()
    mentioned = next((n for n in names if n.lower() in lowered), None)
    if mentioned is not None:
        return mentioned
    if choice in ("required", "any") or choice is True:
        return names[0]
    return None if has_response_format else names[0]


def _answer_json(schema: dict[str, Any], text: str, value: Any = None) -> str:
    """Serialise an instance of `schema` (or `value`), broken on purpose if a marker asks."""
    instance = _instance(schema, schema, text, "value", 0) if value is None else value
    if SCHEMA_VIOLATION_MARKER in text:
        instance = _violate(schema, schema, instance)
    encoded = json.dumps(instance, ensure_ascii=False)
    if INVALID_JSON_MARKER in text:
        return encoded[: max(1, len(encoded) // 2)]
    return encoded


def _not_an_object(arguments: str, text: str) -> str:
    """Turn tool-call arguments into a JSON array or string when a marker asks for it."""
    wants_array = TOOL_ARGS_ARRAY_MARKER in text
    if not wants_array and TOOL_ARGS_STRING_MARKER not in text:
        return arguments
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments  # already broken on purpose ([emulator:invalid_json])
    values = list(value.values()) if isinstance(value, dict) else [value]
    if wants_array:
        return json.dumps(values, ensure_ascii=False)
    return json.dumps(str(values[0]) if values else "", ensure_ascii=False)


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s and take the first non-null `anyOf`/`oneOf` branch."""
    for _ in range(_MAX_DEPTH):
        if not isinstance(schema, dict):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = {**{k: v for k, v in schema.items() if k != "$ref"}, **target}
            continue
        branches = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(branches, list) and branches:
            chosen = next(
                (b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")),
                branches[0],
            )
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            schema = {**rest, **chosen} if isinstance(chosen, dict) else rest
            continue
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in all_of:
                branch = _resolve(part, root)
                merged["properties"] = {
                    **merged.get("properties", {}),
                    **branch.get("properties", {}),
                }
                merged["required"] = [*merged.get("required", []), *branch.get("required", [])]
                merged = {**branch, **merged}
            schema = merged
            continue
        return schema
    return schema if isinstance(schema, dict) else {}


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _instance(schema: Any, root: dict[str, Any], text: str, name: str, depth: int) -> Any:
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        lowered = text.lower()
        return next((v for v in enum if isinstance(v, str) and v.lower() in lowered), enum[0])
    kind = _type_of(schema)
    if kind == "object":
        if depth >= _MAX_DEPTH:
            return {}
        properties = schema.get("properties") or {}
        return {key: _instance(sub, root, text, key, depth + 1) for key, sub in properties.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems") or 0))
        items = schema.get("items") if depth < _MAX_DEPTH else {"type": "string"}
        return [_instance(items or {}, root, text, name, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        if not isinstance(low, int | float) or isinstance(low, bool):
            low = 0
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    value = f"emulated {name}"
    return value.ljust(int(schema.get("minLength") or 0), "x")


def _violate(schema: dict[str, Any], root: dict[str, Any], instance: Any) -> Any:
    """Return JSON that breaks `schema`: a required key dropped, a wrong type, or a wrong value."""
    schema = _resolve(schema, root)
    if isinstance(instance, dict):
        required = [k for k in schema.get("required") or [] if k in instance]
        if required:
            return {k: v for k, v in instance.items() if k != required[0]}
        for key, value in instance.items():
            return {**instance, key: 12345 if isinstance(value, str) else "wrong type"}
        return ["not", "an", "object"]
    return {"emulator": "schema violation"}
