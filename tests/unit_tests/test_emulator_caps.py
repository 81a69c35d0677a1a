"""Caps on what may be in flight: the emulator refuses over each, our providers say which cap.

Through the real SDKs against the in-process emulator: Mistral's pending requests per workspace,
Gemini's concurrent batch jobs and file storage, Anthropic's processing queue. Over a cap the
create (or upload) is refused with nothing made, and our provider raises `QuotaExceededError`
naming the cap; once earlier jobs end (or files are deleted) the same call succeeds. A passing
429 stays transient. OpenAI's and Gemini's jobs that were created and then failed whole for a
quota say `quota_refused`. A refusal never hides a job an earlier, unanswered attempt made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic import Anthropic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from mistralai.client import Mistral
from mistralai.client.errors import SDKError

from agent.emulator import IN_PROCESS_BASE_URL, ManualClock, emulator_http_client, list_jobs
from agent.emulator.faults import parse_faults
from agent.planning import new_intent
from agent.providers.anthropic import AnthropicProvider
from agent.providers.base import JOB_KEY_METADATA, BatchProvider, CreatedJob, send_once
from agent.providers.errors import (
    ProviderError,
    QuotaExceededError,
    TransientProviderError,
)
from agent.providers.gemini import GeminiProvider
from agent.providers.mistral import MistralProvider
from agent.providers.openai import OpenAIProvider
from agent.requests import BatchRequest
from tests.support import assert_all_accounted, built_lines, run_with_wait_budget

FAULTS = "BATCH_AGENT_EMULATOR_FAULTS"
# Jobs last a virtual minute: on a loaded machine the ticking clock must not end them mid-test.
DELAY = 60.0
MODELS = {
    "openai": "gpt-4o-mini",
    "mistral": "mistral-small-latest",
    "gemini": "gemini-2.5-flash",
    "anthropic": "claude-haiku-4-5",
}


@pytest.fixture(autouse=True)
def _minute_long_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", str(DELAY))


def _input(provider: BatchProvider, tmp_path: Path, key: str, count: int) -> Path:
    """Write the JSONL input of `count` requests for job `key`, as planning builds it."""
    requests = [
        BatchRequest(f"{key}-{n}", [{"role": "user", "content": f"hello {n}"}], {})
        for n in range(count)
    ]
    spool = tmp_path / f"{key}.jsonl"
    spool.write_bytes(built_lines(provider, requests, MODELS[provider.name], {}))
    return spool


def _submit(provider: BatchProvider, tmp_path: Path, key: str, count: int) -> CreatedJob:
    """Upload and create a job of `count` requests, as submission does (each call once)."""
    file_id = provider.upload(_input(provider, tmp_path, key, count), f"batch-agent-{key}.jsonl")
    return _create(provider, file_id, key)


def _create(provider: BatchProvider, file_id: str, key: str) -> CreatedJob:
    return provider.create(
        file_id,
        model=MODELS[provider.name],
        completion_window="24h",
        metadata={JOB_KEY_METADATA: key},
    )


def _intent(provider: BatchProvider, created: CreatedJob, key: str, count: int) -> Any:
    intent = new_intent(
        provider, key=key, attempt=1, model=MODELS[provider.name], params={}, request_count=count
    )
    return {**intent, "job_id": created.job_id, "input_file_id": created.input_file_id}


def _jobs(provider: str) -> list[dict[str, Any]]:
    return [j for j in list_jobs() if j["provider"] == provider]


def _gemini_sdk() -> genai.Client:
    options = genai_types.HttpOptions(
        base_url=f"{IN_PROCESS_BASE_URL}/gemini",
        httpx_client=emulator_http_client(),
        retry_options=genai_types.HttpRetryOptions(attempts=1),
    )
    return genai.Client(api_key="x", vertexai=False, http_options=options)


# --------------------------------------------------------------------------- knobs


def test_the_cap_knobs_parse_as_counts_and_default_to_no_cap() -> None:
    faults = parse_faults(
        "pending_request_limit=1000000,concurrent_job_limit=100,"
        "file_storage_limit=20000000000,queued_request_limit=7"
    )
    assert faults.pending_request_limit == 1_000_000 and faults.concurrent_job_limit == 100
    assert faults.file_storage_limit == 20_000_000_000 and faults.queued_request_limit == 7
    assert parse_faults("").pending_request_limit == 0
    with pytest.raises(ValueError, match="concurrent_job_limit"):
        parse_faults("concurrent_job_limit=-1")


@pytest.mark.parametrize(
    ("provider", "knobs"),
    [
        ("mistral", "pending_request_limit=4"),
        ("gemini", "concurrent_job_limit=1,file_storage_limit=100000"),
        ("anthropic", "queued_request_limit=4"),
        ("openai", "enqueued_token_limit=100"),
    ],
)
def test_a_run_within_the_caps_completes_as_without_them(
    provider: str, knobs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS, knobs)
    # Short jobs: the test polling (at most 0.3 s apart) would check a minute-long job ~200 times.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "1")
    records = [{"id": f"r{n}", "prompt": f"within the cap {n}"} for n in range(4)]
    values, _ = run_with_wait_budget(provider, records)
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, records)
    assert len(values["jobs"]) == 1


# --------------------------------------------------------------------------- Mistral


def test_mistral_refuses_a_job_over_the_workspaces_pending_requests_until_jobs_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_clock: ManualClock
) -> None:
    monkeypatch.setenv(FAULTS, "pending_request_limit=10")
    provider = MistralProvider(emulated=True, base_url="")
    first = _submit(provider, tmp_path, "first", 6)
    # 6 pending + 6 more > 10: refused, nothing created; the input file stays for the retry.
    file_id = provider.upload(_input(provider, tmp_path, "second", 6), "batch-agent-second.jsonl")
    with pytest.raises(QuotaExceededError) as refused:
        _create(provider, file_id, "second")
    assert refused.value.limit == "requests" and refused.value.status_code == 429
    assert "pending requests" in str(refused.value) and "10" in str(refused.value)
    assert [j["id"] for j in _jobs("mistral")] == [first.job_id]
    # What the SDK itself sees: a 429 in Mistral's error shape.
    sdk = Mistral(
        api_key="x", server_url=f"{IN_PROCESS_BASE_URL}/mistral", client=emulator_http_client()
    )
    inline = [{"custom_id": f"i{n}", "body": {"messages": []}} for n in range(5)]
    with pytest.raises(SDKError) as raw:
        sdk.batch.jobs.create(
            requests=inline, model=MODELS["mistral"], endpoint="/v1/chat/completions"
        )
    assert raw.value.status_code == 429
    body = json.loads(raw.value.body)
    assert body["object"] == "error" and body["type"] == "rate_limited"
    # 4 requests still fit beside the 6 pending.
    fits = _submit(provider, tmp_path, "fits", 4)
    emulator_clock.advance(DELAY + 1)  # every job ends: nothing is pending any more
    assert provider.status(_intent(provider, first, "first", 6)).status == "done"
    again = _create(provider, file_id, "second")
    assert {j["id"] for j in _jobs("mistral")} == {first.job_id, fits.job_id, again.job_id}


def test_mistral_counts_every_model_and_a_cancelled_job_frees_its_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_clock: ManualClock
) -> None:
    monkeypatch.setenv(FAULTS, "pending_request_limit=5")
    provider = MistralProvider(emulated=True, base_url="")
    first = _submit(provider, tmp_path, "first", 5)
    with pytest.raises(QuotaExceededError):
        _submit(provider, tmp_path, "second", 1)
    provider.cancel(_intent(provider, first, "first", 5))
    emulator_clock.advance(DELAY / 10 + 1)  # CANCELLATION_REQUESTED for 10 % of the delay
    assert _submit(provider, tmp_path, "second", 1).job_id


def test_a_passing_mistral_rate_limit_is_not_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # `http_error_rate=1` answers every call with a 429 (code 1300) or a 500, never naming a cap.
    monkeypatch.setenv(FAULTS, "http_error_rate=1,seed=3")
    provider = MistralProvider(emulated=True, base_url="")
    with pytest.raises(ProviderError) as failed:
        _create(provider, "file-x", "k")
    assert isinstance(failed.value, TransientProviderError)
    assert not isinstance(failed.value, QuotaExceededError)


# --------------------------------------------------------------------------- Gemini


def test_gemini_refuses_a_batch_while_the_concurrent_job_cap_is_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_clock: ManualClock
) -> None:
    monkeypatch.setenv(FAULTS, "concurrent_job_limit=2")
    provider = GeminiProvider(emulated=True, base_url="")
    first = _submit(provider, tmp_path, "first", 2)
    _submit(provider, tmp_path, "second", 2)
    file_id = provider.upload(_input(provider, tmp_path, "third", 2), "batch-agent-third.jsonl")
    with pytest.raises(QuotaExceededError) as refused:
        _create(provider, file_id, "third")
    assert refused.value.limit == "jobs" and refused.value.status_code == 429
    assert len(_jobs("gemini")) == 2
    # The SDK sees Google's 429 RESOURCE_EXHAUSTED with a QuotaFailure detail (inline input too,
    # whose private request file is not kept).
    inline = [genai_types.InlinedRequest(contents="hi", metadata={"key": "a"})]
    with pytest.raises(genai_errors.APIError) as raw:
        _gemini_sdk().batches.create(model=MODELS["gemini"], src=inline)
    assert raw.value.code == 429 and raw.value.status == "RESOURCE_EXHAUSTED"
    (quota, _) = raw.value.details["error"]["details"]
    assert quota["@type"] == "type.googleapis.com/google.rpc.QuotaFailure"
    assert quota["violations"][0]["quotaValue"] == "2"
    # A cancel is instantly terminal at Gemini: it frees a place at once.
    provider.cancel(_intent(provider, first, "first", 2))
    third = _create(provider, file_id, "third")
    with pytest.raises(QuotaExceededError):
        _submit(provider, tmp_path, "fourth", 2)
    emulator_clock.advance(DELAY + 1)  # the running batches end
    assert _submit(provider, tmp_path, "fourth", 2).job_id
    assert third.job_id in {j["id"] for j in _jobs("gemini")}
    assert len(_jobs("gemini")) == 4


def test_a_gemini_429_naming_no_cap_stays_a_passing_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `create_429` is the 429 Gemini gives below its limits (no QuotaFailure): resent, not a cap.
    monkeypatch.setenv(FAULTS, "create_429=1")
    provider = GeminiProvider(emulated=True, base_url="")
    file_id = provider.upload(_input(provider, tmp_path, "k", 2), "batch-agent-k.jsonl")
    with pytest.raises(TransientProviderError) as refused:
        _create(provider, file_id, "k")
    assert refused.value.status_code == 429 and not isinstance(refused.value, QuotaExceededError)
    assert _create(provider, file_id, "k").job_id


def test_gemini_refuses_an_upload_over_the_file_storage_until_files_are_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = GeminiProvider(emulated=True, base_url="")
    first_input = _input(provider, tmp_path, "first", 3)
    second_input = _input(provider, tmp_path, "second", 3)
    size = first_input.stat().st_size
    monkeypatch.setenv(FAULTS, f"file_storage_limit={size + second_input.stat().st_size - 1}")
    first = provider.upload(first_input, "batch-agent-first.jsonl")
    with pytest.raises(QuotaExceededError) as refused:
        provider.upload(second_input, "batch-agent-second.jsonl")
    assert refused.value.limit == "bytes" and refused.value.status_code == 429
    assert f"{size:,} bytes stored" in str(refused.value)
    sdk = _gemini_sdk()
    assert [f.name for f in sdk.files.list()] == [first]
    provider.delete_file(first)
    second = provider.upload(second_input, "batch-agent-second.jsonl")
    assert [f.name for f in sdk.files.list()] == [second]


def test_gemini_counts_responses_files_against_the_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_clock: ManualClock
) -> None:
    provider = GeminiProvider(emulated=True, base_url="")
    spool = _input(provider, tmp_path, "k", 3)
    # Room for the input twice: the batch's responses file (longer than its input) takes it.
    monkeypatch.setenv(FAULTS, f"file_storage_limit={2 * spool.stat().st_size}")
    created = _submit(provider, tmp_path, "k", 3)
    emulator_clock.advance(DELAY + 1)
    ended = provider.status(_intent(provider, created, "k", 3))
    assert ended.status == "done" and ended.output_file_id
    with pytest.raises(QuotaExceededError):
        provider.upload(spool, "batch-agent-next.jsonl")
    provider.delete_file(ended.output_file_id)
    assert provider.upload(spool, "batch-agent-next.jsonl")


def test_a_gemini_batch_failed_for_a_quota_is_quota_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_clock: ManualClock
) -> None:
    monkeypatch.setenv(FAULTS, "batch_fail=token_limit_exceeded")  # code 8 RESOURCE_EXHAUSTED
    provider = GeminiProvider(emulated=True, base_url="")
    created = _submit(provider, tmp_path, "k", 2)
    emulator_clock.advance(DELAY + 1)
    update = provider.status(_intent(provider, created, "k", 2))
    assert update.status == "failed" and update.quota_refused and update.retryable


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_refuses_a_batch_over_the_processing_queue_until_batches_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_clock: ManualClock
) -> None:
    monkeypatch.setenv(FAULTS, "queued_request_limit=5")
    provider = AnthropicProvider(emulated=True, base_url="")
    first = _submit(provider, tmp_path, "first", 3)
    with pytest.raises(QuotaExceededError) as refused:
        _submit(provider, tmp_path, "second", 3)
    assert refused.value.limit == "requests" and refused.value.status_code == 429
    assert [j["id"] for j in _jobs("anthropic")] == [first.job_id]
    sdk = Anthropic(
        api_key="x",
        base_url=f"{IN_PROCESS_BASE_URL}/anthropic",
        http_client=emulator_http_client(),
        max_retries=0,
    )
    params: Any = {"model": MODELS["anthropic"], "max_tokens": 5, "messages": []}
    with pytest.raises(Exception) as raw:  # noqa: PT011 - the SDK's RateLimitError, checked below
        sdk.messages.batches.create(
            requests=[{"custom_id": f"r{n}", "params": params} for n in range(3)]
        )
    assert type(raw.value).__name__ == "RateLimitError"
    assert "processing queue" in str(raw.value)
    emulator_clock.advance(DELAY + 1)
    assert _submit(provider, tmp_path, "second", 3).job_id


# --------------------------------------------------------------------------- OpenAI


@pytest.mark.parametrize(("code", "refused"), [("token_limit_exceeded", True), ("other", False)])
def test_an_openai_batch_failed_for_the_enqueued_token_quota_is_quota_refused(
    code: str,
    refused: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    emulator_clock: ManualClock,
) -> None:
    monkeypatch.setenv(FAULTS, f"batch_fail={code}")
    provider = OpenAIProvider(emulated=True, base_url="")
    created = _submit(provider, tmp_path, "k", 2)
    emulator_clock.advance(DELAY + 1)
    update = provider.status(_intent(provider, created, "k", 2))
    assert update.status == "failed" and code in update.errors[0]
    assert update.quota_refused is refused and update.retryable is refused


def test_an_openai_batch_over_the_enqueued_token_limit_is_quota_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_clock: ManualClock
) -> None:
    monkeypatch.setenv(FAULTS, "enqueued_token_limit=20")
    provider = OpenAIProvider(emulated=True, base_url="")
    first = _submit(provider, tmp_path, "first", 3)  # 3 x (3 + 2 words) = 15 tokens
    second = _submit(provider, tmp_path, "second", 3)  # 30 > 20: created, then failed
    emulator_clock.advance(DELAY + 1)
    assert not provider.status(_intent(provider, first, "first", 3)).quota_refused
    update = provider.status(_intent(provider, second, "second", 3))
    assert update.status == "failed" and update.quota_refused


# --------------------------------------------------------------------------- crash safety


def test_a_refusal_after_an_unanswered_attempt_returns_the_job_that_attempt_made() -> None:
    """The first create's answer was lost (502) but it made the job, which filled the cap: the
    resend is refused, and `send_once` looks the job up rather than reporting nothing made."""
    made = CreatedJob(job_id="job-1", created_at=0.0, input_file_id="file-1")
    answers: list[Exception] = [
        TransientProviderError("lost", status_code=502),
        QuotaExceededError("over the cap", limit="requests", status_code=429),
    ]
    lookups: list[CreatedJob | None] = [None, made]  # listed only after a moment

    def send() -> CreatedJob:
        raise answers.pop(0)

    found = send_once(send, lambda: lookups.pop(0), sleep=lambda _: None)
    assert found is made and not answers and not lookups


def test_a_clear_refusal_is_raised_at_once_without_a_lookup() -> None:
    calls: list[str] = []

    def send() -> CreatedJob:
        calls.append("send")
        raise QuotaExceededError("over the cap", limit="jobs", status_code=429)

    def find() -> CreatedJob | None:
        calls.append("find")
        return None

    with pytest.raises(QuotaExceededError):
        send_once(send, find, sleep=lambda _: None)
    assert calls == ["send"]


def test_gemini_checks_the_storage_again_when_side_by_side_uploads_finalise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two uploads started while both fit: the second to finalise is refused, nothing stored.

    The SDK's `files.upload` starts and sends in one call, so the two sessions are driven on the
    wire, with the headers it sends (`agent.emulator.gemini_routes` docstring).
    """
    data = b'{"key": "a", "request": {"contents": []}}\n' * 10
    monkeypatch.setenv(FAULTS, f"file_storage_limit={len(data) + len(data) // 2}")
    http = emulator_http_client()
    start_headers = {
        "x-goog-api-key": "x",
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(len(data)),
    }
    urls = []
    for name in ("one", "two"):
        started = http.post(
            f"{IN_PROCESS_BASE_URL}/gemini/upload/v1beta/files",
            json={"file": {"displayName": name}},
            headers=start_headers,
        )
        assert started.status_code == 200
        urls.append(started.headers["x-goog-upload-url"])
    finish = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}
    assert http.post(urls[0], content=data, headers=finish).status_code == 200
    refused = http.post(urls[1], content=data, headers=finish)
    assert refused.status_code == 429
    assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert [f.display_name for f in _gemini_sdk().files.list()] == ["one"]
