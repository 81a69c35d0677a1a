"""The emulator's Gemini Batch protocol, through the real google-genai SDK (in process and loopback)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest
from google import genai
from google.genai import errors, types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.emulator import (
    IN_PROCESS_BASE_URL,
    ManualClock,
    emulator_http_client,
    list_jobs,
    read_access_log,
    running_emulator,
)

MODEL = "gemini-2.5-flash"
SECRET = "gemini-emulator-key-0123456789"
FAULTS = "BATCH_AGENT_EMULATOR_FAULTS"
DELAY = "BATCH_AGENT_EMULATOR_DELAY"
VERSIONS = [None, "v1beta"]  # None: the SDK's default (v1)
GOOGLE_ENV = (
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
)


@pytest.fixture(autouse=True)
def no_google_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads keys, the API version and Vertex mode from the environment: clear them."""
    for name in GOOGLE_ENV:
        monkeypatch.delenv(name, raising=False)


# -- helpers -------------------------------------------------------------------------


def client(
    state_dir: Path,
    clock: ManualClock | None = None,
    version: str | None = None,
    base_url: str | None = None,
    retry: types.HttpRetryOptions | None = None,
    api_key: str = SECRET,
) -> genai.Client:
    if base_url is not None:
        options = types.HttpOptions(
            base_url=f"{base_url}/gemini", api_version=version, retry_options=retry
        )
    else:
        options = types.HttpOptions(
            base_url=f"{IN_PROCESS_BASE_URL}/gemini",
            api_version=version,
            httpx_client=emulator_http_client(state_dir, clock),
            retry_options=retry,
        )
    return genai.Client(api_key=api_key, http_options=options)


def raw(state_dir: Path, method: str, path: str, **kwargs: Any) -> httpx2.Response:
    """Call the emulator without the SDK (to read the wire JSON the SDK drops)."""
    headers = {"x-goog-api-key": SECRET, **kwargs.pop("headers", {})}
    http = emulator_http_client(state_dir)
    return http.request(method, f"/gemini/{path}", headers=headers, **kwargs)


def request_line(key: str, text: str, **request: Any) -> dict[str, Any]:
    contents = [{"role": "user", "parts": [{"text": text}]}]
    return {"key": key, "request": {"contents": contents, **request}}


def jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def upload(c: genai.Client, lines: list[Any]) -> types.File:
    return c.files.upload(
        file=io.BytesIO(jsonl(lines)), config={"mime_type": "jsonl", "display_name": "in.jsonl"}
    )


def numbered(n: int, prefix: str = "q") -> list[tuple[str, str]]:
    return [(f"r{i:02d}", f"{prefix} {i}") for i in range(n)]


def submit(c: genai.Client, texts: list[tuple[str, str]], display_name: str = "job") -> str:
    uploaded = upload(c, [request_line(key, text) for key, text in texts])
    job = c.batches.create(model=MODEL, src=uploaded.name, config={"display_name": display_name})
    assert job.name is not None
    return job.name


def wait(c: genai.Client, clock: ManualClock, name: str, step: float = 0.05) -> types.BatchJob:
    job = c.batches.get(name=name)
    for _ in range(400):
        if job.done:
            return job
        clock.advance(step)
        job = c.batches.get(name=name)
    raise AssertionError(f"{name} never ended: {job.state}")


def rows_of(c: genai.Client, job: types.BatchJob) -> list[dict[str, Any]]:
    if job.dest is None or not job.dest.file_name:
        return []
    text = c.files.download(file=job.dest.file_name).decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wire(state_dir: Path, name: str) -> dict[str, Any]:
    response = raw(state_dir, "GET", f"v1beta/{name}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def stats(state_dir: Path, name: str) -> dict[str, str]:
    """The raw ``batchStats`` (strings; zero counts left out, as proto3 JSON does)."""
    found: dict[str, str] = wire(state_dir, name)["metadata"]["batchStats"]
    assert all(isinstance(value, str) for value in found.values())
    return found


def assert_first_half_done(
    state_dir: Path, c: genai.Client, job: types.BatchJob, texts: list[tuple[str, str]]
) -> None:
    """An ended `job` of ten requests ran the first five: their rows, in order, and its stats."""
    assert [row["key"] for row in rows_of(c, job)] == [k for k, _ in texts[:5]]
    assert stats(state_dir, str(job.name)) == {
        "requestCount": "10",
        "successfulRequestCount": "5",
        "pendingRequestCount": "5",
    }


def by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in rows}


def text_of(row: dict[str, Any]) -> str | None:
    """The answer text, parsed by the SDK's own response type (as the provider will)."""
    return types.GenerateContentResponse.model_validate(row["response"]).text


# -- lifecycle -----------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_full_lifecycle(
    version: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY, "1")
    clock = ManualClock()
    c = client(tmp_path, clock, version)
    texts = numbered(4)
    uploaded = upload(c, [request_line(k, t) for k, t in texts])
    assert uploaded.name and uploaded.name.startswith("files/")
    assert uploaded.state == types.FileState.ACTIVE and uploaded.size_bytes == len(
        jsonl([request_line(k, t) for k, t in texts])
    )
    assert uploaded.display_name == "in.jsonl" and uploaded.mime_type == "jsonl"
    created = c.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "run-1"})
    assert created.state == types.JobState.JOB_STATE_PENDING and not created.done
    assert created.display_name == "run-1" and created.model == f"models/{MODEL}"
    name = str(created.name)
    assert name.startswith("batches/")
    assert stats(tmp_path, name) == {"requestCount": "4", "pendingRequestCount": "4"}
    clock.advance(0.6)  # running, more than half done (10 % queued, then 90 % running)
    running = c.batches.get(name=name)
    assert running.state == types.JobState.JOB_STATE_RUNNING and running.dest is None
    assert stats(tmp_path, name) == {
        "requestCount": "4",
        "successfulRequestCount": "2",
        "pendingRequestCount": "2",
    }
    clock.advance(0.4)
    done = c.batches.get(name=name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.done
    assert done.end_time is not None and done.dest is not None
    assert done.dest.file_name == f"files/batch-{name.removeprefix('batches/')}"
    body = wire(tmp_path, name)
    assert body["done"] is True
    assert body["response"]["responsesFile"] == done.dest.file_name
    assert body["metadata"]["output"] == {"responsesFile": done.dest.file_name}
    assert body["metadata"]["inputConfig"] == {"fileName": uploaded.name}
    assert stats(tmp_path, name) == {"requestCount": "4", "successfulRequestCount": "4"}
    rows = rows_of(c, done)
    assert [row["key"] for row in rows] == [k for k, _ in texts]
    for key, text in texts:
        row = by_key(rows)[key]
        assert text_of(row) == f"Emulated reply to: {text}"
        response = row["response"]
        assert response["candidates"][0]["finishReason"] == "STOP"
        assert response["candidates"][0]["content"]["role"] == "model"
        assert response["usageMetadata"]["promptTokenCount"] == 3 + len(text.split())
        assert response["usageMetadata"]["candidatesTokenCount"] == 3 + len(text.split())
        assert response["modelVersion"] == MODEL and response["responseId"]
    # The responses file is a generated file: listed, described and downloadable.
    result = c.files.get(name=done.dest.file_name)
    assert result.source == types.FileSource.GENERATED and result.download_uri
    assert [job.name for job in c.batches.list()] == [name]


def test_uploads_in_chunks_and_files_page_and_delete(tmp_path: Path) -> None:
    c = client(tmp_path)
    # Over the SDK's 8 MB chunk: two `upload` calls, the second one finalising.
    big = b'{"key": "x", "request": {}}\n' * (9 * 1024 * 1024 // 28)
    uploaded = c.files.upload(file=io.BytesIO(big), config={"mime_type": "jsonl"})
    assert uploaded.size_bytes == len(big)
    assert c.files.download(file=str(uploaded.name)) == big
    chunks = [r for r in read_access_log(tmp_path) if "upload_id=" in r["path"]]
    assert [r["status"] for r in chunks] == [200, 200]
    names = [str(upload(c, [request_line("a", str(i))]).name) for i in range(4)]
    listed = [f.name for f in c.files.list(config={"page_size": 2})]
    assert listed == [*reversed(names), uploaded.name]  # newest first, every page
    first = raw(tmp_path, "GET", "v1/files", params={"pageSize": 2}).json()
    assert len(first["files"]) == 2 and first["nextPageToken"]
    c.files.delete(name=names[0])
    with pytest.raises(errors.ClientError) as excinfo:
        c.files.get(name=names[0])
    assert excinfo.value.code == 403 and excinfo.value.status == "PERMISSION_DENIED"


def test_inline_requests_carry_metadata_and_schemas_shape_answers(tmp_path: Path) -> None:
    clock = ManualClock()
    c = client(tmp_path, clock)
    schema = {
        "type": "OBJECT",
        "properties": {
            "label": {"type": "STRING", "enum": ["bug", "billing"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 2},
        },
        "required": ["label", "tags"],
    }
    lookup = types.FunctionDeclaration(
        name="lookup",
        description="Find a city.",
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={"city": types.Schema(type=types.Type.STRING)},
            required=["city"],
        ),
    )
    requests = [
        types.InlinedRequest(
            contents="plain question", metadata={"key": "plain"}, config={"max_output_tokens": 3}
        ),
        types.InlinedRequest(
            contents="a billing question",
            metadata={"key": "json"},
            config=types.GenerateContentConfig(
                response_mime_type="application/json", response_schema=schema
            ),
        ),
        types.InlinedRequest(
            contents="where is it",
            metadata={"key": "tool"},
            config=types.GenerateContentConfig(
                tools=[types.Tool(function_declarations=[lookup])],
                tool_config=types.ToolConfig(
                    function_calling_config=types.FunctionCallingConfig(mode="ANY")
                ),
            ),
        ),
        types.InlinedRequest(
            contents="think first",
            metadata={"key": "think"},
            config=types.GenerateContentConfig(
                thinking_config=types.ThinkingConfig(thinking_budget=2)
            ),
        ),
    ]
    job = c.batches.create(model=MODEL, src=requests)
    clock.advance(1)
    done = wait(c, clock, str(job.name))
    assert done.dest is not None and done.dest.file_name is None
    answers = {
        str((r.metadata or {})["key"]): r.response for r in done.dest.inlined_responses or []
    }
    assert set(answers) == {"plain", "json", "tool", "think"}
    plain = answers["plain"]
    assert plain is not None and plain.text == "Emulated reply to:"  # cut to 3 words
    assert plain.candidates and plain.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    as_json = answers["json"]
    assert as_json is not None and as_json.text is not None
    value = json.loads(as_json.text)
    jsonschema.validate(value, {**json.loads(json.dumps(schema).lower()), "required": ["label"]})
    assert value["label"] == "billing" and len(value["tags"]) == 2
    tool = answers["tool"]
    assert tool is not None and tool.function_calls
    assert tool.function_calls[0].name == "lookup"
    assert tool.function_calls[0].args == {"city": "emulated city"}
    # A thinking budget reports thought tokens (billed as output) within the budget.
    think = answers["think"]
    assert think is not None and think.usage_metadata is not None
    usage = think.usage_metadata
    assert usage.thoughts_token_count == 2 and usage.candidates_token_count == 5
    assert usage.total_token_count == usage.prompt_token_count + 5 + 2
    plain_usage = plain.usage_metadata
    assert plain_usage is not None and plain_usage.thoughts_token_count is None


def test_markers_and_bad_lines_are_error_lines_in_a_succeeded_job(tmp_path: Path) -> None:
    clock = ManualClock()
    c = client(tmp_path, clock)
    lines = [
        request_line("ok", "plain"),
        request_line("rej", "please [emulator:reject] this"),
        request_line("cp", "[emulator:content_policy] nope"),
        request_line("ref", "[emulator:refusal] tell me"),
        {"key": "empty", "request": {"contents": []}},
        {"key": "role", "request": {"contents": [{"role": "system", "parts": [{"text": "x"}]}]}},
    ]
    job = c.batches.create(model=MODEL, src=str(upload(c, lines).name))
    done = wait(c, clock, str(job.name))
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    rows = by_key(rows_of(c, done))
    assert set(rows) == {"ok", "rej", "cp", "ref", "empty", "role"}
    for key in ("rej", "cp", "empty", "role"):
        assert set(rows[key]) == {"key", "error"}
        assert rows[key]["error"]["code"] == 3 and rows[key]["error"]["message"]
    assert "contents" in rows["empty"]["error"]["message"]
    refusal = rows["ref"]["response"]["candidates"][0]
    assert refusal["finishReason"] == "SAFETY" and "content" not in refusal
    assert stats(tmp_path, str(job.name)) == {
        "requestCount": "6",
        "successfulRequestCount": "2",
        "failedRequestCount": "4",
    }


def test_cancel_is_instant_and_keeps_what_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY, "1")
    clock = ManualClock()
    c = client(tmp_path, clock)
    texts = numbered(10)
    name = submit(c, texts)
    clock.advance(0.6)  # 0.5 / 0.9 of the running phase: 5 of 10 done
    c.batches.cancel(name=name)
    cancelled = c.batches.get(name=name)  # no clock move: already terminal
    assert cancelled.state == types.JobState.JOB_STATE_CANCELLED and cancelled.done
    assert_first_half_done(tmp_path, c, cancelled, texts)
    clock.advance(5)  # nothing moves after a cancel
    assert c.batches.get(name=name).state == types.JobState.JOB_STATE_CANCELLED
    with pytest.raises(errors.ClientError) as excinfo:
        c.batches.cancel(name=name)
    assert excinfo.value.code == 400 and excinfo.value.status == "FAILED_PRECONDITION"
    c.batches.delete(name=name)
    with pytest.raises(errors.ClientError) as missing:
        c.batches.get(name=name)
    assert missing.value.code == 404 and missing.value.status == "NOT_FOUND"


def test_batch_listing_pages_newest_first(tmp_path: Path) -> None:
    clock = ManualClock()
    c = client(tmp_path, clock)
    names = []
    for i in range(5):
        names.append(submit(c, [("a", f"x {i}")], display_name=f"job-{i}"))
        clock.advance(0.01)
    assert [job.name for job in c.batches.list(config={"page_size": 2})] == names[::-1]
    page = raw(tmp_path, "GET", "v1/batches", params={"pageSize": 2}).json()
    assert [op["name"] for op in page["operations"]] == names[:2:-1]
    last = raw(
        tmp_path,
        "GET",
        "v1/batches",
        params={"pageSize": 3, "pageToken": page["nextPageToken"]},
    ).json()
    assert [op["name"] for op in last["operations"]] == names[2::-1]
    assert "nextPageToken" not in last
    listed = {job["id"]: job for job in list_jobs(tmp_path)}
    assert set(listed) == set(names)
    assert {job["provider"] for job in listed.values()} == {"gemini"}
    assert listed[names[0]]["metadata"] == {"displayName": "job-0"}


KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
WORDS = st.text(alphabet="abc xyz[]:", min_size=0, max_size=30)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.dictionaries(KEYS, WORDS, min_size=1, max_size=12),
    fail_rate=st.sampled_from([0.0, 0.3, 1.0]),
    shuffle=st.booleans(),
    progress=st.floats(min_value=0.0, max_value=1.2),
)
def test_every_request_gets_one_line_and_batch_stats_add_up(
    texts: dict[str, str],
    fail_rate: float,
    shuffle: bool,
    progress: float,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the faults and however far a job got, its lines and its counts agree."""
    monkeypatch.setenv(DELAY, "1")
    monkeypatch.setenv(FAULTS, f"request_fail_rate={fail_rate},shuffle={int(shuffle)}")
    clock = ManualClock()
    c = client(tmp_path, clock)
    name = submit(c, list(texts.items()))
    clock.advance(progress)
    job = c.batches.get(name=name)
    if not job.done:
        c.batches.cancel(name=name)
        job = c.batches.get(name=name)
    counts = {k: int(v) for k, v in stats(tmp_path, name).items()}
    rows = rows_of(c, job)
    keys = [row["key"] for row in rows]
    assert len(keys) == len(set(keys)) and set(keys) <= set(texts)
    if not shuffle:  # done requests are a prefix of the input, in order
        assert keys == list(texts)[: len(keys)]
    ok = [row for row in rows if "response" in row]
    failed = [row for row in rows if "error" in row]
    assert len(ok) + len(failed) == len(rows)
    assert counts.get("successfulRequestCount", 0) == len(ok)
    assert counts.get("failedRequestCount", 0) == len(failed)
    assert counts["requestCount"] == len(texts)
    assert counts.get("pendingRequestCount", 0) == len(texts) - len(rows)
    for row in ok:
        assert text_of(row) == f"Emulated reply to: {texts[row['key']]}"
    if fail_rate == 1.0:
        assert not ok


# -- errors and auth ---------------------------------------------------------------


def test_auth_and_error_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert raw(tmp_path, "GET", "v1/batches", headers={"x-goog-api-key": ""}).status_code == 403
    no_key = emulator_http_client(tmp_path).get("/gemini/v1/batches").json()
    assert no_key["error"]["status"] == "PERMISSION_DENIED" and no_key["error"]["code"] == 403
    assert emulator_http_client(tmp_path).get(f"/gemini/v1/batches?key={SECRET}").status_code == 200
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_API_KEY", SECRET)
    with pytest.raises(errors.ClientError) as excinfo:
        client(tmp_path, api_key="wrong-key").batches.list()
    assert excinfo.value.code == 400 and excinfo.value.status == "INVALID_ARGUMENT"
    assert "API key not valid" in str(excinfo.value.message)
    assert excinfo.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert "wrong-key" not in json.dumps(excinfo.value.details)
    c = client(tmp_path)  # the right key: uploads (whose session URL carries none) work
    uploaded = upload(c, [request_line("a", "hi")])
    with pytest.raises(errors.ClientError) as unknown_model:
        c.batches.create(model="gemini-no-such-model", src=str(uploaded.name))
    assert unknown_model.value.code == 404 and unknown_model.value.status == "NOT_FOUND"
    with pytest.raises(errors.ClientError) as unknown_file:
        c.batches.create(model=MODEL, src="files/doesnotexist")
    assert unknown_file.value.code == 403
    assert c.models.get(model=MODEL).name == f"models/{MODEL}"
    assert list_jobs(tmp_path) == []


# -- fault knobs -------------------------------------------------------------------


def test_request_fail_rate_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS, "request_fail_rate=0.5,seed=3")
    clock = ManualClock()
    c = client(tmp_path, clock)
    name = submit(c, numbered(24))
    done = wait(c, clock, name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    rows = rows_of(c, done)
    failed = [row for row in rows if "error" in row]
    assert len(rows) == 24 and 0 < len(failed) < 24
    assert {row["error"]["code"] for row in failed} == {8, 13}  # RESOURCE_EXHAUSTED, INTERNAL
    assert stats(tmp_path, name)["failedRequestCount"] == str(len(failed))


def test_all_fail_is_a_succeeded_job_with_only_error_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS, "all_fail=1")
    clock = ManualClock()
    c = client(tmp_path, clock)
    name = submit(c, numbered(3))
    done = wait(c, clock, name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED  # pitfall 7
    rows = rows_of(c, done)
    assert [row["key"] for row in rows] == ["r00", "r01", "r02"]
    assert all(row["error"]["code"] == 13 and "response" not in row for row in rows)
    assert stats(tmp_path, name) == {"requestCount": "3", "failedRequestCount": "3"}


def test_expire_keeps_partial_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DELAY, "1")
    monkeypatch.setenv(FAULTS, "expire=0.5")
    clock = ManualClock()
    c = client(tmp_path, clock)
    texts = numbered(10)
    name = submit(c, texts)
    done = wait(c, clock, name)
    assert done.state == types.JobState.JOB_STATE_EXPIRED and done.done
    assert_first_half_done(tmp_path, c, done, texts)


def test_shuffle_reorders_the_responses_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS, "shuffle=1,seed=1")
    clock = ManualClock()
    c = client(tmp_path, clock)
    texts = numbered(16)
    done = wait(c, clock, submit(c, texts))
    keys = [row["key"] for row in rows_of(c, done)]
    assert sorted(keys) == [k for k, _ in texts] and keys != sorted(keys)
    assert [row["key"] for row in rows_of(c, done)] == keys  # written once


def test_output_lag_hides_the_responses_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY, "0")
    monkeypatch.setenv(FAULTS, "output_lag=2")
    clock = ManualClock()
    c = client(tmp_path, clock)
    name = submit(c, numbered(2))
    early = c.batches.get(name=name)
    assert early.state == types.JobState.JOB_STATE_SUCCEEDED and early.dest is None
    assert "output" not in wire(tmp_path, name)["metadata"]
    file_name = f"files/batch-{name.removeprefix('batches/')}"
    with pytest.raises(errors.ClientError) as hidden:
        c.files.download(file=file_name)
    assert hidden.value.code == 403  # as a file that does not exist (yet)
    clock.advance(2.1)
    late = c.batches.get(name=name)
    assert late.dest is not None and late.dest.file_name == file_name
    assert len(rows_of(c, late)) == 2


def test_unknown_status_passes_through_the_sdk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS, "unknown_status=BATCH_STATE_PAUSED")
    clock = ManualClock()
    c = client(tmp_path, clock)
    name = submit(c, numbered(2))
    clock.advance(1)
    with pytest.warns(UserWarning, match="BATCH_STATE_PAUSED"):
        job = c.batches.get(name=name)
    assert job.state is not None and job.state.value == "BATCH_STATE_PAUSED"
    assert wire(tmp_path, name)["metadata"]["state"] == "BATCH_STATE_PAUSED"
    assert len(rows_of(c, job)) == 2


def test_batch_fail_fails_the_whole_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS, "batch_fail=quota_exceeded")
    clock = ManualClock()
    c = client(tmp_path, clock)
    name = submit(c, numbered(3))
    assert c.batches.get(name=name).state == types.JobState.JOB_STATE_PENDING
    done = wait(c, clock, name)
    assert done.state == types.JobState.JOB_STATE_FAILED and done.dest is None
    body = wire(tmp_path, name)
    assert body["done"] is True and "response" not in body
    assert body["error"]["code"] == 8 and "quota_exceeded" in body["error"]["message"]


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_no_listing(version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULTS, "no_listing=1")
    c = client(tmp_path, version=None if version == "v1" else version)
    name = submit(c, [("a", "hi")])
    for path in ("files", "batches"):
        answer = raw(tmp_path, "GET", f"{version}/{path}")
        assert answer.status_code == 405 and answer.json()["error"]["code"] == 405
    assert c.batches.get(name=name).name == name


def test_create_429_refuses_the_first_creates_before_any_state_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS, "create_429=2")
    c = client(tmp_path)
    uploaded = upload(c, [request_line("a", "hi")])
    for _ in range(2):
        with pytest.raises(errors.ClientError) as excinfo:
            c.batches.create(model=MODEL, src=str(uploaded.name))
        assert excinfo.value.code == 429 and excinfo.value.status == "RESOURCE_EXHAUSTED"
        assert list_jobs(tmp_path) == []
    job = c.batches.create(model=MODEL, src=str(uploaded.name))
    assert [j["id"] for j in list_jobs(tmp_path)] == [job.name]


def test_http_error_rate_with_sdk_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock()
    retry = types.HttpRetryOptions(attempts=6, initial_delay=0.001, max_delay=0.01, jitter=0)
    c = client(tmp_path, clock, retry=retry)
    # Uploaded first: the SDK retries neither upload chunks nor downloads by its retry options.
    uploaded = upload(c, [request_line(k, t) for k, t in numbered(3)])
    # With seed 18 no run of 6 errors occurs in the first 300 draws, so 6 attempts suffice.
    monkeypatch.setenv(FAULTS, "http_error_rate=0.5,seed=18")
    job = c.batches.create(model=MODEL, src=str(uploaded.name))
    done = wait(c, clock, str(job.name))
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    statuses = [row["status"] for row in read_access_log(tmp_path)]
    assert {200, 429, 500} <= set(statuses)
    # Injected errors come before any state change: exactly one job was created.
    assert len(list((tmp_path / "gemini" / "batches").glob("*.json"))) == 1
    monkeypatch.delenv(FAULTS)
    assert len(rows_of(c, done)) == 3


def test_create_delay_persists_the_job_first_over_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY, "0")
    monkeypatch.setenv(FAULTS, "create_delay=2")
    with running_emulator(tmp_path) as base_url:
        c = client(tmp_path, base_url=base_url)
        created: list[str] = []
        worker = threading.Thread(target=lambda: created.append(submit(c, [("a", "hi")])))
        started = time.time()
        worker.start()
        seen: list[Any] = []
        while not seen and not created and time.time() - started < 1.9:
            seen = list(c.batches.list())
            time.sleep(0.02)
        assert seen and not created  # listed while the create still sleeps
        worker.join(timeout=5)
        assert created == [seen[0].name]


# -- loopback --------------------------------------------------------------------


def upload_urls(state_dir: Path) -> Iterator[str]:
    for row in read_access_log(state_dir):
        if "upload_id=" in row["path"]:
            yield row["path"]


@pytest.mark.parametrize("version", VERSIONS)
def test_lifecycle_over_loopback(
    version: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY, "0.2")
    with running_emulator(tmp_path) as base_url:
        c = client(tmp_path, version=version, base_url=base_url)
        name = submit(c, [("a", "over the wire"), ("b", "again")])
        deadline = time.time() + 10
        job = c.batches.get(name=name)
        while not job.done and time.time() < deadline:
            time.sleep(0.05)
            job = c.batches.get(name=name)
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED
        rows = by_key(rows_of(c, job))
        assert text_of(rows["a"]) == "Emulated reply to: over the wire"
    prefix = f"/gemini/upload/{version or 'v1'}/files?upload_id="
    assert [path.startswith(prefix) for path in upload_urls(tmp_path)] == [True]
    assert SECRET not in (tmp_path / "access.log").read_text()
