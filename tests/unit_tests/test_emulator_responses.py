"""The emulator's `/v1/responses` batches, through the real openai SDK: `Response` output lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import Response

from tests.unit_tests.test_emulator import MODEL, chat_line, jsonl, openai_client, parse_lines

ENDPOINT = "/v1/responses"
LOOKUP = {
    "type": "function",
    "name": "lookup",
    "parameters": {
        "type": "object",
        "properties": {"order": {"type": "string"}},
        "required": ["order"],
    },
}
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
