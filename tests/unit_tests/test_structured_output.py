"""Tools and structured output end to end: graph and CLI against the in-process emulator.

A request set carries tools and/or a response schema; the emulator answers with tool calls or
JSON following the schema (and breaks it on purpose for `[emulator:invalid_json]` /
`[emulator:schema_violation]`); results carry `tool_calls` and `parsed` (what the model's output
parser makes of the answer), and an answer the parser rejects (or, with `validate_schema`, that
breaks the schema) is a per-request error, never a crash.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from typer.testing import CliRunner

from agent.cli.app import app
from agent.context import Context
from agent.emulator import list_jobs, read_access_log
from agent.emulator.answers import compute_reply
from agent.graph import build_graph
from agent.pause import pause
from agent.requests import InputError
from tests.unit_tests.test_structured_parity import SCHEMA, TOOLS

RECORDS: list[dict[str, Any]] = [
    {"id": "ok", "prompt": "Classify: my invoice is wrong, billing"},
    {"id": "cut", "prompt": "Classify: the app crashes [emulator:invalid_json]"},
    {"id": "off", "prompt": "Classify: a question [emulator:schema_violation]"},
    {"id": "weather", "prompt": "What is the weather in Paris? use get_weather"},
]


def _finish(
    graph: Any, config: dict[str, Any], context: Context, graph_input: dict[str, Any]
) -> dict[str, Any]:
    graph.invoke(graph_input, config, context=context)
    deadline = time.monotonic() + 15
    while True:
        values = graph.get_state(config).values
        if values["status"] in {"completed", "failed"} or time.monotonic() > deadline:
            return dict(values)
        pause(0.05)  # virtual: advances the emulator's clock (`virtual_waits`)
        graph.invoke({}, config, context=context)


def _graph() -> Any:
    return build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())


# What realtime `with_structured_output(SCHEMA).invoke()` returns for the answer cut in half
# (`[emulator:invalid_json]`): OpenAI's JSON mode parses the partial JSON, Mistral's function
# call has arguments that do not parse, Anthropic's cut call is sent as text (no tool call),
# Gemini's JSON response (`responseSchema`) parses as partial JSON, as OpenAI's.
CUT = {
    "openai": ("succeeded", {"category": "billing"}),
    "mistral": ("failed", None),
    "anthropic": ("succeeded", None),
    "gemini": ("succeeded", {"category": "billing"}),
}
PROVIDERS = list(CUT)
# How each provider says an answer stopped to call a tool (Gemini has no reason of its own).
TOOL_CALL_FINISH = {
    "openai": "tool_calls",
    "mistral": "tool_calls",
    "anthropic": "tool_use",
    "gemini": "STOP",
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_structured_answers_are_what_the_output_parser_makes_of_them(
    provider: str, isolated_env: Path
) -> None:
    values = _finish(
        _graph(),
        {"configurable": {"thread_id": f"s-{provider}"}},
        Context(provider=provider),  # type: ignore[arg-type]
        {"requests": RECORDS, "response_schema": SCHEMA},
    )
    assert values["status"] == "completed"
    results = {r["id"]: r for r in values["results"]}
    ok = results["ok"]
    assert ok["status"] == "succeeded" and ok["error"] is None
    # The emulator follows the schema: the enum value named in the prompt, every property.
    assert ok["parsed"] == {"category": "billing", "urgent": True, "tags": ["emulated tags"]}
    # No JSON-schema validation by default: realtime `.invoke()` returns this answer as is.
    off = results["off"]
    assert off["status"] == "succeeded" and off["parsed"] == {
        "urgent": True,
        "tags": ["emulated tags"],
    }
    cut = results["cut"]
    assert (cut["status"], cut["parsed"]) == CUT[provider]
    if cut["status"] == "failed":
        # The parser's own exception, as `.invoke()` would raise it; message and usage kept.
        assert cut["error"]["code"] == "output_parsing"
        assert cut["error"]["message"].startswith("OutputParserException: ")
        assert cut["message"] is not None and cut["usage"]["output_tokens"] > 0
    assert len(values["jobs"]) == 1 and len(list_jobs()) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_validate_schema_fails_answers_that_break_the_schema_alone(
    provider: str, isolated_env: Path
) -> None:
    values = _finish(
        _graph(),
        {"configurable": {"thread_id": f"v-{provider}"}},
        Context(provider=provider, validate_schema=True),  # type: ignore[arg-type]
        {"requests": RECORDS, "response_schema": SCHEMA},
    )
    assert values["status"] == "completed"
    results = {r["id"]: r for r in values["results"]}
    assert results["ok"]["status"] == "succeeded" and results["weather"]["status"] == "succeeded"
    for request_id in ("cut", "off"):
        broken = results[request_id]
        assert broken["status"] == "failed" and broken["attempts"] == 1
        # The answer was produced (and billed): the message and its usage are kept.
        assert broken["message"] is not None and broken["usage"]["output_tokens"] > 0
    off = results["off"]["error"]
    assert off["code"] == "schema" and off["message"].startswith("schema: ")
    assert "'category' is a required property" in off["message"]
    assert "request id 'off'" in off["message"]
    # A cut answer fails the parser (Mistral) or, parsed to partial JSON or None, the schema.
    cut = results["cut"]["error"]
    assert cut["code"] == ("output_parsing" if provider == "mistral" else "schema")
    assert values["counts"] == {"total": 4, "succeeded": 2, "failed": 2, "pending": 0}
    # Not retried: one job only.
    assert len(values["jobs"]) == 1 and len(list_jobs()) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_calls_are_in_the_results(provider: str, isolated_env: Path) -> None:
    values = _finish(
        _graph(),
        {"configurable": {"thread_id": f"t-{provider}"}},
        Context(provider=provider),  # type: ignore[arg-type]
        {"requests": RECORDS[:1] + RECORDS[3:], "tools": TOOLS},
    )
    assert values["status"] == "completed"
    first, weather = values["results"]
    for result in (first, weather):
        assert result["status"] == "succeeded"
        (call,) = result["tool_calls"]
        assert call["name"] == "get_weather"
        assert call["args"] == {"city": "emulated city", "unit": "C"}
        assert result["message"].tool_calls == result["tool_calls"]
        metadata = result["message"].response_metadata
        assert (
            metadata.get("finish_reason", metadata.get("stop_reason")) == TOOL_CALL_FINISH[provider]
        )
        assert "parsed" not in result  # tools only: no schema to parse against


def test_tools_and_schema_are_part_of_the_request_set(isolated_env: Path) -> None:
    graph = _graph()
    context = Context(provider="openai")
    records = RECORDS[:1]
    first = graph.invoke(
        {"requests": records, "response_schema": SCHEMA},
        {"configurable": {"thread_id": "a"}},
        context=context,
    )
    # The same records without the schema, or with tools, are another request set.
    with pytest.raises(InputError, match="different request set"):
        graph.invoke(
            {"requests": records, "response_schema": None, "tools": TOOLS},
            {"configurable": {"thread_id": "a"}},
            context=context,
        )
    plain = graph.invoke(
        {"requests": records}, {"configurable": {"thread_id": "b"}}, context=context
    )
    tools = graph.invoke(
        {"requests": records, "tools": TOOLS}, {"configurable": {"thread_id": "c"}}, context=context
    )
    again = graph.invoke(
        {"requests": records, "response_schema": SCHEMA},
        {"configurable": {"thread_id": "d"}},
        context=context,
    )
    hashes = [
        graph.get_state({"configurable": {"thread_id": t}}).values["request_hash"] for t in "abcd"
    ]
    assert len(set(hashes[:3])) == 3 and hashes[3] == hashes[0]
    keys = {v["jobs"][0]["job_key"] for v in (first, plain, tools, again)}
    assert len(keys) == 4  # a job key also names its thread; no job is ever shared
    assert len(list_jobs()) == 4


@pytest.mark.parametrize(
    ("graph_input", "message"),
    [
        ({"tools": [{"foo": 1}]}, "tool 0 is neither"),
        ({"response_schema": {"type": "object", "properties": {}}}, "top-level 'title'"),
        ({"response_schema": {"title": "X", "type": "objectt"}}, "not a valid JSON schema"),
        ({"tool_choice": "get_weather"}, "without 'tools'"),
        ({"response_schema": SCHEMA, "schema_method": "xml"}, "schema_method"),
        ({"response_schema": SCHEMA, "tools": TOOLS}, "not strict"),
    ],
)
def test_a_bad_spec_uploads_nothing(
    isolated_env: Path, graph_input: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        _graph().invoke(
            {"requests": RECORDS, **graph_input},
            {"configurable": {"thread_id": "t"}},
            context=Context(provider="openai"),
        )
    assert list_jobs() == [] and read_access_log() == []


def test_emulator_answers_follow_the_body() -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    assert compute_reply(body).content == "Emulated reply to: hello"
    forced = compute_reply({**body, "tools": TOOLS[:1], "tool_choice": "required"})
    assert forced.finish_reason == "tool_calls" and forced.content == ""
    assert [(c.name, json.loads(c.arguments)) for c in forced.tool_calls] == [
        ("get_weather", {"city": "emulated city", "unit": "C"})
    ]
    assert not compute_reply({**body, "tools": TOOLS[:1], "tool_choice": "none"}).tool_calls
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "Ticket", "schema": SCHEMA},
    }
    answer = compute_reply({**body, "response_format": response_format})
    assert json.loads(answer.content)["category"] == "billing"  # no enum value named: the first
    broken = {**body, "messages": [{"role": "user", "content": "x [emulator:invalid_json]"}]}
    with pytest.raises(json.JSONDecodeError):
        json.loads(compute_reply({**broken, "response_format": response_format}).content)


def test_cli_tools_and_schema_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_AGENT_DB", str(tmp_path / "db.sqlite"))
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:3]))
    schema = tmp_path / "schema.json"
    # Saved by a Windows editor: a byte order mark first, which is no part of the JSON.
    schema.write_bytes(b"\xef\xbb\xbf" + json.dumps(SCHEMA).encode())
    out = tmp_path / "results.jsonl"
    runner = CliRunner()
    for flags, off_status in (([], "succeeded"), (["--validate-schema"], "failed")):
        result = runner.invoke(
            app,
            ["run", str(source), "--schema", str(schema), "--provider", "mistral", "--wait"]
            + ["--poll-interval", "0.1", "--out", str(out), "--allow-failures", *flags],
        )
        assert result.exit_code == 0, result.output  # failed answers on purpose
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(r["id"], r["status"]) for r in lines] == [
            ("ok", "succeeded"),
            ("cut", "failed"),
            ("off", off_status),
        ]
        assert lines[0]["parsed"]["category"] == "billing" and lines[0]["tool_calls"]
        assert lines[1]["error"]["code"] == "output_parsing"
        if flags:
            assert lines[2]["error"]["code"] == "schema"

    # Bad files fail before anything is uploaded, naming the file and the problem.
    bad_json = tmp_path / "tools.json"
    bad_json.write_text('[{"type": "function",')
    log_before = len(read_access_log())
    for args, message in [
        (["--tools", str(bad_json)], f"{bad_json}: not valid JSON"),
        (["--schema", str(tmp_path / "missing.json")], "missing.json: file not found"),
        (["--tool-choice", "get_weather"], "without 'tools'"),
    ]:
        for command in ("run", "plan"):
            refused = runner.invoke(app, [command, str(source), *args, "--provider", "openai"])
            assert refused.exit_code != 0 and message in str(refused.exception), refused.output
    assert len(read_access_log()) == log_before

    planned = runner.invoke(
        app, ["plan", str(source), "--schema", str(schema), "--provider", "openai", "--json"]
    )
    assert planned.exit_code == 0, planned.output
    plain = runner.invoke(app, ["plan", str(source), "--provider", "openai", "--json"])
    # The schema travels in every request body.
    assert json.loads(planned.stdout)["bytes"] > json.loads(plain.stdout)["bytes"]
