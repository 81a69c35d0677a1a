"""`spec_from_chat_model`: a wrapped LangChain chat model becomes the batch graph's JSON input.

The check that matters: a batch built from the returned spec sends, for every request, exactly
the body the given runnable sends when `.invoke()`d (recorded through a mock transport).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, Field

from agent.model_spec import spec_from_chat_model
from agent.requests import BatchRequest
from agent.structured import OutputSpec
from tests.unit_tests.test_structured_parity import CASES, MESSAGES, SCHEMA, TOOLS


class Ticket(BaseModel):
    """A classified support ticket."""

    category: str = Field(description="billing, bug or other")
    urgent: bool
    tags: list[str] = Field(default_factory=list)


STRICT_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

WRAPPERS: dict[str, Any] = {
    "plain": lambda llm: llm,
    "bind_tools": lambda llm: llm.bind_tools(TOOLS, tool_choice="get_weather"),
    "bind_tools+bind": lambda llm: llm.bind_tools(TOOLS).bind(stop=["END"]),
    "schema_dict": lambda llm: llm.with_structured_output(SCHEMA),
    "schema_pydantic": lambda llm: llm.with_structured_output(Ticket),
    "schema_pydantic_raw": lambda llm: llm.with_structured_output(Ticket, include_raw=True),
    "schema_json_schema": lambda llm: llm.with_structured_output(Ticket, method="json_schema"),
    "schema_function_calling": lambda llm: llm.with_structured_output(
        Ticket, method="function_calling"
    ),
    "schema_json_mode": lambda llm: llm.with_structured_output(Ticket, method="json_mode"),
}
OPENAI_ONLY: dict[str, Any] = {
    "schema_strict": lambda llm: llm.with_structured_output(SCHEMA, strict=True),
    "schema+tools": lambda llm: llm.with_structured_output(
        Ticket, tools=[STRICT_TOOL], strict=True, include_raw=True
    ),
}
CTOR = {"temperature": 0.3, "max_tokens": 50}


def _realtime_body(provider: str, wrap: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    case = CASES[provider]
    llm, sent = case.realtime(case.structured_answer({}), {**CTOR, "top_p": 0.9}, monkeypatch)
    try:
        wrap(llm).invoke(MESSAGES)
    except Exception:
        pass  # only the request matters
    body = dict(sent[0])
    body.pop("stream", None)
    return body


@pytest.mark.parametrize("provider", list(CASES))
@pytest.mark.parametrize("wrapper", [*WRAPPERS, *OPENAI_ONLY])
def test_batch_from_spec_sends_the_realtime_body(
    provider: str, wrapper: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if wrapper in OPENAI_ONLY and provider != "openai":
        pytest.skip("OpenAI-only wrapper")
    if wrapper == "schema_json_mode" and provider == "anthropic":
        pytest.skip("ChatAnthropic has no json_mode")
    wrap = WRAPPERS.get(wrapper) or OPENAI_ONLY[wrapper]
    case = CASES[provider]
    llm, _ = case.realtime({}, {**CTOR, "top_p": 0.9}, monkeypatch)
    spec = spec_from_chat_model(wrap(llm))
    # Plain JSON, no key or client: it can go into graph input, context and checkpoints.
    assert json.loads(json.dumps(spec)) == spec
    assert "sk-test" not in json.dumps(spec) and "api_key" not in json.dumps(spec)
    assert spec["provider"] == provider and spec["model"] == case.model
    assert spec["params"]["temperature"] == 0.3 and spec["params"]["max_tokens"] == 50
    assert (wrapper == "plain") == (OutputSpec.from_values(spec) is None)

    batch = case.provider(None).prepare(
        [BatchRequest("r1", MESSAGES, spec["request_params"])],
        spec["model"],
        spec["params"],
        OutputSpec.from_values(spec),
    )
    (line,) = [json.loads(raw) for raw in batch.jsonl.splitlines()]
    assert case.body_of(line) == _realtime_body(provider, wrap, monkeypatch)


def test_a_model_the_batch_path_cannot_reproduce_is_refused() -> None:
    from langchain_openai import ChatOpenAI

    responses = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", use_responses_api=True)
    with pytest.raises(ValueError, match=r"use_responses_api=True makes .*Responses API"):
        spec_from_chat_model(responses)
    with pytest.raises(TypeError, match="no chat model"):
        spec_from_chat_model(Ticket)  # type: ignore[arg-type]
