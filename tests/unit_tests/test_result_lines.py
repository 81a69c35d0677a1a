"""Whatever a result line holds, collection finishes: one result per request, counts add up.

Property tests: the lines of a job's result file are valid lines with arbitrary JSON values put
in any of their fields (custom_id, response, status_code, body, choices, message, content,
tool_calls, usage, error; Anthropic's result, type, message, content blocks, input, usage, ...;
Gemini's key, candidates, parts, functionCall, usageMetadata, promptFeedback, ...),
plus lines that are not JSON or not objects. They go through the real download path (the SDK
against the in-process emulator: an uploaded file for OpenAI / Mistral / Gemini, an ended batch's
results for Anthropic) into the collection of one job (`agent.results.job_results`), and every result
must be storable (`agent.bulk.dumps`, read back with `to_result`) with integer usage.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bulk import dumps, to_result
from agent.emulator.store import Store
from agent.providers import provider_for_job
from agent.results import job_results
from agent.structured import OutputSpec
from tests.support import run_with_wait_budget
from tests.unit_tests.test_structured_parity import SCHEMA, TOOLS

# The SDKs' models warn when dumping the odd values; realtime gets the same warnings.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic.main")
IDS = ["r0", "r1", "r2", "r3"]
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SPECS = [None, OutputSpec(response_schema=SCHEMA), OutputSpec(tools=TOOLS)]

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),  # beyond 64 bits too: valid JSON, which orjson refuses
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
        st.sampled_from(["r0", "r1", "", "stop", "assistant", "succeeded", "tool_use", "text"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)

TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def _chat_line(custom_id: str, tools: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "Fine.", "refusal": None}
    if tools:
        message.update(content=None, tool_calls=[copy.deepcopy(TOOL_CALL)])
    return {
        "id": "batch_req_1",
        "custom_id": custom_id,
        "response": {
            "status_code": 200,
            "body": {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1767225600,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": 2,
                    "total_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
                "error": None,
            },
        },
        "error": None,
    }


CHAT_PATHS = [
    ("custom_id",),
    ("response",),
    ("response", "status_code"),
    ("response", "body"),
    ("response", "body", "choices"),
    ("response", "body", "choices", 0),
    ("response", "body", "choices", 0, "message"),
    ("response", "body", "choices", 0, "message", "content"),
    ("response", "body", "choices", 0, "message", "role"),
    ("response", "body", "choices", 0, "message", "refusal"),
    ("response", "body", "choices", 0, "message", "tool_calls"),
    ("response", "body", "choices", 0, "message", "tool_calls", 0, "function"),
    ("response", "body", "choices", 0, "message", "tool_calls", 0, "function", "arguments"),
    ("response", "body", "choices", 0, "finish_reason"),
    ("response", "body", "usage"),
    ("response", "body", "usage", "prompt_tokens"),
    ("response", "body", "usage", "completion_tokens"),
    ("response", "body", "usage", "prompt_tokens_details"),
    ("response", "body", "usage", "prompt_tokens_details", "cached_tokens"),
    ("response", "body", "error"),
    ("response", "body", "id"),
    ("response", "body", "model"),
    ("response", "body", "created"),
    ("error",),
]


def _anthropic_line(custom_id: str, tools: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "Fine."}]
    if tools:
        content = [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]
    return {
        "custom_id": custom_id,
        "result": {
            "type": "succeeded",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-haiku-4-5",
                "content": content,
                "stop_reason": "tool_use" if tools else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 0},
            },
        },
    }


ANTHROPIC_PATHS = [
    ("custom_id",),
    ("result",),
    ("result", "type"),
    ("result", "message"),
    ("result", "message", "content"),
    ("result", "message", "content", 0),
    ("result", "message", "content", 0, "type"),
    ("result", "message", "content", 0, "text"),
    ("result", "message", "content", 0, "input"),
    ("result", "message", "stop_reason"),
    ("result", "message", "role"),
    ("result", "message", "model"),
    ("result", "message", "usage"),
    ("result", "message", "usage", "input_tokens"),
    ("result", "message", "usage", "output_tokens"),
    ("result", "message", "usage", "cache_read_input_tokens"),
    ("result", "error"),
]


def _gemini_line(key: str, tools: bool) -> dict[str, Any]:
    part: dict[str, Any] = {"text": "Fine."}
    if tools:
        part = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    return {
        "key": key,
        "response": {
            "candidates": [
                {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": 5,
                "candidatesTokenCount": 2,
                "totalTokenCount": 7,
                "thoughtsTokenCount": 1,
            },
            "modelVersion": "gemini-2.5-flash",
            "responseId": "resp-1",
        },
    }


GEMINI_PATHS = [
    ("key",),
    ("response",),
    ("response", "candidates"),
    ("response", "candidates", 0),
    ("response", "candidates", 0, "content"),
    ("response", "candidates", 0, "content", "role"),
    ("response", "candidates", 0, "content", "parts"),
    ("response", "candidates", 0, "content", "parts", 0),
    ("response", "candidates", 0, "content", "parts", 0, "text"),
    ("response", "candidates", 0, "content", "parts", 0, "functionCall"),
    ("response", "candidates", 0, "content", "parts", 0, "functionCall", "args"),
    ("response", "candidates", 0, "finishReason"),
    ("response", "candidates", 0, "safetyRatings"),
    ("response", "usageMetadata"),
    ("response", "usageMetadata", "promptTokenCount"),
    ("response", "usageMetadata", "candidatesTokenCount"),
    ("response", "usageMetadata", "thoughtsTokenCount"),
    ("response", "usageMetadata", "totalTokenCount"),
    ("response", "promptFeedback"),
    ("response", "modelVersion"),
    ("response", "responseId"),
    ("error",),
]


def _put(line: Any, path: tuple[Any, ...], value: Any) -> None:
    """Set `line[path] = value` where the path still exists (an earlier change may cut it)."""
    target = line
    for key in path[:-1]:
        try:
            target = target[key]
        except (KeyError, IndexError, TypeError):
            return
    key = path[-1]
    if isinstance(target, dict) or (
        isinstance(target, list) and isinstance(key, int) and len(target) > key
    ):
        target[key] = value


@st.composite
def result_lines(draw: st.DrawFn, template: Any, paths: list[tuple[Any, ...]]) -> bytes:
    """A result file: a line per request (some changed, some missing), strays and junk."""
    tools = draw(st.booleans())
    lines: list[bytes] = []
    for request_id in draw(st.lists(st.sampled_from(IDS), max_size=6)):
        line = template(request_id, tools)
        for path in draw(st.lists(st.sampled_from(paths), max_size=3)):
            _put(line, path, draw(json_values))
        lines.append(json.dumps(line).encode())
    junk = st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=12),
        st.just(b'{"custom_id": "r1", "response": {'),
    )
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(junk))
    return b"".join(line.replace(b"\n", b" ") + b"\n" for line in lines)


def _real_job(provider: str) -> dict[str, Any]:
    """A job that really ran on the emulator (its record as collect sees it)."""
    records = [{"id": request_id, "prompt": f"question {request_id}"} for request_id in IDS]
    values, _ = run_with_wait_budget(provider, records, f"real-{provider}")
    assert values["status"] == "completed"
    (job,) = values["jobs"]
    return dict(job)


def _serve(provider: str, job: dict[str, Any], content: bytes, state_dir: Path) -> dict[str, Any]:
    """Make `content` the job's result file, downloaded as the provider downloads it."""
    if provider == "anthropic":
        # No files in this protocol: replace the ended batch's results in the emulator, with
        # each request's custom id as Anthropic is sent it (the job's key and a position).
        content = _as_sent_to_anthropic(content, str(job["job_key"]))
        store = Store(state_dir)
        record = store.get_job("anthropic", str(job["job_id"]))
        assert record is not None
        for key, data in (("_results_ok", content), ("_results_other", b"")):
            meta = store.get_file("anthropic", record[key]) if record.get(key) else None
            if meta is not None:
                store.put_file("anthropic", meta, [data])
        return job
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as handle:
        handle.write(content)
        handle.flush()
        file_id = provider_for_job(job).upload(Path(handle.name), "odd-results.jsonl")  # type: ignore[arg-type]
    return {**job, "output_file_id": file_id, "error_file_id": None}


def _as_sent_to_anthropic(content: bytes, job_key: str) -> bytes:
    """Replace our request ids in decodable lines with the custom ids Anthropic is sent."""
    from agent.providers.anthropic.provider import custom_id

    lines = []
    for raw in content.split(b"\n"):
        try:
            line = json.loads(raw)
        except ValueError:
            lines.append(raw)
            continue
        if isinstance(line, dict) and line.get("custom_id") in IDS:
            line["custom_id"] = custom_id(job_key, IDS.index(line["custom_id"]))
            raw = json.dumps(line).encode()
        lines.append(raw)
    return b"\n".join(lines)


def _line_ids(content: bytes, id_field: str) -> set[str]:
    """The string ids of the lines that decode to objects (the only ones that match)."""
    ids = set()
    for raw in content.split(b"\n"):
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get(id_field), str):
            ids.add(line[id_field])
    return ids


def _check_collection(job: dict[str, Any], spec: OutputSpec | None, content: bytes) -> None:
    results = list(job_results(job, IDS, 1, spec))  # type: ignore[arg-type]
    assert sorted(request_id for request_id, _, _ in results) == sorted(IDS)
    # Gemini's lines name their request `key`; the others', `custom_id`.
    matched = _line_ids(content, "key" if job["provider"] == "gemini" else "custom_id")
    for request_id, result, retryable in results:
        if request_id not in matched:
            # No line can be matched to it (unreadable or stray lines only): retried.
            assert result["error"]["code"] == "no_result" and retryable
    statuses = [result["status"] for _, result, _ in results]
    assert statuses.count("succeeded") + statuses.count("failed") == len(IDS)
    for request_id, result, _ in results:
        assert result["id"] == request_id
        if result["status"] == "failed":
            assert result["error"]["code"] and result["error"]["message"]
        else:
            assert result["error"] is None and result["message"] is not None
        assert all(type(result["usage"][key]) is int for key in result["usage"])
        # What collect stores, and every reader of the results rebuilds.
        to_result(json.loads(dumps(result)))


@pytest.mark.parametrize(
    ("provider", "template", "paths"),
    [
        ("openai", _chat_line, CHAT_PATHS),
        ("mistral", _chat_line, CHAT_PATHS),
        ("anthropic", _anthropic_line, ANTHROPIC_PATHS),
        ("gemini", _gemini_line, GEMINI_PATHS),
    ],
)
def test_any_result_line_gives_one_result_per_request(
    provider: str, template: Any, paths: list[tuple[Any, ...]], isolated_env: Path
) -> None:
    job = _real_job(provider)

    @SETTINGS
    @given(content=result_lines(template, paths), spec=st.sampled_from(SPECS))
    def collect_one_job(content: bytes, spec: OutputSpec | None) -> None:
        _check_collection(_serve(provider, job, content, isolated_env), spec, content)

    collect_one_job()
