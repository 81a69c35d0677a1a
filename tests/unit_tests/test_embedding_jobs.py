"""Embeddings batch jobs end to end: our providers, through their SDKs, against the emulator.

For OpenAI, Mistral and Gemini a job of text requests is built with the provider's embeddings
line builder, uploaded, created with `endpoint="embeddings"`, polled to its end and read back
with `provider.results(job)`: every text gets one vector of the requested dimension, unit
length, equal to the vector the emulator's rule gives that text (and the same vector a
`realtime` embed of the same text gets from the same answer). Faults (failed lines, rate
limits, markers, an expired job) fail their own requests with the chat lines' codes and
retryability. The emulator's own wire answers are checked too (base64/float, dimensions,
token-array inputs, refusals).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai import OpenAI

from agent.emulator import IN_PROCESS_BASE_URL, ManualClock, emulator_http_client
from agent.emulator.embedding_answers import embedding_vector, openai_answer
from agent.endpoints import EMBEDDINGS
from agent.providers.base import (
    BatchProvider,
    RequestOutcome,
    line_builder_for,
    read_vector_outcome,
)
from agent.providers.gemini import GeminiProvider
from agent.providers.mistral import MistralProvider
from agent.providers.openai import OpenAIProvider
from agent.providers.openai.offline_tokens import encoding_for_model
from agent.requests import BatchRequest, InputError
from agent.state import Job

MODELS = {
    "openai": "text-embedding-3-small",
    "mistral": "mistral-embed",
    "gemini": "gemini-embedding-001",
}
DIMENSIONS = {"openai": 64, "mistral": 1024, "gemini": 32}
PARAMS: dict[str, dict[str, Any]] = {
    "openai": {"dimensions": 64},
    "mistral": {},
    "gemini": {"dimensions": 32},
}
_TOKENS = encoding_for_model("text-embedding-3-small")
TEXTS = [f"text number {i} about embeddings" for i in range(6)]


def _provider(name: str) -> BatchProvider:
    cls = {"openai": OpenAIProvider, "mistral": MistralProvider, "gemini": GeminiProvider}[name]
    return cls(emulated=True, base_url="")  # type: ignore[abstract]


def _requests(texts: list[str]) -> list[BatchRequest]:
    return [
        BatchRequest(f"r{i}", [{"role": "user", "content": text}], {})
        for i, text in enumerate(texts)
    ]


def _run_job(
    name: str,
    clock: ManualClock,
    tmp_path: Path,
    texts: list[str] = TEXTS,
    params: dict[str, Any] | None = None,
) -> tuple[Job, list[RequestOutcome]]:
    """Build, upload and create an embeddings job, wait for its end, and read its results."""
    provider = _provider(name)
    model, params = MODELS[name], PARAMS[name] if params is None else params
    build = provider.check_ready(model, params, None, EMBEDDINGS)
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(b"".join(build(request) for request in _requests(texts)))
    file_id = provider.upload(path, path.name)
    created = provider.create(
        file_id,
        model=model,
        completion_window="24h",
        metadata={"batch_agent_job_key": f"key-{name}", "batch_agent_thread": "t"},
        endpoint=EMBEDDINGS,
    )
    job: Any = {
        "job_id": created.job_id,
        "job_key": f"key-{name}",
        "model": model,
        "params": params,
        "endpoint": EMBEDDINGS,
        "request_count": len(texts),
        "input_file_id": file_id,
        "output_file_id": None,
        "error_file_id": None,
        "provider_status": "",
    }
    for _ in range(50):
        update = provider.status(job)
        if update.status in ("done", "failed"):
            break
        clock.advance(1.0)
    job.update(
        output_file_id=update.output_file_id,
        error_file_id=update.error_file_id,
        provider_status=update.provider_status,
    )
    assert update.status == "done", update
    return job, sorted(provider.results(job), key=lambda o: int(o.custom_id[1:]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_job_of_texts_gives_one_unit_vector_per_text_of_the_requested_dimension(
    name: str, emulator_clock: ManualClock, tmp_path: Path
) -> None:
    job, outcomes = _run_job(name, emulator_clock, tmp_path)

    assert [o.custom_id for o in outcomes] == [f"r{i}" for i in range(len(TEXTS))]
    for outcome, text in zip(outcomes, TEXTS, strict=True):
        assert outcome.error is None and outcome.message is None
        assert outcome.vector is not None
        vector = np.frombuffer(outcome.vector, dtype="<f4")
        assert vector.shape == (DIMENSIONS[name],)
        assert abs(float(np.linalg.norm(vector.astype(np.float64))) - 1.0) < 1e-5
        if name != "openai":  # OpenAI's lines carry token ids, whose vector the rule derives
            assert np.array_equal(vector, embedding_vector(text, DIMENSIONS[name]))
        # The emulator bills a text's words, and token ids one each (OpenAI sends token ids).
        billed = len(_TOKENS.encode_ordinary(text)) if name == "openai" else len(text.split())
        assert outcome.usage is not None and outcome.usage["input_tokens"] == billed
        assert outcome.usage["output_tokens"] == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_embeddings_job_is_found_again_by_its_key_and_can_be_cancelled(
    name: str, emulator_clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "600")  # still running when cancelled
    provider = _provider(name)
    build = provider.embedding_line_builder(MODELS[name], PARAMS[name])
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(build(request) for request in _requests(TEXTS)))
    file_id = provider.upload(path, path.name)
    sent_at = emulator_clock.now()
    created = provider.create(
        file_id,
        model=MODELS[name],
        completion_window="24h",
        metadata={"batch_agent_job_key": "key-lost", "batch_agent_thread": "t"},
        endpoint=EMBEDDINGS,
    )
    intent: Any = {
        "job_key": "key-lost",
        "input_file_id": file_id,
        "request_count": len(TEXTS),
        "params": PARAMS[name],
        "endpoint": EMBEDDINGS,
    }

    found = provider.find_job(intent, sent_at=sent_at, claimed=())
    adopted = provider.thread_jobs("t", [intent], since=sent_at - 60, claimed=())
    cancelled = provider.cancel({**intent, "job_id": created.job_id})

    assert found is not None and found.job_id == created.job_id
    assert adopted["key-lost"].job_id == created.job_id
    assert cancelled.status in ("cancelling", "done")


def test_the_same_text_always_gets_the_same_vector_and_others_another(
    emulator_clock: ManualClock, tmp_path: Path
) -> None:
    _, outcomes = _run_job("gemini", emulator_clock, tmp_path, ["same", "same", "other"])

    assert outcomes[0].vector == outcomes[1].vector != outcomes[2].vector


def test_a_long_openai_text_is_sent_in_chunks_and_its_vector_combined(
    emulator_clock: ManualClock, tmp_path: Path
) -> None:
    long_text = " ".join(f"word{i}" for i in range(40))
    params = {"embedding_ctx_length": 8}
    job, outcomes = _run_job("openai", emulator_clock, tmp_path, [long_text, "short"], params)

    lines = [json.loads(raw) for raw in _provider("openai").file_lines(job["input_file_id"])]
    assert len(lines[0]["body"]["input"]) > 1  # token chunks
    vectors = [np.frombuffer(o.vector or b"", dtype="<f4") for o in outcomes]
    assert [v.shape for v in vectors] == [(1536,), (1536,)]
    assert abs(float(np.linalg.norm(vectors[0].astype(np.float64))) - 1.0) < 1e-5


@pytest.mark.parametrize("name", sorted(MODELS))
def test_failed_lines_fail_their_own_requests_with_the_chat_lines_codes(
    name: str, emulator_clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "request_fail_rate=0.5,seed=3")
    texts = [*TEXTS, "please [emulator:reject] this one"]

    _, outcomes = _run_job(name, emulator_clock, tmp_path, texts)

    assert len(outcomes) == len(texts)
    failed = [o for o in outcomes if o.error is not None]
    assert failed and len(failed) < len(texts)
    for outcome in outcomes:
        assert (outcome.vector is None) == (outcome.error is not None)
    rejected = outcomes[-1]
    assert rejected.error is not None and not rejected.retryable
    passing = [o for o in failed[:-1] if o is not rejected]
    assert all(o.retryable for o in passing), [o.error for o in passing]


def test_an_expired_openai_job_reports_its_unrun_texts_as_expired(
    emulator_clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "expire=0.5")

    _, outcomes = _run_job("openai", emulator_clock, tmp_path)

    expired = [o for o in outcomes if o.error is not None]
    assert len(expired) == 3
    assert {o.error["code"] for o in expired if o.error} == {"batch_expired"}
    assert all(o.retryable for o in expired)


def test_a_text_openai_would_embed_in_several_calls_is_refused_by_its_id() -> None:
    provider = _provider("openai")
    build = line_builder_for(
        provider, MODELS["openai"], {"embedding_ctx_length": 1, "chunk_size": 2}, None, EMBEDDINGS
    )

    with pytest.raises(InputError, match=r"API calls.*request id 'r0'"):
        build(_requests(["three words here"])[0])


@pytest.mark.parametrize(
    ("name", "params", "words"),
    [
        ("mistral", {"dimensions": 8}, "no output dimension setting"),
        ("openai", {"api_key": "sk-x"}, "configures the client"),
        ("gemini", {"vertexai": True}, "Vertex"),
        ("openai", {"not_a_setting": 1}, "not a setting of OpenAIEmbeddings"),
    ],
)
def test_settings_a_batch_cannot_carry_are_refused_before_anything_is_sent(
    name: str, params: dict[str, Any], words: str
) -> None:
    with pytest.raises(InputError, match=words):
        _provider(name).check_ready(MODELS[name], params, None, EMBEDDINGS)


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("openai", {"custom_id": "r1", "response": {"status_code": 200, "body": {"data": []}}}),
        (
            "openai",  # two chunk vectors, but no usage to weigh them by
            {
                "custom_id": "r1",
                "response": {
                    "status_code": 200,
                    "body": {"data": [{"embedding": [0.6, 0.8]}, {"embedding": [0.8, 0.6]}]},
                },
            },
        ),
        ("mistral", {"custom_id": "r1", "response": {"status_code": 200, "body": {"data": []}}}),
        ("gemini", {"key": "r1", "response": {"embedding": {}}}),
    ],
)
def test_an_answer_without_one_vector_fails_its_own_request(
    name: str, line: dict[str, Any]
) -> None:
    parser = _provider(name).vector_parser(MODELS[name], PARAMS[name])

    outcome = read_vector_outcome(parser, json.dumps(line).encode(), "job")

    assert outcome.custom_id == "r1" and outcome.vector is None
    assert outcome.error is not None and outcome.error["code"] == "invalid_response"
    assert not outcome.retryable


def _openai_client() -> OpenAI:
    return OpenAI(
        api_key="x", base_url=f"{IN_PROCESS_BASE_URL}/openai/v1", http_client=emulator_http_client()
    )


def test_the_emulator_answers_base64_or_floats_in_the_requested_dimension() -> None:
    body = {"model": "text-embedding-3-large", "input": [[4, 5], [1, 2, 3]], "dimensions": 5}

    floats, tokens = openai_answer({**body, "encoding_format": "float"})
    encoded, _ = openai_answer({**body, "encoding_format": "base64"})

    assert tokens == 2 + 3 and floats["usage"]["prompt_tokens"] == 5
    for plain, packed in zip(floats["data"], encoded["data"], strict=True):
        decoded = np.frombuffer(base64.b64decode(packed["embedding"]), dtype="<f4")
        assert np.array_equal(np.asarray(plain["embedding"], dtype="<f4"), decoded)
        assert decoded.shape == (5,)
    default, _ = openai_answer({"model": "text-embedding-3-large", "input": "x"})
    assert len(default["data"][0]["embedding"]) == 3072


@pytest.mark.parametrize(
    "body",
    [
        {"model": "text-embedding-3-small", "input": ""},
        {"model": "text-embedding-3-small", "input": []},
        {"model": "text-embedding-3-small", "input": ["a", 1]},
        {"model": "text-embedding-3-small", "input": ["a", [1]]},
        {"model": "text-embedding-ada-002", "input": "a", "dimensions": 8},
        {"model": "text-embedding-3-small", "input": "a", "dimensions": 0},
        {"model": "text-embedding-3-small", "input": "a", "encoding_format": "int8"},
    ],
)
def test_the_emulator_refuses_what_openai_refuses(
    body: dict[str, Any], emulator_clock: ManualClock, tmp_path: Path
) -> None:
    client = _openai_client()
    path = tmp_path / "in.jsonl"
    line = {"custom_id": "r0", "method": "POST", "url": "/v1/embeddings", "body": body}
    path.write_text(json.dumps(line) + "\n")
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    for _ in range(20):
        batch = client.batches.retrieve(batch.id)
        if batch.status == "completed":
            break
        emulator_clock.advance(1.0)
    assert batch.status == "completed" and batch.error_file_id
    (error_line,) = client.files.content(batch.error_file_id).text.splitlines()
    assert json.loads(error_line)["response"]["status_code"] == 400


def test_a_hundred_thousand_texts_build_and_parse_in_seconds(tmp_path: Path) -> None:
    # A quarter of them, timed, keeps the test short on a shared machine.
    provider = _provider("openai")
    build = provider.embedding_line_builder(MODELS["openai"], {"dimensions": 256})
    parser = provider.vector_parser(MODELS["openai"], {"dimensions": 256})
    vector = base64.b64encode(embedding_vector("x", 256).tobytes()).decode()
    answer = json.dumps(
        {
            "custom_id": "r0",
            "response": {
                "status_code": 200,
                "body": {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                    "model": MODELS["openai"],
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                },
            },
            "error": None,
        }
    ).encode()
    requests = _requests([f"document {i} with a few words in it" for i in range(25_000)])

    started = time.perf_counter()
    lines = [build(request) for request in requests]
    outcomes = [parser.parse_line(answer, "job") for _ in lines]
    elapsed = time.perf_counter() - started

    assert len(outcomes) == 25_000 and outcomes[0].vector is not None
    assert elapsed * 4 < 20, f"{elapsed * 4:.1f} s for 100,000 texts"
