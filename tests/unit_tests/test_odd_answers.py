"""One bad answer never blocks the rest: odd answers fail alone, as realtime would raise.

Each test runs whole batches (graph, in-memory saver and store) against the in-process emulator
through the real SDKs. Prompt markers (`agent.emulator.answers`) make the emulator send the odd
shapes real providers send: refusals, 200 bodies with an `error`, `choices: []`, tool arguments
that are not a JSON object or not a string. The request with that answer gets a result (`failed`
with the documented code and the exception realtime `.invoke()` would raise, its message and
usage kept when there are any); every other request is collected and the thread completes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.emulator import list_jobs
from tests.support import run_with_wait_budget
from tests.unit_tests.test_structured_parity import SCHEMA, TOOLS

OK = "Classify: my invoice is wrong, billing"
# What realtime `.invoke()` does with each odd answer: (code, exception type), or None where it
# returns normally (the request succeeds). Which markers apply depends on the protocol.
WITH_SCHEMA: dict[str, dict[str, tuple[str, str] | None]] = {
    "openai": {
        "refusal": ("refusal", "OpenAIRefusalError"),
        "error_body": ("invalid_response", "ValueError"),
        "no_choices": ("invalid_response", "IndexError"),
    },
    "mistral": {
        # The default method is function calling: no tool call parses to None, as in realtime.
        "refusal": None,
        "tool_args_array": ("invalid_response", "ValidationError"),
        "tool_args_string": ("invalid_response", "ValidationError"),
        "tool_args_raw": ("invalid_response", "ValidationError"),
        # ChatMistralAI ignores an `error` next to a normal answer.
        "error_body": None,
        "no_choices": ("invalid_response", "IndexError"),
    },
    "anthropic": {
        "refusal": ("refusal", "ModelRefusalError"),
        "tool_args_array": ("invalid_response", "ValidationError"),
        "tool_args_string": ("invalid_response", "ValidationError"),
    },
    "gemini": {
        # A withheld answer (finishReason SAFETY) and a blocked prompt (no candidates) both give
        # an empty message, which the JSON-schema parser refuses.
        "refusal": ("refusal", "ModelRefusalError"),
        "no_choices": ("refusal", "ModelRefusalError"),
        # Gemini has no `error` shape: the marker changes nothing.
        "error_body": None,
    },
}
WITH_TOOLS: dict[str, dict[str, tuple[str, str] | None]] = {
    "openai": {
        "tool_args_array": ("invalid_response", "ValidationError"),
        "tool_args_string": ("invalid_response", "ValidationError"),
        "tool_args_raw": ("invalid_response", "ValidationError"),
        "tool_args_raw tool_args_array": ("invalid_response", "ValidationError"),
    },
    "mistral": {
        "tool_args_array": ("invalid_response", "ValidationError"),
        "tool_args_raw": ("invalid_response", "ValidationError"),
        "tool_args_raw tool_args_array": ("invalid_response", "ValidationError"),
    },
    "anthropic": {
        "tool_args_array": ("invalid_response", "ValidationError"),
        "tool_args_string": ("invalid_response", "ValidationError"),
    },
    "gemini": {
        # Arguments that are not an object cannot be a `functionCall.args` Struct: Gemini sends
        # them as a text part, an answer realtime returns like any other.
        "tool_args_array": None,
        "tool_args_string": None,
        "tool_args_raw": None,  # no Gemini shape
    },
}
PLAIN: dict[str, dict[str, tuple[str, str] | None]] = {
    # Without a schema a refusal is an answer like any other: realtime returns the message.
    "openai": {
        "refusal": None,
        "error_body": ("invalid_response", "ValueError"),
        "no_choices": ("invalid_response", "IndexError"),
    },
    "mistral": {"refusal": None, "no_choices": ("invalid_response", "IndexError")},
    "anthropic": {"refusal": None},
    "gemini": {"refusal": None, "no_choices": None},
}
# Realtime ChatGoogleGenerativeAI builds a blocked prompt's empty message (no candidates) without
# `usage_metadata`, so the result, as that message, reports no usage though the line has some.
UNBILLED = {("gemini", "no_choices")}


def _markers(shape: str) -> str:
    return " ".join(f"[emulator:{name}]" for name in shape.split())


def _records(shapes: dict[str, Any]) -> list[dict[str, Any]]:
    records = [{"id": "first", "prompt": OK}]
    for n, shape in enumerate(shapes):
        prompt = f"What is the weather in Paris? use get_weather {_markers(shape)}"
        records.append({"id": f"odd-{n}", "prompt": prompt})
    records.append({"id": "last", "prompt": "Classify: the app crashes, bug"})
    return records


def _check_batch(
    provider: str,
    expected: dict[str, tuple[str, str] | None],
    graph_input: dict[str, Any],
    thread: str,
) -> dict[str, Any]:
    records = _records(expected)
    values, _ = run_with_wait_budget(provider, records, thread, graph_input)
    # The thread finishes (it used to stay `running`, every resume failing on the odd answer).
    assert values["status"] == "completed", values.get("error")
    results = {r["id"]: r for r in values["results"]}
    assert list(results) == [r["id"] for r in records]
    for request_id in ("first", "last"):
        assert results[request_id]["status"] == "succeeded", results[request_id]["error"]
    for n, (shape, outcome) in enumerate(expected.items()):
        result = results[f"odd-{n}"]
        # The provider billed the answer: its usage counts in the result and the totals.
        if (provider, shape) in UNBILLED:
            assert result["usage"]["input_tokens"] == 0, shape
        else:
            assert result["usage"]["input_tokens"] > 0, shape
        assert result["attempts"] == 1
        if outcome is None:
            assert result["status"] == "succeeded" and result["error"] is None, (shape, result)
            continue
        code, exception = outcome
        assert result["status"] == "failed", (shape, result)
        assert result["error"]["code"] == code, (shape, result["error"])
        assert result["error"]["message"].startswith(f"{exception}: "), result["error"]
        # A refusal is a built message (kept); an answer LangChain cannot build has none.
        assert (result["message"] is not None) == (code == "refusal"), shape
    counts = values["counts"]
    assert counts["succeeded"] + counts["failed"] == counts["total"] == len(records)
    assert counts["failed"] == sum(r["status"] == "failed" for r in results.values())
    assert values["usage"]["input_tokens"] == sum(
        r["usage"]["input_tokens"] for r in results.values()
    )
    # Not retried: the same prompt would get the same answer.
    assert len(values["jobs"]) == 1 and len(list_jobs()) == 1
    return results


@pytest.mark.parametrize("provider", ["openai", "mistral", "anthropic", "gemini"])
def test_odd_answers_under_a_response_schema_fail_alone(provider: str, isolated_env: Path) -> None:
    results = _check_batch(
        provider, WITH_SCHEMA[provider], {"response_schema": SCHEMA}, f"schema-{provider}"
    )
    assert results["first"]["parsed"]["category"] == "billing"
    if provider == "openai":
        refusal = results["odd-0"]
        assert refusal["error"]["message"] == "OpenAIRefusalError: I can't help with that."
        assert refusal["message"].additional_kwargs["refusal"] == "I can't help with that."
    if provider == "mistral":
        # Realtime `.invoke()` returns None for an answer without the schema's tool call.
        assert results["odd-0"]["parsed"] is None


@pytest.mark.parametrize("provider", ["openai", "mistral", "anthropic", "gemini"])
def test_tool_arguments_that_are_not_an_object_fail_alone(
    provider: str, isolated_env: Path
) -> None:
    results = _check_batch(provider, WITH_TOOLS[provider], {"tools": TOOLS}, f"tools-{provider}")
    assert results["first"]["tool_calls"][0]["name"] == "get_weather"


@pytest.mark.parametrize("provider", ["openai", "mistral", "anthropic", "gemini"])
def test_odd_answers_without_tools_or_schema(provider: str, isolated_env: Path) -> None:
    results = _check_batch(provider, PLAIN[provider], {}, f"plain-{provider}")
    refused = results["odd-0"]["message"]
    if provider == "openai":
        assert refused.content == "" and refused.additional_kwargs["refusal"]
    if provider == "anthropic":
        assert refused.response_metadata["stop_reason"] == "refusal"
    if provider == "gemini":
        assert refused.content == "" and refused.response_metadata["finish_reason"] == "SAFETY"
        blocked = results["odd-1"]["message"]
        assert blocked.response_metadata["prompt_feedback"]["block_reason"] == "SAFETY"


# ---------------------------------------------------------------------------------------------
# run_batch(model=llm.with_structured_output(...)) returns what that runnable's .invoke() returns
# ---------------------------------------------------------------------------------------------

# Every odd answer, plus partial JSON, a broken schema and an answer cut at max_tokens. Markers a
# protocol has no shape for give its normal answer, which must match realtime too.
PARITY_RECORDS: list[dict[str, Any]] = [
    {"id": "ok", "prompt": "Classify: the app crashes, bug"},
    {"id": "partial", "prompt": "Classify: a question [emulator:invalid_json]"},
    {"id": "violation", "prompt": "Classify: a question [emulator:schema_violation]"},
    {"id": "cut", "prompt": "Classify: my invoice is wrong", "params": {"max_tokens": 3}},
    *[
        {"id": shape.replace(" ", "-"), "prompt": f"Classify: billing {_markers(shape)}"}
        for shape in (
            "refusal",
            "error_body",
            "no_choices",
            "tool_args_array",
            "tool_args_string",
            "tool_args_raw",
        )
    ],
]
PARITY_METHODS = {
    "openai": ["json_schema", "function_calling", "json_mode"],
    "mistral": ["function_calling", "json_schema", "json_mode"],
    "anthropic": ["function_calling", "json_schema"],
    "gemini": ["json_schema", "function_calling", "json_mode"],
}
# The answer cut at max tokens: ChatGoogleGenerativeAI's call takes `max_output_tokens` (its
# `invoke(max_tokens=...)` is refused, as google-genai's config has no such field).
CUT_PARAMS = {"gemini": {"max_output_tokens": 3}}


def _parity_records(provider: str) -> list[dict[str, Any]]:
    return [
        {**record, "params": CUT_PARAMS[provider]}
        if record["id"] == "cut" and provider in CUT_PARAMS
        else record
        for record in PARITY_RECORDS
    ]


PARITY_CASES = [
    (provider, method, include_raw)
    for provider, methods in PARITY_METHODS.items()
    for method in methods
    for include_raw in (False, True)
]


def _batch_model(provider: str) -> Any:
    """The chat model a notebook would hand to run_batch (no key: the emulator answers)."""
    if provider == "openai":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(model="gpt-4o-mini", api_key="sk-unused", use_responses_api=False)  # type: ignore[arg-type]
    if provider == "mistral":
        from langchain_mistralai import ChatMistralAI

        return ChatMistralAI(model="mistral-small-latest", api_key="unused")  # type: ignore[arg-type]
    if provider == "gemini":
        from langchain_google_genai import ChatGoogleGenerativeAI

        return ChatGoogleGenerativeAI(model="gemini-2.5-flash", api_key="unused")
    from langchain_anthropic import ChatAnthropic

    return ChatAnthropic(model="claude-haiku-4-5", api_key="unused")  # type: ignore[arg-type,call-arg]


def _realtime_model(provider: str, body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The same chat model in realtime, its HTTP client answering with `body`."""
    if provider == "gemini":
        from tests.realtime import recording_gemini

        return recording_gemini(body, {})[0]
    from tests.unit_tests.test_structured_parity import CASES

    return CASES[provider].realtime(body, {}, monkeypatch)[0]


def _answer_bodies(
    provider: str, job: dict[str, Any], state_dir: Path, ids: list[str]
) -> dict[str, Any]:
    """The emulator's answer to each request (of `ids`, the job's requests in order), by id."""
    import orjson

    from agent.providers import provider_for_job

    request_id = provider_for_job(job).id_matcher(job, ids)  # type: ignore[arg-type]

    if provider == "anthropic":
        import anthropic

        from agent.emulator import IN_PROCESS_BASE_URL, emulator_http_client

        client = anthropic.Anthropic(
            api_key="x",
            base_url=f"{IN_PROCESS_BASE_URL}/anthropic",
            http_client=emulator_http_client(state_dir),
        )
        with client.messages.batches.with_streaming_response.results(job["job_id"]) as response:
            lines = [orjson.loads(line) for line in response.iter_lines() if line.strip()]
        return {request_id(line["custom_id"]): line["result"]["message"] for line in lines}
    sdk = provider_for_job(job)  # type: ignore[arg-type]
    lines = [orjson.loads(raw) for raw in sdk.file_lines(str(job["output_file_id"]))]
    if provider == "gemini":
        return {request_id(line["key"]): line["response"] for line in lines}
    return {request_id(line["custom_id"]): line["response"]["body"] for line in lines}


def _comparable(message: Any, provider: str) -> dict[str, Any]:
    """A message's dump without what realtime draws at random.

    `invoke()` message ids embed a random run id; a Gemini function call comes without an id and
    gets a uuid4 (realtime too), wherever it is repeated: it is replaced by its position.
    """
    import json

    dumped: dict[str, Any] = message.model_dump(exclude={"id"})
    if provider != "gemini":
        return dumped
    text = json.dumps(dumped, default=str)
    for index, call in enumerate(message.tool_calls):
        if call["id"]:
            text = text.replace(call["id"], f"call-{index}")
    return dict(json.loads(text))


def _same_output(ours: Any, theirs: Any, include_raw: bool, provider: str) -> None:
    if not include_raw:
        assert ours == theirs
        return
    assert set(ours) == set(theirs) == {"raw", "parsed", "parsing_error"}
    assert _comparable(ours["raw"], provider) == _comparable(theirs["raw"], provider)
    assert ours["parsed"] == theirs["parsed"]
    mine, realtime = ours["parsing_error"], theirs["parsing_error"]
    assert type(mine) is type(realtime) and str(mine) == str(realtime)


@pytest.mark.parametrize(("provider", "method", "include_raw"), PARITY_CASES)
def test_run_batch_returns_what_the_structured_runnable_returns_or_raises(
    provider: str,
    method: str,
    include_raw: bool,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent import run_batch

    records = _parity_records(provider)
    options = {"method": method, "include_raw": include_raw}
    results = run_batch(
        records,
        model=_batch_model(provider).with_structured_output(SCHEMA, **options),
        poll_interval_seconds=0.1,
        poll_backoff=1.0,
        keep_files=True,  # the answers are read back from the job's output file below
    )
    assert results.status == "completed" and len(results) == len(records)
    ids = [record["id"] for record in records]
    bodies = _answer_bodies(provider, results.jobs[0], isolated_env, ids)
    kinds = set()
    for record, result in zip(records, results, strict=True):
        # Realtime: the same runnable, its HTTP client answering with that very body.
        llm = _realtime_model(provider, bodies[record["id"]], monkeypatch)
        realtime = llm.with_structured_output(SCHEMA, **options)
        try:
            expected = realtime.invoke(record["prompt"], **record.get("params", {}))
        except Exception as exc:
            assert not result.ok, (record["id"], result)
            assert result.error is not None and result.parsed is None
            assert result.error["message"] == f"{type(exc).__name__}: {exc}", record["id"]
            is_refusal = type(exc).__name__ in {"OpenAIRefusalError", "ModelRefusalError"}
            assert (result.error["code"] == "refusal") == is_refusal, result.error
            kinds.add(result.error["code"])
            continue
        assert result.ok and result.error is None, (record["id"], result.error)
        _same_output(result.parsed, expected, include_raw, provider)
        if include_raw and expected["parsing_error"] is not None:
            kinds.add("parsing_error")
        else:
            kinds.add("none" if expected is None else "value")
    # Both sides were compared on odd answers too, not only on good ones.
    odd = {"refusal", "output_parsing", "invalid_response", "none", "parsing_error"}
    assert "value" in kinds and kinds & odd, kinds
