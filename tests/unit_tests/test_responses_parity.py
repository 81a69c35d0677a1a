"""Responses-API batches: a line is the body `ChatOpenAI(use_responses_api=True).invoke()` sends,
a result is the AIMessage it returns, and a run goes to `/v1/responses` end to end.

The realtime side is the real `ChatOpenAI` with its HTTP client swapped for a mock transport that
records the body and answers it with the emulator's `Response` for that body (reasoning items,
function calls, JSON answers, usage details). The batch side is our line builder (the JSONL we
upload) and `OpenAIProvider.results` reading an output file with that same answer through the
real SDK, then the message as stored and read back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from typer.testing import CliRunner

from agent import run_batch
from agent.cli.app import app
from agent.emulator.responses_answers import response_body
from agent.planning import new_intent
from agent.providers.base import message_dump
from agent.providers.openai import OpenAIProvider
from agent.requests import BatchRequest, InputError
from agent.structured import OutputSpec, bind_kwargs
from tests.realtime import MESSAGE_SETS

CREATED = 1767225600
FAST = {"poll_interval_seconds": 0.1, "poll_backoff": 1.0}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look an order up.",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string"}},
            "required": ["order"],
        },
    },
}
TICKET = {
    "title": "Ticket",
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "other"]},
        "urgent": {"type": "boolean"},
    },
    "required": ["category", "urgent"],
}
SPECS: list[OutputSpec | None] = [
    None,
    OutputSpec(tools=[LOOKUP]),
    OutputSpec(tools=[LOOKUP], tool_choice="lookup"),
    OutputSpec(response_schema=TICKET, schema_method="json_schema"),
    OutputSpec(response_schema=TICKET, schema_method="json_schema", strict=True),
]
CTOR: dict[str, st.SearchStrategy[Any]] = {
    "reasoning": st.fixed_dictionaries(
        {"effort": st.sampled_from(["low", "medium"])},
        optional={"summary": st.just("auto")},
    ),
    "include": st.just(["reasoning.encrypted_content"]),
    "output_version": st.sampled_from(["v0", "responses/v1"]),
    "temperature": st.sampled_from([0.0, 0.7]),
    "max_tokens": st.sampled_from([3, 200]),
    "store": st.just(False),
}
CALL: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.sampled_from([2, 50]),
    "prompt_cache_key": st.just("support"),
    "reasoning_effort": st.just("low"),
    "text": st.just({"verbosity": "low"}),
}
MODELS = ["gpt-4o-mini", "gpt-5-mini", "o3-mini"]
# An agent loop's turn: a tool was called and answered (function_call / function_call_output).
TOOL_TURN: list[dict[str, Any]] = [
    {"role": "user", "content": "Where is order 42?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"order": "42"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "shipped yesterday"},
]


@st.composite
def _some(draw: st.DrawFn, options: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=3))
    return {key: draw(options[key]) for key in keys}


def _realtime(
    model: str,
    ctor: dict[str, Any],
    messages: list[dict[str, Any]],
    call: dict[str, Any],
    spec: Any,
) -> tuple[dict[str, Any], dict[str, Any], AIMessage]:
    """`.invoke()` a Responses-API ChatOpenAI once: the body sent, the answer, the message."""
    sent: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path.endswith("/responses")
        body = json.loads(request.content)
        sent.append(body)
        answers.append(response_body(body, CREATED)[0])
        return httpx2.Response(200, json=answers[-1])

    llm = ChatOpenAI(
        model=model,
        api_key="sk-test",
        use_responses_api=True,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        **ctor,
    )
    # What `bind_tools` / `with_structured_output` pass to the model on every call.
    message = llm.invoke(messages, **{**bind_kwargs(llm, spec), **call})
    assert isinstance(message, AIMessage)
    return sent[0], answers[0], message


def _batch_message(
    model: str, params: dict[str, Any], answer: dict[str, Any], spec: OutputSpec | None
) -> AIMessage:
    """Our message for a `responses` job whose output file answers `answer`, stored and read."""
    line = {
        "id": "batch_req_1",
        "custom_id": "r1",
        "response": {"status_code": 200, "request_id": "req_1", "body": answer},
        "error": None,
    }
    content = json.dumps(line).encode() + b"\n"
    provider = OpenAIProvider(
        emulated=False,
        base_url="http://files.invalid/v1",
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(lambda request: httpx2.Response(200, content=content))
        ),
    )
    endpoint, params = provider.choose_endpoint(model, params, spec)
    assert endpoint == "responses"
    job = new_intent(
        provider, key="k", attempt=1, model=model, params=params, request_count=1, endpoint=endpoint
    )
    job.update(job_id="batch_1", status="done", output_file_id="file-out")
    (outcome,) = list(provider.results(job, spec))
    assert outcome.custom_id == "r1" and outcome.error is None and outcome.message is not None
    # As the store keeps it (plain JSON) and a reader gets it back.
    stored = json.loads(json.dumps(message_dump(outcome.message)))
    return AIMessage(**stored)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(MODELS),
    ctor=_some(CTOR),
    call=_some(CALL),
    messages=st.sampled_from([*MESSAGE_SETS, TOOL_TURN]),
    spec=st.sampled_from(SPECS),
)
def test_line_and_answer_equal_the_realtime_responses_call(
    model: str,
    ctor: dict[str, Any],
    call: dict[str, Any],
    messages: list[dict[str, Any]],
    spec: OutputSpec | None,
) -> None:
    provider = OpenAIProvider(emulated=False, base_url="http://unused.invalid/v1")
    endpoint, params = provider.choose_endpoint(model, {**ctor, "use_responses_api": True}, spec)
    build = provider.check_ready(model, params, spec, endpoint)
    try:
        wire, answer, realtime = _realtime(model, ctor, messages, call, spec)
    except TypeError as exc:
        # The SDK refuses a parameter `responses.create` does not take, before sending: so
        # does the batch, before anything is uploaded.
        assert "unexpected keyword argument" in str(exc)
        with pytest.raises(InputError, match=r"Responses API takes no parameter.*'r1'"):
            build(BatchRequest("r1", messages, call))
        return
    line = json.loads(build(BatchRequest("r1", messages, call)))
    # (1) the body: what realtime put on the wire, without the streaming flag.
    wire.pop("stream")
    assert line == {"custom_id": "r1", "method": "POST", "url": "/v1/responses", "body": wire}
    # (2) the answer: the AIMessage realtime `.invoke()` returned for the same Response.
    ours = _batch_message(model, {**ctor, "use_responses_api": True}, answer, spec)
    theirs = realtime.model_dump()
    mine = ours.model_dump()
    if str(theirs["id"]).startswith("lc_run-"):
        # No output message to take the id from: `invoke()` made one of its random run id.
        assert str(mine.pop("id")).startswith("lc_run-")
        theirs.pop("id")
    assert mine == theirs


def test_a_run_batches_on_v1_responses_with_reasoning_and_usage_details() -> None:
    # No OPENAI_API_KEY: the openai protocol runs on the in-process emulator.
    llm = ChatOpenAI(
        model="gpt-5-mini",
        api_key="sk-unused",
        use_responses_api=True,
        reasoning={"effort": "low", "summary": "auto"},
        output_version="responses/v1",
    )
    results = run_batch(
        [
            {
                "id": "a",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Why batch requests?"},
                ],
            }
        ],
        model=llm,
        **FAST,
    )
    (job,) = results.jobs
    assert job["endpoint"] == "responses"
    (result,) = results
    assert result.ok and result.message is not None
    kinds = [block["type"] for block in result.message.content]  # type: ignore[index]
    assert kinds == ["reasoning", "text"]
    assert result.message.content[0]["summary"][0]["text"].endswith("Why batch requests?")  # type: ignore[index]
    assert result.content == "Emulated reply to: Why batch requests?"
    usage = result.message.usage_metadata
    assert usage is not None
    assert usage["output_token_details"] == {"reasoning": 3}
    assert usage["input_token_details"] == {"cache_read": 5, "cache_creation": 0}  # system prompt
    assert results.usage["output_tokens"] == usage["output_tokens"]


def test_a_tool_call_comes_back_from_a_responses_batch() -> None:
    llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-unused", use_responses_api=True)
    (result,) = run_batch(
        ["Where is order 42?"], model=llm.bind_tools([LOOKUP], tool_choice="lookup"), **FAST
    )
    assert result.ok and result.message is not None
    (call,) = result.message.tool_calls
    assert call["name"] == "lookup" and call["args"] == {"order": "emulated order"}


def test_the_cli_runs_a_file_on_the_responses_endpoint(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"r{i}", "prompt": f"hi {i}"}) + "\n" for i in range(2))
    )
    db, out = tmp_path / "db.sqlite", tmp_path / "out.jsonl"
    args = ["run", str(source), "--provider", "openai", "--endpoint", "responses", "--db", str(db)]
    result = CliRunner().invoke(
        app, [*args, "--thread", "t1", "--wait", "--poll-interval", "0.1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["content"] for row in rows] == [
        "Emulated reply to: hi 0",
        "Emulated reply to: hi 1",
    ]
    # Answered by the emulator's Responses API: a `Response` (id `resp_...`), read by LangChain.
    assert all(row["message"]["response_metadata"]["id"].startswith("resp_") for row in rows)
    assert all(row["message"]["response_metadata"]["object"] == "response" for row in rows)


def test_retries_keep_the_responses_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator's fault knobs apply to /v1/responses lines as to chat lines.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "request_fail_rate=0.3,seed=3")
    llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-unused", use_responses_api=True)
    results = run_batch([f"retry me {i}" for i in range(20)], model=llm, max_attempts=6, **FAST)
    assert all(result.ok for result in results)
    assert any(job["retry_of"] for job in results.jobs), "a 30% failure rate needs follow-ups"
    assert {job["endpoint"] for job in results.jobs} == {"responses"}
    assert all(r.message.response_metadata["object"] == "response" for r in results)  # type: ignore[union-attr]


@pytest.mark.parametrize("output_version", ["v0", "responses/v1"])
def test_a_structured_answer_is_parsed_as_with_structured_output_parses_it(
    output_version: str,
) -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=response_body(json.loads(request.content), CREATED)[0])

    def model(**client: Any) -> ChatOpenAI:
        return ChatOpenAI(
            model="gpt-4o-mini",
            api_key="sk-unused",
            use_responses_api=True,
            output_version=output_version,
            **client,
        )

    transport = httpx2.Client(transport=httpx2.MockTransport(answer))
    realtime = model(http_client=transport).with_structured_output(TICKET, method="json_schema")
    structured = model().with_structured_output(TICKET, method="json_schema")
    (result,) = run_batch(["A billing question"], model=structured, **FAST)
    assert (
        result.parsed
        == realtime.invoke("A billing question")
        == {
            "category": "billing",
            "urgent": True,
        }
    )


def test_plan_checks_what_run_would_send_to_the_responses_endpoint(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    record = {"id": "deep", "prompt": "Hi", "params": {"reasoning": {"effort": "low"}}}
    source.write_text(json.dumps(record) + "\n")
    args = ["plan", str(source), "--provider", "openai"]
    refused = CliRunner().invoke(app, args)
    assert isinstance(refused.exception, InputError)
    assert "--endpoint responses" in str(refused.exception) and "'deep'" in str(refused.exception)
    assert CliRunner().invoke(app, [*args, "--endpoint", "responses"]).exit_code == 0


def test_an_answer_realtime_raises_for_fails_its_request_with_the_billed_usage() -> None:
    # A 200 `Response` carrying an `error`: `.invoke()` raises; the request fails, billed.
    llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-unused", use_responses_api=True)
    ok, broken = run_batch(["Fine", "Oops [emulator:error_body]"], model=llm, **FAST)
    assert ok.ok and not broken.ok and broken.message is None
    assert broken.error is not None and "server had an error" in broken.error["message"]
    assert broken.usage["input_tokens"] == 3 + 2 and broken.usage["output_tokens"] > 0
