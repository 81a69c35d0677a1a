"""The emulator's `/v1/responses` batches, through the real openai SDK: `Response` output lines;
and its realtime `POST /responses`, which answers what the batch answers for the same body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from openai.types.responses import Response

from agent import run_batch
from agent.emulator import IN_PROCESS_BASE_URL, ManualClock, use_clock
from tests.unit_tests.test_emulator import MODEL, chat_line, jsonl, openai_client, parse_lines

ENDPOINT = "/v1/responses"
FAST = {"poll_interval_seconds": 0.1, "poll_backoff": 1.0}
LOOKUP = {
    "type": "function",
    "name": "lookup",
    "parameters": {
        "type": "object",
        "properties": {"order": {"type": "string"}},
        "required": ["order"],
    },
}
# The same tool as `bind_tools` takes it (chat shape; ChatOpenAI flattens it for the Responses API).
CHAT_LOOKUP = {"type": "function", "function": {k: v for k, v in LOOKUP.items() if k != "type"}}
TICKET = {
    "type": "json_schema",
    "name": "Ticket",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"category": {"type": "string"}},
        "required": ["category"],
        "additionalProperties": False,
    },
}


def responses_line(custom_id: str, prompt: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": ENDPOINT,
        "body": {
            "model": MODEL,
            "input": [{"role": "user", "content": prompt, "type": "message"}],
            **body,
        },
    }


def _run(tmp_path: Path, lines: list[Any], endpoint: str = ENDPOINT) -> Any:
    client = openai_client(tmp_path)
    uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )
    return client, client.batches.retrieve(batch.id)


def test_responses_lines_get_response_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0")
    lines = [
        responses_line(
            "think",
            "why batch at all",
            instructions="Be brief.",
            reasoning={"effort": "low", "summary": "auto"},
            include=["reasoning.encrypted_content"],
        ),
        responses_line("tool", "where is 42", tools=[LOOKUP], tool_choice="required"),
        responses_line("json", "classify this", text={"format": TICKET}),
        responses_line("cut", "one two three four", max_output_tokens=2),
        responses_line("bad", "no [emulator:reject]"),
    ]
    client, batch = _run(tmp_path, lines)
    assert batch.status == "completed" and batch.endpoint == ENDPOINT
    assert batch.request_counts.completed == 4 and batch.request_counts.failed == 1
    rows = parse_lines(client.files.content(batch.output_file_id).text)
    bodies = {key: row["response"]["body"] for key, row in rows.items()}
    for body in bodies.values():
        Response.model_validate(body)  # the SDK's own model, validated
        assert body["object"] == "response" and body["id"].startswith("resp_")

    think = bodies["think"]
    reasoning, message = think["output"]
    assert reasoning["type"] == "reasoning" and reasoning["encrypted_content"]
    assert reasoning["summary"] == [
        {"type": "summary_text", "text": "Emulated reasoning about: why batch at all"}
    ]
    assert message["content"][0]["text"] == "Emulated reply to: why batch at all"
    # Instructions (3 + 2) are the cached prefix; the user message 3 + 4; 4 reasoning tokens.
    assert think["usage"] == {
        "input_tokens": 12,
        "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 0},
        "output_tokens": 7 + 4,
        "output_tokens_details": {"reasoning_tokens": 4},
        "total_tokens": 23,
    }
    (call,) = bodies["tool"]["output"]
    assert call["type"] == "function_call" and call["name"] == "lookup"
    assert json.loads(call["arguments"]) == {"order": "emulated order"}
    (answer,) = bodies["json"]["output"]
    assert json.loads(answer["content"][0]["text"]) == {"category": "emulated category"}
    cut = bodies["cut"]
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["output"][0]["content"][0]["text"] == "Emulated reply"

    (error,) = parse_lines(client.files.content(batch.error_file_id).text).values()
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert batch.usage.output_tokens == sum(b["usage"]["output_tokens"] for b in bodies.values())


@pytest.mark.parametrize(
    ("line", "endpoint"),
    [
        (chat_line("a", "x"), ENDPOINT),
        (responses_line("a", "x"), "/v1/chat/completions"),
    ],
)
def test_a_line_for_another_endpoint_fails_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: dict[str, Any], endpoint: str
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0")
    _, batch = _run(tmp_path, [line], endpoint)
    assert batch.status == "failed"
    assert [error.code for error in batch.errors.data] == ["url_mismatch"]


@pytest.mark.parametrize("output_version", ["v0", "responses/v1"])
@pytest.mark.parametrize("kind", ["plain", "tool"])
def test_a_realtime_responses_call_gets_the_batch_answer(
    output_version: str,
    kind: str,
    isolated_env: Path,
    emulator_clock: ManualClock,
) -> None:
    settings: dict[str, Any] = {
        "model": "gpt-5-mini",
        "api_key": "sk-unused",
        "use_responses_api": True,
        "reasoning": {"effort": "low", "summary": "auto"},
        "output_version": output_version,
    }
    app = use_clock(emulator_clock, isolated_env)
    realtime_llm = ChatOpenAI(
        **settings,
        base_url=f"{IN_PROCESS_BASE_URL}/openai/v1",
        http_client=httpx2.Client(transport=httpx2.WSGITransport(app=app)),
    )
    batch_llm = ChatOpenAI(**settings)
    if kind == "tool":
        realtime_llm, batch_llm = (  # type: ignore[assignment]
            llm.bind_tools([CHAT_LOOKUP], tool_choice="lookup") for llm in (realtime_llm, batch_llm)
        )
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    (result,) = run_batch([{"id": "r", "messages": messages}], model=batch_llm, **FAST)
    realtime = realtime_llm.invoke(messages)
    assert result.message is not None and isinstance(realtime, AIMessage)
    # Same body, same answer and ids; only the time it was made differs.
    ours, theirs = result.message.model_dump(), realtime.model_dump()
    for dumped in (ours, theirs):
        dumped["response_metadata"].pop("created_at")
        if dumped["id"].startswith("lc_run-"):
            dumped.pop("id")  # no output message to take an id from: a run id (random)
    assert ours == theirs
