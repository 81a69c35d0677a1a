"""Fault knobs, magic markers and the access log of the emulator, through the real SDKs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from mistralai.client import Mistral
from mistralai.client.errors import SDKError
from mistralai.client.utils import BackoffStrategy, RetryConfig

from agent.emulator import (
    IN_PROCESS_BASE_URL,
    ManualClock,
    emulator_http_client,
    read_access_log,
    running_emulator,
)
from agent.emulator.faults import Faults, parse_faults, request_fault

MODEL = "gpt-4o-mini"
MISTRAL_MODEL = "mistral-small-latest"
FAULTS = "BATCH_AGENT_EMULATOR_FAULTS"
DELAY = "BATCH_AGENT_EMULATOR_DELAY"
SECRET = "sk-emulator-secret-0123456789"
PROVIDERS = ["openai", "mistral"]


# -- helpers -------------------------------------------------------------------------


def openai_client(
    state_dir: Path,
    max_retries: int = 0,
    base_url: str | None = None,
    clock: ManualClock | None = None,
) -> Any:
    if base_url is not None:
        return openai.OpenAI(
            api_key=SECRET, base_url=f"{base_url}/openai/v1", max_retries=max_retries
        )
    return openai.OpenAI(
        api_key=SECRET,
        base_url=f"{IN_PROCESS_BASE_URL}/openai/v1",
        http_client=emulator_http_client(state_dir, clock),
        max_retries=max_retries,
    )


def mistral_client(
    state_dir: Path,
    retry: RetryConfig | None = None,
    base_url: str | None = None,
    clock: ManualClock | None = None,
) -> Mistral:
    kwargs: dict[str, Any] = {} if retry is None else {"retry_config": retry}
    if base_url is not None:
        return Mistral(api_key=SECRET, server_url=f"{base_url}/mistral", **kwargs)
    return Mistral(
        api_key=SECRET,
        server_url=f"{IN_PROCESS_BASE_URL}/mistral",
        client=emulator_http_client(state_dir, clock),
        **kwargs,
    )


def gemini_client(state_dir: Path) -> genai.Client:
    options = genai_types.HttpOptions(
        base_url=f"{IN_PROCESS_BASE_URL}/gemini", httpx_client=emulator_http_client(state_dir)
    )
    return genai.Client(api_key=SECRET, http_options=options)


def jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def rows_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in text.splitlines() if raw.strip()]


@dataclass
class Outcome:
    """A job's end state, normalised across the two protocols."""

    status: str
    output: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file: str | None = None
    error_file: str | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    raw: Any = None


OPENAI_TERMINAL = {"completed", "failed", "expired", "cancelled"}
MISTRAL_RUNNING = {"QUEUED", "RUNNING", "CANCELLATION_REQUESTED"}


class Driver:
    """Submit a job and read it back with one protocol's SDK.

    With a `clock` (the emulator's), waiting for a job advances it instead of sleeping.
    """

    def __init__(self, provider: str, client: Any, clock: ManualClock | None = None) -> None:
        self.provider = provider
        self.client = client
        self.clock = clock

    def submit(self, texts: list[tuple[str, str]]) -> str:
        if self.provider == "openai":
            lines = [
                {
                    "custom_id": cid,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": MODEL, "messages": [{"role": "user", "content": text}]},
                }
                for cid, text in texts
            ]
            uploaded = self.client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
            batch = self.client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            return str(batch.id)
        lines = [
            {"custom_id": cid, "body": {"messages": [{"role": "user", "content": text}]}}
            for cid, text in texts
        ]
        uploaded = self.client.files.upload(
            file={"file_name": "in.jsonl", "content": jsonl(lines)}, purpose="batch"
        )
        job = self.client.batch.jobs.create(
            input_files=[uploaded.id], model=MISTRAL_MODEL, endpoint="/v1/chat/completions"
        )
        return str(job.id)

    def download(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        if self.provider == "openai":
            return rows_of(self.client.files.content(file_id).text)
        return rows_of(self.client.files.download(file_id=file_id).read().decode())

    def read(self, job_id: str) -> Outcome:
        if self.provider == "openai":
            batch = self.client.batches.retrieve(job_id)
            counts = batch.request_counts
            return Outcome(
                status=batch.status,
                output_file=batch.output_file_id,
                error_file=batch.error_file_id,
                total=counts.total if counts else 0,
                succeeded=counts.completed if counts else 0,
                failed=counts.failed if counts else 0,
                raw=batch,
            )
        job = self.client.batch.jobs.get(job_id=job_id)
        return Outcome(
            status=job.status,
            output_file=job.output_file,
            error_file=job.error_file,
            total=job.total_requests,
            succeeded=job.succeeded_requests,
            failed=job.failed_requests,
            raw=job,
        )

    def terminal(self, outcome: Outcome) -> bool:
        if self.provider == "openai":
            return outcome.status not in {"validating", "in_progress", "finalizing", "cancelling"}
        return outcome.status not in MISTRAL_RUNNING

    def wait(self, job_id: str, timeout: float = 5.0) -> Outcome:
        deadline = time.time() + timeout
        outcome = self.read(job_id)
        while not self.terminal(outcome) and time.time() < deadline:
            if self.clock is None:
                time.sleep(0.02)
            else:
                self.clock.advance(0.02)
            outcome = self.read(job_id)
        outcome.output = self.download(outcome.output_file)
        outcome.errors = self.download(outcome.error_file)
        return outcome

    def cancel(self, job_id: str) -> None:
        if self.provider == "openai":
            self.client.batches.cancel(job_id)
        else:
            self.client.batch.jobs.cancel(job_id=job_id)


def driver(provider: str, state_dir: Path, clock: ManualClock | None = None) -> Driver:
    if provider == "openai":
        client = openai_client(state_dir, clock=clock)
    else:
        client = mistral_client(state_dir, clock=clock)
    return Driver(provider, client, clock)


def error_body(provider: str, row: dict[str, Any]) -> dict[str, Any]:
    """The error object of an HTTP-error line, in either protocol's shape."""
    body = row["response"]["body"]
    if provider == "openai":
        assert set(body) == {"error"}
        return dict(body["error"])
    assert body["object"] == "error"
    return dict(body)


def numbered(n: int, prefix: str = "q") -> list[tuple[str, str]]:
    return [(f"r{i:02d}", f"{prefix} {i}") for i in range(n)]


# -- parsing -------------------------------------------------------------------------


def test_parse_faults_reads_every_knob() -> None:
    assert parse_faults("") == Faults() and parse_faults(None) == Faults()
    faults = parse_faults(
        " request_fail_rate=0.3, shuffle=1,seed=7,http_error_rate=0.25,create_delay=1.5,"
        "expire=0.5,all_fail=0,output_lag=2,unknown_status=paused_for_review,"
        "batch_fail=token_limit_exceeded,create_429=3 "
    )
    assert faults == Faults(
        seed=7,
        request_fail_rate=0.3,
        http_error_rate=0.25,
        create_delay=1.5,
        expire=0.5,
        all_fail=False,
        shuffle=True,
        output_lag=2.0,
        unknown_status="paused_for_review",
        batch_fail="token_limit_exceeded",
        create_429=3,
    )
    assert Faults().job_record() is None
    assert Faults(http_error_rate=0.5, create_delay=1, create_429=2).job_record() is None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("bogus=1", "bogus"),
        ("request_fail_rate=1.5", "request_fail_rate"),
        ("http_error_rate=x", "http_error_rate"),
        ("expire=-0.1", "expire"),
        ("shuffle=yes", "shuffle"),
        ("all_fail=2", "all_fail"),
        ("seed=1.5", "seed"),
        ("create_delay=-1", "create_delay"),
        ("output_lag=inf", "output_lag"),
        ("unknown_status=completed", "unknown_status"),
        ("unknown_status=has space", "unknown_status"),
        ("unknown_status=BATCH_STATE_SUCCEEDED", "unknown_status"),
        ("create_429=-1", "create_429"),
        ("create_429=1.5", "create_429"),
        ("shuffle=1,shuffle=0", "shuffle"),
        ("shuffle", "shuffle"),
    ],
)
def test_parse_faults_rejects_bad_text(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_faults(text)


@pytest.mark.parametrize("provider", [*PROVIDERS, "gemini"])
def test_bad_fault_text_is_a_500_naming_the_knob(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS, "request_fail_rate=0.1,explode=1")
    if provider == "gemini":
        with pytest.raises(genai_errors.ServerError, match="explode") as server_error:
            gemini_client(tmp_path).batches.list()
        assert server_error.value.code == 500 and server_error.value.status == "INTERNAL"
    elif provider == "openai":
        # Default retries: the answer says not to retry a configuration error.
        client = openai_client(tmp_path, max_retries=2)
        with pytest.raises(openai.InternalServerError, match="explode"):
            client.batches.list()
    else:
        retry = RetryConfig("backoff", BackoffStrategy(10, 100, 1.5, 300), False)
        with pytest.raises(SDKError, match="explode") as excinfo:
            mistral_client(tmp_path, retry).batch.jobs.list()
        assert excinfo.value.status_code == 500
    log = read_access_log(tmp_path)
    assert log and all(row["status"] == 500 for row in log)
    if provider == "openai":
        assert len(log) == 1
    http = emulator_http_client(tmp_path)
    assert http.get("/health").status_code == 200


# -- access log ----------------------------------------------------------------------


def test_access_log_records_requests_but_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY, "0")
    assert read_access_log(tmp_path) == []  # nothing received, nothing logged
    client = openai_client(tmp_path)
    run = Driver("openai", client)
    batch_id = run.submit([("a", "hello")])
    for _ in range(3):
        run.read(batch_id)
    client.batches.list(limit=2)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    mistral_client(tmp_path).batch.jobs.list(metadata={"job_key": "k 1"})
    log = read_access_log(tmp_path)
    assert [(row["method"], row["path"], row["status"]) for row in log[:2]] == [
        ("POST", "/openai/v1/files", 200),
        ("POST", "/openai/v1/batches", 200),
    ]
    status_calls = [r for r in log if r["path"] == f"/openai/v1/batches/{batch_id}"]
    assert len(status_calls) == 3 and all(r["method"] == "GET" for r in status_calls)
    assert ("GET", "/openai/v1/batches?limit=2", 200) in {
        (r["method"], r["path"], r["status"]) for r in log
    }
    assert log[-2]["status"] == 404
    assert log[-1]["path"].startswith("/mistral/v1/batch/jobs?") and " " not in log[-1]["path"]
    times = [row["time"] for row in log]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 60
    raw = (tmp_path / "access.log").read_text()
    assert SECRET not in raw and "Bearer" not in raw and "hello" not in raw
    assert len(raw.splitlines()) == len(log) == 8


def test_access_log_over_loopback(tmp_path: Path) -> None:
    with running_emulator(tmp_path) as base_url:
        client = openai_client(tmp_path, base_url=base_url)
        client.batches.list()
    assert [(r["method"], r["path"], r["status"]) for r in read_access_log(tmp_path)] == [
        ("GET", "/openai/v1/batches", 200)
    ]
    assert SECRET not in (tmp_path / "access.log").read_text()


# -- per-request faults ------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_request_fail_rate(provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DELAY, "0")
    monkeypatch.setenv(FAULTS, "request_fail_rate=0.5,seed=3")
    run = driver(provider, tmp_path)
    texts = numbered(24)
    first = run.wait(run.submit(texts))
    assert first.status == ("completed" if provider == "openai" else "SUCCESS")
    assert 0 < len(first.errors) < 24 and len(first.output) + len(first.errors) == 24
    assert (first.succeeded, first.failed) == (len(first.output), len(first.errors))
    statuses = set()
    for row in first.errors:
        status = row["response"]["status_code"]
        statuses.add(status)
        assert row["error"] is None
        error = error_body(provider, row)
        if status == 429:
            expected = (
                ("requests", "rate_limit_exceeded")
                if provider == "openai"
                else ("rate_limited", "1300")
            )
            assert (error["type"], error["code"]) == expected
            assert "Rate limit" in error["message"]
        else:
            assert status == 500
            assert (error["type"], error["code"]) == ("server_error", "server_error")
            assert "server had an error" in error["message"]
    assert statuses == {429, 500}
    for row in first.output:
        assert row["response"]["status_code"] == 200
    # A new job with the same custom_ids gets fresh draws.
    second = run.wait(run.submit(texts))
    failed_first = {row["custom_id"] for row in first.errors}
    assert failed_first != {row["custom_id"] for row in second.errors}
    # The draw is a pure function of seed, job id and custom_id.
    knobs = {"request_fail_rate": 0.5, "seed": 3}
    body = {"messages": [{"role": "user", "content": "x"}]}
    assert all(
        request_fault(knobs, "job", f"r{i}", body) == request_fault(knobs, "job", f"r{i}", body)
        for i in range(20)
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_magic_markers_fail_with_400(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY, "0")
    run = driver(provider, tmp_path)
    outcome = run.wait(
        run.submit(
            [
                ("ok", "plain question"),
                ("rej", "please [emulator:reject] this"),
                ("cp", "[emulator:content_policy] nope"),
            ]
        )
    )
    assert [row["custom_id"] for row in outcome.output] == ["ok"]
    errors = {row["custom_id"]: row for row in outcome.errors}
    assert set(errors) == {"rej", "cp"}
    for cid, code in (("rej", "invalid_request"), ("cp", "content_policy_violation")):
        assert errors[cid]["response"]["status_code"] == 400
        error = error_body(provider, errors[cid])
        assert (error["type"], error["code"]) == ("invalid_request_error", code)
    assert (outcome.succeeded, outcome.failed) == (1, 2)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_all_fail(provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DELAY, "0")
    monkeypatch.setenv(FAULTS, "all_fail=1")
    run = driver(provider, tmp_path)
    outcome = run.wait(run.submit(numbered(4)))
    # The real pitfall: a "successful" job without an output file.
    assert outcome.status == ("completed" if provider == "openai" else "SUCCESS")
    assert outcome.output_file is None and outcome.error_file is not None
    assert (outcome.succeeded, outcome.failed, outcome.total) == (0, 4, 4)
    assert [row["custom_id"] for row in outcome.errors] == [cid for cid, _ in numbered(4)]
    for row in outcome.errors:
        assert row["response"]["status_code"] == 500
        assert error_body(provider, row)["code"] == "server_error"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_expire(provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DELAY, "1")
    monkeypatch.setenv(FAULTS, "expire=0.5")
    clock = ManualClock()
    run = driver(provider, tmp_path, clock)
    texts = numbered(10)
    job_id = run.submit(texts)
    # Read every 5 % of the delay, so every phase the job goes through is seen (the
    # shortest, OpenAI's validating and finalizing, last 10 % and 20 %).
    seen = set()
    outcome = run.read(job_id)
    while not run.terminal(outcome):
        seen.add(outcome.status)
        clock.advance(0.05)
        outcome = run.read(job_id)
    outcome = run.wait(job_id)
    done = [cid for cid, _ in texts[:5]]
    assert [row["custom_id"] for row in outcome.output] == done
    assert (outcome.total, outcome.succeeded, outcome.failed) == (10, 5, 0)
    if provider == "openai":
        assert outcome.status == "expired"
        assert seen == {"validating", "in_progress"}  # never "finalizing"
        assert outcome.raw.expired_at is not None and outcome.raw.completed_at is None
        assert [row["custom_id"] for row in outcome.errors] == [cid for cid, _ in texts[5:]]
        for row in outcome.errors:
            assert row["response"] is None
            assert row["error"] == {
                "code": "batch_expired",
                "message": "This request could not be executed before the completion window "
                "expired.",
            }
    else:
        assert outcome.status == "TIMEOUT_EXCEEDED"
        assert outcome.raw.completed_requests == 5
        assert outcome.error_file is None and outcome.errors == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_shuffle(provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DELAY, "0")
    monkeypatch.setenv(FAULTS, "shuffle=1,request_fail_rate=0.3,seed=1")
    run = driver(provider, tmp_path)
    texts = numbered(16)
    job_id = run.submit(texts)
    outcome = run.wait(job_id)
    output_ids = [row["custom_id"] for row in outcome.output]
    error_ids = [row["custom_id"] for row in outcome.errors]
    assert sorted(output_ids + error_ids) == [cid for cid, _ in texts]
    assert len(output_ids) > 3 and error_ids
    assert output_ids != sorted(output_ids)
    # The order is stable: the file is written once.
    assert [row["custom_id"] for row in run.download(outcome.output_file)] == output_ids


@pytest.mark.parametrize("provider", PROVIDERS)
def test_output_lag(provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DELAY, "0")
    lag = 2.0
    monkeypatch.setenv(FAULTS, f"output_lag={lag}")
    clock = ManualClock()
    run = driver(provider, tmp_path, clock)
    job_id = run.submit(numbered(2))
    early = run.read(job_id)
    assert early.status == ("completed" if provider == "openai" else "SUCCESS")
    assert early.output_file is None and early.error_file is None
    if provider == "mistral":
        assert not isinstance(run.client.batch.jobs.get(job_id=job_id, inline=True).outputs, list)
    clock.advance(lag - 0.1)  # still inside the lag: still no file ids
    still = run.read(job_id)
    assert still.output_file is None and still.error_file is None
    clock.advance(0.2)
    late = run.wait(job_id)
    assert late.status == early.status and late.output_file is not None
    assert len(late.output) == 2
    if provider == "mistral":
        outputs = run.client.batch.jobs.get(job_id=job_id, inline=True).outputs
        assert isinstance(outputs, list) and len(outputs) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_status(provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DELAY, "0")
    monkeypatch.setenv(FAULTS, "unknown_status=paused_for_review")
    run = driver(provider, tmp_path)
    job_id = run.submit(numbered(3))
    outcome = run.read(job_id)
    # Neither SDK rejects a status it does not know: the raw string comes through.
    assert outcome.status == "paused_for_review"
    outcome.output = run.download(outcome.output_file)
    assert len(outcome.output) == 3 and outcome.succeeded == 3
    if provider == "mistral":
        listed = run.client.batch.jobs.list(status=["paused_for_review"])
        assert [job.id for job in listed.data or []] == [job_id]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancel_under_faults_keeps_partial_output(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY, "1")
    monkeypatch.setenv(FAULTS, "request_fail_rate=0.3,shuffle=1,expire=0.8,output_lag=0.05")
    clock = ManualClock()
    run = driver(provider, tmp_path, clock)
    texts = numbered(40)
    job_id = run.submit(texts)
    clock.advance(0.45)  # running (from 10 % or 20 % of the delay), some requests done
    assert run.read(job_id).status == ("in_progress" if provider == "openai" else "RUNNING")
    run.cancel(job_id)
    cancelled = run.wait(job_id)
    assert cancelled.status == ("cancelled" if provider == "openai" else "CANCELLED")
    clock.advance(0.1)  # past output_lag
    outcome = run.wait(job_id)
    assert outcome.status == cancelled.status
    done = outcome.succeeded + outcome.failed
    assert 0 < done < 32
    # Lines only for the requests done at cancel time (a prefix in input order), none
    # for the rest; no batch_expired lines since the job was cancelled, not expired.
    seen = sorted(row["custom_id"] for row in outcome.output + outcome.errors)
    assert seen == [cid for cid, _ in texts[:done]]
    assert all(row["response"] is not None for row in outcome.errors)


# -- HTTP-level faults ---------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_http_error_rate_with_sdk_retries(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY, "0.1")
    # With seed 18 no run of 6 errors occurs in the first 300 draws, so 5 retries suffice.
    monkeypatch.setenv(FAULTS, "http_error_rate=0.5,seed=18")
    clock = ManualClock()
    if provider == "openai":
        client: Any = openai_client(tmp_path, max_retries=5, clock=clock)
    else:
        retry = RetryConfig("backoff", BackoffStrategy(10, 100, 1.5, 5000), True)
        client = mistral_client(tmp_path, retry, clock=clock)
    run = Driver(provider, client, clock)
    started = time.time()
    outcome = run.wait(run.submit(numbered(3)))
    assert outcome.status == ("completed" if provider == "openai" else "SUCCESS")
    assert len(outcome.output) == 3
    assert time.time() - started < 5
    log = read_access_log(tmp_path)
    statuses = [row["status"] for row in log]
    assert 429 in statuses and 500 in statuses and 200 in statuses
    # Injected errors come before any state change: exactly one job was created.
    creates = [r for r in log if r["method"] == "POST" and "/batch" in r["path"]]
    assert sum(1 for r in creates if r["status"] == 200) == 1
    jobs_dir = tmp_path / provider / "batches"
    assert len(list(jobs_dir.glob("*.json"))) == 1


@pytest.mark.parametrize("provider", [*PROVIDERS, "gemini"])
def test_http_error_shape_and_retry_headers(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS, "http_error_rate=1")
    http = emulator_http_client(tmp_path)
    prefix = {
        "openai": "/openai/v1/batches",
        "mistral": "/mistral/v1/batch/jobs",
        "gemini": "/gemini/v1beta/batches",
    }[provider]
    seen = set()
    for _ in range(12):
        response = http.get(prefix, headers={"Authorization": "Bearer x", "x-goog-api-key": "x"})
        seen.add(response.status_code)
        assert response.headers["retry-after-ms"] == "10"
        assert response.headers["retry-after"] == "0"
        body = response.json()
        if provider == "openai":
            assert set(body["error"]) == {"message", "type", "param", "code"}
        elif provider == "gemini":
            # Google's shape: the HTTP code and its canonical status name.
            assert set(body["error"]) == {"code", "message", "status"}
            expected = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}[response.status_code]
            assert (body["error"]["code"], body["error"]["status"]) == (
                response.status_code,
                expected,
            )
        else:
            assert body["object"] == "error" and {"message", "type", "code"} <= set(body)
    assert seen == {429, 500}
    assert http.get("/health").status_code == 200  # never injected


@pytest.mark.realtime  # the create really sleeps in a server thread while the test lists
@pytest.mark.parametrize("provider", PROVIDERS)
def test_create_delay_persists_first_and_server_stays_responsive(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY, "0")
    # Long enough that a loaded machine (four test workers on two cores) still lists the job first.
    monkeypatch.setenv(FAULTS, "create_delay=2")
    with running_emulator(tmp_path) as base_url:
        if provider == "openai":
            client: Any = openai_client(tmp_path, base_url=base_url)
            listing: Callable[[], list[Any]] = lambda: list(client.batches.list().data)  # noqa: E731
        else:
            client = mistral_client(tmp_path, base_url=base_url)
            listing = lambda: list(client.batch.jobs.list().data or [])  # noqa: E731
        run = Driver(provider, client)
        created: list[str] = []
        worker = threading.Thread(target=lambda: created.append(run.submit([("a", "hi")])))
        started = time.time()
        worker.start()
        seen: list[Any] = []
        while not seen and not created and time.time() - started < 1.9:
            seen = listing()
            time.sleep(0.02)
        # The job is visible (and the server answers) while the create still sleeps.
        assert seen and not created
        worker.join(timeout=5)
        assert created == [seen[0].id]
        assert time.time() - started >= 2
        outcome = run.wait(created[0])
        assert outcome.status == ("completed" if provider == "openai" else "SUCCESS")


def test_enqueued_token_limit_fails_a_batch_over_the_models_quota_until_earlier_ones_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each text is 3 + 4 words = 7 prompt tokens (the answers' own count); 10 texts hold 70.
    monkeypatch.setenv(DELAY, "1")
    monkeypatch.setenv(FAULTS, "enqueued_token_limit=100")
    clock = ManualClock()
    run = driver("openai", tmp_path, clock)
    texts = [(f"t{n}", f"short text number {n}") for n in range(10)]
    first = run.submit(texts)
    # Another 70 tokens while the first batch runs: 140 > 100, so OpenAI fails it whole.
    second = run.submit([(f"u{n}", text) for n, (_, text) in enumerate(texts)])
    refused = run.wait(second)
    assert refused.status == "failed" and refused.output == [] and refused.errors == []
    (error,) = refused.raw.errors.data
    assert error.code == "token_limit_exceeded" and "100 enqueued tokens" in error.message
    # A failed batch holds no quota, and the first one's tokens are released once it ends.
    assert run.wait(first).status == "completed"
    third = run.submit([(f"v{n}", text) for n, (_, text) in enumerate(texts)])
    done = run.wait(third)
    assert done.status == "completed" and done.succeeded == 10
    assert sum(row["response"]["body"]["usage"]["prompt_tokens"] for row in done.output) == 70
