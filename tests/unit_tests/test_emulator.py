"""The offline batch emulator, exercised through the real openai and mistralai SDKs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from mistralai.client import Mistral

from agent.emulator import (
    IN_PROCESS_BASE_URL,
    EmulatorApp,
    ManualClock,
    emulator_http_client,
    list_jobs,
    running_emulator,
)
from agent.emulator.answers import compute_reply

MODEL = "gpt-4o-mini"


def openai_client(state_dir: Path, clock: ManualClock | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="x",
        base_url=f"{IN_PROCESS_BASE_URL}/openai/v1",
        http_client=emulator_http_client(state_dir, clock),
        max_retries=0,
    )


def mistral_client(state_dir: Path, clock: ManualClock | None = None) -> Mistral:
    return Mistral(
        api_key="x",
        server_url=f"{IN_PROCESS_BASE_URL}/mistral",
        client=emulator_http_client(state_dir, clock),
    )


def chat_line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def parse_lines(text: str) -> dict[str, dict[str, Any]]:
    return {row["custom_id"]: row for row in map(json.loads, text.splitlines()) if row}


# -- the clock ---------------------------------------------------------------------


def test_a_manual_clock_moves_only_forward_and_only_when_told() -> None:
    clock = ManualClock(start=1000.0)
    assert clock.now() == 1000.0 == clock.now()
    assert clock.advance(2.5) == 1002.5 == clock.now()
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)
    assert clock.now() == 1002.5
    # A ticking clock also follows the wall clock; `advance` skips ahead of it.
    ticking = ManualClock(start=0.0, ticking=True)
    before = ticking.now()
    ticking.advance(10)
    assert before + 10 <= ticking.now() < before + 70


# -- OpenAI ------------------------------------------------------------------------


def test_openai_full_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "10")
    clock = ManualClock()
    client = openai_client(tmp_path, clock)
    lines = [
        chat_line("a", "hello there"),
        chat_line("b", "one two three four five", max_tokens=4),
        {
            "custom_id": "c",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "multi part"}]},
                ],
            },
        },
    ]
    uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.purpose == "batch"
    assert client.files.retrieve(uploaded.id).bytes == len(jsonl(lines))

    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job_key": "k1"},
    )
    assert batch.status == "validating"
    assert batch.id.startswith("batch_") and len(batch.id) == len("batch_") + 32

    # Validating for the first 10 % of the delay, in progress (counts rising) until 80 %,
    # finalizing until 100 %, then completed: read at 5 %, 50 %, 90 % and 105 %.
    seen = []
    for step in (0.5, 4.5, 4.0, 1.5):
        clock.advance(step)
        batch = client.batches.retrieve(batch.id)
        assert batch.request_counts is not None
        seen.append((batch.status, batch.request_counts.completed))
    assert seen == [("validating", 0), ("in_progress", 1), ("finalizing", 3), ("completed", 3)]

    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (3, 3)
    assert batch.request_counts.failed == 0
    assert batch.error_file_id is None and batch.output_file_id is not None
    assert batch.metadata == {"job_key": "k1"}
    assert batch.model == MODEL
    assert batch.completed_at is not None and batch.in_progress_at is not None
    assert batch.expires_at == batch.created_at + 86400

    rows = parse_lines(client.files.content(batch.output_file_id).text)
    assert set(rows) == {"a", "b", "c"}
    a = rows["a"]["response"]
    assert a["status_code"] == 200 and rows["a"]["error"] is None
    assert rows["a"]["id"].startswith("batch_req_") and a["request_id"].startswith("req_")
    body = a["body"]
    assert body["id"].startswith("chatcmpl-") and body["model"] == MODEL
    assert body["choices"][0]["message"]["content"] == "Emulated reply to: hello there"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 3 + 2
    assert body["usage"]["completion_tokens"] == 5
    assert body["system_fingerprint"] == "fp_emulator"
    b = rows["b"]["response"]["body"]
    assert b["choices"][0]["message"]["content"] == "Emulated reply to: one"
    assert b["choices"][0]["finish_reason"] == "length"
    c = rows["c"]["response"]["body"]
    assert c["choices"][0]["message"]["content"] == "Emulated reply to: multi part"
    assert c["usage"]["prompt_tokens"] == (3 + 2) + (3 + 2)

    total_in = sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in rows.values())
    total_out = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in rows.values())
    assert batch.usage is not None
    assert (batch.usage.input_tokens, batch.usage.output_tokens) == (total_in, total_out)
    assert batch.usage.total_tokens == total_in + total_out

    # Same body, same reply and ids: the rule is deterministic.
    assert compute_reply(lines[0]["body"]).content == "Emulated reply to: hello there"
    again = client.files.content(batch.output_file_id).text
    assert parse_lines(again) == rows


def test_openai_validation_failure_is_asynchronous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "10")
    clock = ManualClock()
    client = openai_client(tmp_path, clock)
    data = jsonl([chat_line("same", "x"), chat_line("same", "y")])
    uploaded = client.files.create(file=("dup.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "validating"
    clock.advance(0.9)
    assert client.batches.retrieve(batch.id).status == "validating"
    clock.advance(0.2)  # past the validating phase (10 % of the delay)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors is not None and batch.errors.data
    assert batch.errors.data[0].code == "duplicate_custom_id"
    assert batch.errors.data[0].line == 2
    assert batch.output_file_id is None


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        ([b"{not json"], "invalid_json_line"),
        ([json.dumps(chat_line("a", "x") | {"url": "/v1/embeddings"}).encode()], "url_mismatch"),
        (
            [
                json.dumps(chat_line("a", "x")).encode(),
                json.dumps(
                    chat_line("b", "y") | {"body": {"model": "other", "messages": []}}
                ).encode(),
            ],
            "model_mismatch",
        ),
        ([b"\n"], "empty_file"),
    ],
)
def test_openai_validation_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[bytes], code: str
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0")
    client = openai_client(tmp_path)
    uploaded = client.files.create(file=("in.jsonl", b"\n".join(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data
    assert batch.errors.data[0].code == code


def test_openai_create_with_unknown_file_is_404(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = openai_client(tmp_path)
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-000000000000000000000000",
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )


def test_openai_all_failed_completes_without_output_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0")
    client = openai_client(tmp_path)
    bad = [
        {
            "custom_id": "no-messages",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": []},
        },
        {
            "custom_id": "bad-role",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]},
        },
    ]
    uploaded = client.files.create(file=("bad.jsonl", jsonl(bad)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert batch.output_file_id is None and batch.error_file_id is not None
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 2)
    rows = parse_lines(client.files.content(batch.error_file_id).text)
    assert set(rows) == {"no-messages", "bad-role"}
    for row in rows.values():
        assert row["response"]["status_code"] == 400
        assert row["response"]["body"]["error"]["type"] == "invalid_request_error"
        assert row["error"] is None


def test_openai_cancel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "2")
    clock = ManualClock()
    client = openai_client(tmp_path, clock)
    lines = [chat_line(f"r{i}", f"question {i}") for i in range(20)]
    uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    clock.advance(0.7)  # in progress (0.2 s .. 1.6 s), some requests done
    assert client.batches.retrieve(batch.id).status == "in_progress"
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    clock.advance(0.15)  # cancelling lasts 10 % of the delay (0.2 s)
    assert client.batches.retrieve(batch.id).status == "cancelling"
    assert client.batches.cancel(batch.id).status == "cancelling"  # idempotent
    clock.advance(0.1)
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert done.request_counts is not None
    finished = done.request_counts.completed
    assert 0 < finished < 20
    assert done.request_counts == cancelling.request_counts
    assert done.output_file_id is not None
    rows = parse_lines(client.files.content(done.output_file_id).text)
    # The requests done at cancel time (a prefix in input order) got lines; the rest none.
    assert list(rows) == [f"r{i}" for i in range(finished)]
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)


def test_openai_list_paging_with_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0")
    client = openai_client(tmp_path)
    uploaded = client.files.create(file=("in.jsonl", jsonl([chat_line("a", "x")])), purpose="batch")
    created = []
    for i in range(5):
        created.append(
            client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"job_key": f"k{i}"},
            ).id
        )
    first = client.batches.list(limit=2)
    assert len(first.data) == 2 and first.has_more is True
    assert first.data[0].id == created[-1]  # newest first
    everything = list(client.batches.list(limit=2))  # the SDK follows `after`
    assert [b.id for b in everything] == created[::-1]
    assert {b.metadata["job_key"] for b in everything if b.metadata} == {f"k{i}" for i in range(5)}
    assert all(b.status == "completed" for b in everything)


def test_openai_errors_and_auth(tmp_path: Path) -> None:
    http = emulator_http_client(tmp_path)
    assert http.get("/openai/v1/batches").status_code == 401
    missing = http.get("/openai/v1/nope", headers={"Authorization": "Bearer x"})
    assert missing.status_code == 404 and "error" in missing.json()
    mistral_missing = http.get("/mistral/v1/nope", headers={"Authorization": "Bearer x"})
    assert mistral_missing.status_code == 404 and mistral_missing.json()["object"] == "error"
    client = openai_client(tmp_path)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_unknown")
    deleted = client.files.delete(
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="batch").id
    )
    assert deleted.deleted is True


# -- Mistral -----------------------------------------------------------------------


def mistral_line(custom_id: str, text: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": text}]}}


def test_mistral_lifecycle_and_metadata_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "10")
    clock = ManualClock()
    client = mistral_client(tmp_path, clock)
    data = jsonl([mistral_line("0", "bonjour"), {"custom_id": "1", "body": {"messages": []}}])
    uploaded = client.files.upload(file={"file_name": "in.jsonl", "content": data}, purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.num_lines == 2
    assert client.files.retrieve(file_id=uploaded.id).size_bytes == len(data)

    job = client.batch.jobs.create(
        input_files=[uploaded.id],
        model="mistral-small-latest",
        endpoint="/v1/chat/completions",
        metadata={"job_key": "k1"},
    )
    other = client.batch.jobs.create(
        input_files=[uploaded.id],
        model="mistral-small-latest",
        endpoint="/v1/chat/completions",
        metadata={"job_key": "k2"},
    )
    assert job.status == "QUEUED" and isinstance(job.created_at, int)
    assert job.total_requests == 2

    # Queued for the first 20 % of the delay, running (counts rising) until 100 %.
    seen = []
    for step in (1.0, 5.0, 4.5):
        clock.advance(step)
        job = client.batch.jobs.get(job_id=job.id)
        seen.append((job.status, job.completed_requests))
    assert seen == [("QUEUED", 0), ("RUNNING", 1), ("SUCCESS", 2)]
    assert (job.succeeded_requests, job.failed_requests, job.completed_requests) == (1, 1, 2)
    assert job.output_file and job.error_file
    assert job.started_at is not None and job.completed_at is not None

    out = parse_lines(client.files.download(file_id=job.output_file).read().decode())
    line = out["0"]
    assert line["id"].startswith("batch-") and line["error"] is None
    body = line["response"]["body"]
    assert line["response"]["status_code"] == 200
    assert body["model"] == "mistral-small-latest"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Emulated reply to: bonjour",
        "tool_calls": None,
        "prefix": False,
    }
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    errors = parse_lines(client.files.download(file_id=job.error_file).read().decode())
    assert errors["1"]["response"]["status_code"] == 400

    listed = client.batch.jobs.list(metadata={"job_key": "k1"})
    assert listed.total == 1 and listed.data is not None
    assert [j.id for j in listed.data] == [job.id]
    assert client.batch.jobs.list().total == 2
    assert other.id in {
        j.id for j in client.batch.jobs.list(status=["QUEUED", "RUNNING", "SUCCESS"]).data or []
    }


def test_mistral_inline_requests_cancel_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "10")
    clock = ManualClock()
    client = mistral_client(tmp_path, clock)
    inline: list[Any] = [
        {"custom_id": "a", "body": {"messages": [{"role": "user", "content": "hi"}]}}
    ]
    job = client.batch.jobs.create(
        requests=inline,
        model="mistral-small-latest",
        endpoint="/v1/chat/completions",
    )
    cancelled = client.batch.jobs.cancel(job_id=job.id)
    assert cancelled.status == "CANCELLATION_REQUESTED"
    clock.advance(0.9)  # cancelling lasts 10 % of the delay (1 s)
    assert client.batch.jobs.get(job_id=job.id).status == "CANCELLATION_REQUESTED"
    clock.advance(0.2)
    final = client.batch.jobs.get(job_id=job.id)
    assert final.status == "CANCELLED" and final.output_file is None
    with pytest.raises(Exception) as excinfo:
        client.batch.jobs.cancel(job_id=job.id)
    assert getattr(excinfo.value, "status_code", None) == 400
    with pytest.raises(Exception) as excinfo:
        client.batch.jobs.create(
            input_files=["00000000-0000-4000-8000-000000000000"],
            model="m",
            endpoint="/v1/chat/completions",
        )
    assert getattr(excinfo.value, "status_code", None) == 404


# -- Persistence and servers ---------------------------------------------------------


def test_second_app_on_same_dir_sees_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0")
    client = openai_client(tmp_path)
    uploaded = client.files.create(file=("in.jsonl", jsonl([chat_line("a", "x")])), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    # Another "process": a fresh app with its own transport on the same directory.
    other = openai.OpenAI(
        api_key="x",
        base_url="http://emulator/openai/v1",
        http_client=httpx2.Client(transport=httpx2.WSGITransport(app=EmulatorApp(tmp_path))),
    )
    seen = other.batches.retrieve(batch.id)
    assert seen.status == "completed"
    assert client.batches.retrieve(batch.id).output_file_id == seen.output_file_id
    assert other.files.content(seen.output_file_id or "").text
    rows = list_jobs(tmp_path)
    assert [(r["provider"], r["id"], r["status"], r["request_count"]) for r in rows] == [
        ("openai", batch.id, "completed", 1)
    ]


def test_running_emulator_over_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0")
    with running_emulator(tmp_path) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        client = openai.OpenAI(api_key="x", base_url=f"{base_url}/openai/v1", max_retries=0)
        uploaded = client.files.create(
            file=("in.jsonl", jsonl([chat_line("a", "over the wire")])), purpose="batch"
        )
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed" and batch.output_file_id
        rows = parse_lines(client.files.content(batch.output_file_id).text)
        content = rows["a"]["response"]["body"]["choices"][0]["message"]["content"]
        assert content == "Emulated reply to: over the wire"
