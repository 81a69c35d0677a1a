"""Anthropic Message Batches: parity with `ChatAnthropic.invoke()`, the lifecycle, faults, crashes.

The realtime side is the real `ChatAnthropic.invoke()` with its HTTP client swapped for a
recording mock transport. The batch side is our provider, through the real `anthropic` SDK,
against the in-process emulator (or a mock transport serving a results file, for parity).
What every provider must do alike (each fault knob, expiry, cancel, bad input) is parametrized
over the providers, Anthropic among them, in `test_failure_handling.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent.context import Context
from agent.emulator import ManualClock, emulator_http_client, list_jobs, read_access_log
from agent.graph import build_graph
from agent.planning import new_intent
from agent.providers.anthropic import AnthropicProvider
from agent.providers.anthropic.provider import InlineRequests
from agent.providers.base import JOB_KEY_METADATA
from agent.requests import BatchRequest
from tests.realtime import (
    ANTHROPIC_RESPONSE,
    MESSAGE_SETS,
    invoke_recorded,
    message_batch,
    recording_anthropic,
)
from tests.support import (
    FAST_POLLING,
    assert_all_accounted,
    assert_retried_in_follow_ups,
    built_lines,
    run_with_wait_budget,
)

MODEL = "claude-haiku-4-5"
# (constructor parameters from the run context, per-call parameters from the request record)
PARAM_SETS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({"temperature": 0.2, "max_tokens": 64}, {}),
    ({"top_p": 0.5}, {"temperature": 0.9, "stop": ["\n\n"], "top_k": 5}),
]
BATCH_ID = "msgbatch_0123456789abcdef"
FAST = FAST_POLLING
N = 12
RECORDS: list[dict[str, Any]] = [
    {"id": f"req-{i:02d}", "prompt": f"question number {i}"} for i in range(N)
]


# --------------------------------------------------------------------------- parity


def _realtime(
    messages: list[dict[str, Any]],
    ctor: dict[str, Any],
    call: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[dict[str, Any], AIMessage]:
    """Run `ChatAnthropic.invoke()` against a recording transport; return (sent body, message)."""
    recorded = recording_anthropic(ANTHROPIC_RESPONSE, ctor, monkeypatch, model=MODEL)
    return invoke_recorded(recorded, messages, call)


def _sdk_server(batch_state: dict[str, Any], results: bytes, created: list[Any]) -> httpx2.Client:
    """An httpx2 client answering the Message Batches calls the SDK makes, recording creates."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/messages/batches":
            created.append((dict(request.headers), request.read()))
            return httpx2.Response(200, json={**batch_state, "processing_status": "in_progress"})
        if path == f"/v1/messages/batches/{BATCH_ID}":
            return httpx2.Response(200, json=batch_state)
        if path == f"/v1/messages/batches/{BATCH_ID}/results":
            return httpx2.Response(200, content=results)
        return httpx2.Response(404, json={"type": "error", "error": {"type": "not_found_error"}})

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def _batch_state(processing_status: str = "ended") -> dict[str, Any]:
    return message_batch(BATCH_ID, processing_status)


@pytest.mark.parametrize("messages", MESSAGE_SETS, ids=["user", "system+user", "multi-turn-parts"])
@pytest.mark.parametrize(
    ("ctor", "call"), PARAM_SETS, ids=["defaults", "ctx-params", "request-params"]
)
def test_batch_params_equal_the_realtime_body(
    messages: list[dict[str, Any]],
    ctor: dict[str, Any],
    call: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    realtime_body, _ = _realtime(messages, ctor, call, monkeypatch)
    provider = AnthropicProvider(emulated=False, base_url="http://unused.invalid")
    batch = built_lines(provider, [BatchRequest("r1", messages, call)], MODEL, ctor)
    (line,) = [json.loads(raw) for raw in batch.splitlines()]
    assert set(line) == {"custom_id", "params"} and line["custom_id"] == "r1"
    assert "stream" not in realtime_body
    assert line["params"] == realtime_body


def test_the_create_call_sends_the_realtime_bodies_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = [_realtime(messages, {}, {}, monkeypatch)[0] for messages in MESSAGE_SETS]
    created: list[Any] = []
    provider = AnthropicProvider(
        emulated=False,
        base_url="https://api.invalid",
        http_client=_sdk_server(_batch_state(), b"", created),
    )
    requests = [BatchRequest(f"r{i}", m, {}) for i, m in enumerate(MESSAGE_SETS)]
    spool = tmp_path / "job.jsonl"
    spool.write_bytes(built_lines(provider, requests, MODEL, {}))
    file_id = provider.upload(spool, "batch-agent-k.jsonl")
    job = provider.create(
        file_id, model=MODEL, completion_window="24h", metadata={JOB_KEY_METADATA: "k"}
    )
    assert job.job_id == BATCH_ID
    (headers, raw), *_ = created
    sent = json.loads(raw)
    assert int(headers["content-length"]) == len(raw) == InlineRequests(Path(file_id), "k").length
    assert headers["content-type"] == "application/json"
    # Each request goes out under the job's identity and its position, not the user's id.
    assert [r["custom_id"] for r in sent["requests"]] == ["k-0", "k-1", "k-2"]
    assert [r["params"] for r in sent["requests"]] == bodies


def _comparable(message: AIMessage) -> dict[str, Any]:
    # `invoke()` ids embed a random run id; everything else must match exactly.
    dumped = message.model_dump()
    dumped.pop("id")
    return dumped


def _results(provider: AnthropicProvider) -> list[Any]:
    job = new_intent(provider, key="k", attempt=1, model=MODEL, params={}, request_count=1)
    job.update(job_id=BATCH_ID, status="done", output_file_id=_batch_state()["results_url"])
    return list(provider.results(job))


def test_a_succeeded_result_equals_the_realtime_message(monkeypatch: pytest.MonkeyPatch) -> None:
    _, realtime = _realtime(MESSAGE_SETS[0], {}, {}, monkeypatch)
    line = {"custom_id": "r1", "result": {"type": "succeeded", "message": ANTHROPIC_RESPONSE}}
    provider = AnthropicProvider(
        emulated=False,
        base_url="https://api.invalid",
        http_client=_sdk_server(_batch_state(), json.dumps(line).encode() + b"\n", []),
    )
    (outcome,) = _results(provider)
    assert outcome.custom_id == "r1" and outcome.error is None and outcome.message is not None
    ours = outcome.message
    assert _comparable(ours) == _comparable(realtime)
    # Anthropic's input_tokens exclude cache reads and writes; LangChain adds them back.
    assert (
        ours.usage_metadata
        == realtime.usage_metadata
        == {
            "input_tokens": 32,
            "output_tokens": 3,
            "total_tokens": 35,
            "input_token_details": {"cache_read": 7, "cache_creation": 4},
        }
    )
    assert ours.response_metadata["stop_reason"] == "end_turn"
    assert ours.response_metadata["model_name"] == "claude-haiku-4-5-20251001"
    assert ours.id and ours.id.startswith("lc_run-")


def test_errored_canceled_and_expired_results_become_clear_request_errors() -> None:
    lines = [
        {
            "custom_id": "limited",
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": "rate_limit_error", "message": "slow down"},
                    "request_id": "req_1",
                },
            },
        },
        {
            "custom_id": "invalid",
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "max_tokens: too big"},
                },
            },
        },
        {"custom_id": "cancelled", "result": {"type": "canceled"}},
        {"custom_id": "late", "result": {"type": "expired"}},
    ]
    results = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    provider = AnthropicProvider(
        emulated=False,
        base_url="https://api.invalid",
        http_client=_sdk_server(_batch_state(), results, []),
    )
    outcomes = {o.custom_id: o for o in _results(provider)}
    assert all(o.message is None and o.error for o in outcomes.values())
    codes = {cid: (o.error["code"], o.retryable) for cid, o in outcomes.items() if o.error}
    assert codes == {
        "limited": ("rate_limit_error", True),
        "invalid": ("invalid_request_error", False),
        "cancelled": ("canceled", False),
        "late": ("expired", True),
    }
    limited = outcomes["limited"].error
    assert limited is not None and "slow down" in limited["message"]
    assert "req_1" in limited["message"]


# --------------------------------------------------------------------------- lifecycle


def _run(
    records: list[dict[str, Any]] = RECORDS, thread: str = "t", **context: Any
) -> tuple[dict[str, Any], Any]:
    return run_with_wait_budget("anthropic", records, thread, **context)


def _assert_all_accounted(values: dict[str, Any], records: list[dict[str, Any]] = RECORDS) -> None:
    assert_all_accounted(values, records)


def _batch_creates() -> list[dict[str, Any]]:
    return [
        e
        for e in read_access_log()
        if e["method"] == "POST" and e["path"] == "/anthropic/v1/messages/batches"
    ]


def test_full_lifecycle_through_the_sdk_results_in_input_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "shuffle=1,seed=5")
    values, _ = _run()
    assert values["status"] == "completed", values.get("error")
    _assert_all_accounted(values)
    results = values["results"]
    assert [r["message"].content for r in results] == [
        f"Emulated reply to: question number {i}" for i in range(N)
    ]
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in results)
    assert all(r["message"].response_metadata["model_provider"] == "anthropic" for r in results)
    (job,) = values["jobs"]
    assert job["provider"] == "anthropic" and job["job_id"].startswith("msgbatch_")
    assert job["provider_status"] == "ended" and job["model"] == MODEL
    # usage: 3 + 3 words per prompt, 6 reply words.
    assert values["usage"] == {
        "input_tokens": 6 * N,
        "output_tokens": 6 * N,
        "total_tokens": 12 * N,
    }
    assert len(_batch_creates()) == 1
    assert [j["provider"] for j in list_jobs()] == ["anthropic"]


def test_request_errors_are_reported_and_only_retryable_ones_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "request_fail_rate=0.3,seed=3")
    records = [{"id": f"r{i}", "prompt": f"retry me {i}"} for i in range(40)]
    records.append({"id": "bad", "prompt": "please [emulator:reject] this"})
    values, _ = _run(records, max_attempts=6)
    _assert_all_accounted(values, records)
    by_id = {r["id"]: r for r in values["results"]}
    bad = by_id.pop("bad")
    assert bad["status"] == "failed" and bad["attempts"] == 1
    assert bad["error"]["code"] == "invalid_request_error" and "reject" in bad["error"]["message"]
    # Follow-ups are rebuilt from the kept input.
    assert_retried_in_follow_ups(values, by_id)


def test_http_errors_are_retried_by_the_sdk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One client (one emulator app) for every call, so the fault draws go on from call to call.
    provider = AnthropicProvider(emulated=True, base_url="", http_client=emulator_http_client())
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "http_error_rate=0.5,seed=0")
    job = _intent(provider, 2)
    job.update(job_id=_make_batch(provider, tmp_path, ["a-1", "a-2"], "ours"))
    for _ in range(6):
        assert provider.status(job).counts["total"] == 2
    statuses = [e["status"] for e in read_access_log()]
    assert {429, 500} & set(statuses) and statuses.count(200) == 7


# --------------------------------------------------------------------------- crash-safe submit


class CrashAfterCreate(InMemorySaver):
    """A checkpointer that dies the first time it must store a batch id, keeping nothing after.

    That is a process killed after the create call returned and before LangGraph made the step
    durable: neither the node's writes nor the step's checkpoint are kept.
    """

    crashed = False  # the crash has happened (once)
    dead = False  # the crashed process stores nothing more; a new process clears this

    def _dies_on(self, jobs: Any) -> None:
        if not self.crashed and any(job.get("job_id") for job in jobs or []):
            self.crashed = self.dead = True
        if self.dead:
            raise SystemExit("killed after the create call, before the checkpoint")

    def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:  # type: ignore[override]
        for channel, value in writes:
            if channel == "jobs":
                self._dies_on(value)
        self._dies_on([])
        super().put_writes(config, writes, task_id, task_path)

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:  # type: ignore[override]
        self._dies_on(checkpoint["channel_values"].get("jobs"))
        return super().put(config, checkpoint, metadata, new_versions)


def test_a_crash_after_create_adopts_the_batch_instead_of_creating_another() -> None:
    saver, store = CrashAfterCreate(), InMemoryStore()
    graph = build_graph().compile(checkpointer=saver, store=store)
    config = {"configurable": {"thread_id": "t"}}
    ctx = Context(provider="anthropic", **FAST)
    with pytest.raises(SystemExit):
        graph.invoke({"requests": RECORDS}, config, context=ctx, durability="sync")
    assert saver.crashed and len(list_jobs()) == 1
    assert graph.get_state(config).values["jobs"][0]["job_id"] is None  # the id was lost
    saver.dead = False  # a new process opens the same durable checkpoints and store
    resumed = build_graph().compile(checkpointer=saver, store=store)
    resumed.invoke({}, config, context=ctx)
    values = resumed.get_state(config).values
    assert values["status"] == "completed", values.get("error")
    _assert_all_accounted(values)
    assert len(list_jobs()) == 1 and len(_batch_creates()) == 1
    assert values["jobs"][0]["job_id"] == list_jobs()[0]["id"]


def _make_batch(provider: AnthropicProvider, tmp_path: Path, ids: list[str], key: str) -> str:
    """Create a batch of `ids` as job `key` would (the key travels in its custom ids)."""
    requests = [BatchRequest(i, [{"role": "user", "content": f"hi {i}"}], {}) for i in ids]
    spool = tmp_path / f"{key}.jsonl"
    spool.write_bytes(built_lines(provider, requests, MODEL, {}))
    file_id = provider.upload(spool, f"batch-agent-{key}.jsonl")
    metadata = {JOB_KEY_METADATA: key}
    return provider.create(file_id, model=MODEL, completion_window="24h", metadata=metadata).job_id


def _intent(provider: AnthropicProvider, count: int, key: str = "ours") -> Any:
    return new_intent(provider, key=key, attempt=1, model=MODEL, params={}, request_count=count)


def test_a_lost_create_answer_is_found_by_listing_and_matching(
    tmp_path: Path, emulator_clock: ManualClock
) -> None:
    provider = AnthropicProvider(emulated=True, base_url="")
    ours = ["a-1", "a-2", "a-3"]
    sent_at = emulator_clock.now()
    other_size = _make_batch(provider, tmp_path, ["x-1", "x-2"], "other-size")
    ours_id = _make_batch(provider, tmp_path, ours, "ours")  # its answer "lost"
    intent = _intent(provider, len(ours))
    # Still processing: its custom ids cannot be read yet, so it is adopted unverified.
    found = provider.find_job(intent, sent_at=sent_at, claimed=())
    assert found is not None and found.job_id == ours_id != other_size
    assert not found.verified
    # A batch the thread (or another thread of the store) holds is never adopted twice.
    assert provider.find_job(intent, sent_at=sent_at, claimed={ours_id}) is None
    emulator_clock.advance(0.4)  # ended: its results now prove whose it is
    found = provider.find_job(intent, sent_at=sent_at, claimed=())
    assert found is not None and found.job_id == ours_id and found.verified
    assert provider.job_owner({**intent, "job_id": ours_id}) == "ours"


def test_an_ended_batch_is_adopted_by_its_identity_never_by_its_content(
    tmp_path: Path, emulator_clock: ManualClock
) -> None:
    provider = AnthropicProvider(emulated=True, base_url="")
    ids = ["a-1", "a-2", "a-3"]
    sent_at = emulator_clock.now()
    # Another thread's batch with the very same ids and prompts, created just after our send.
    theirs = _make_batch(provider, tmp_path, ids, "another-threads-key")
    emulator_clock.advance(0.4)  # ended: results can be checked
    assert provider.find_job(_intent(provider, 3), sent_at=sent_at, claimed=()) is None
    ours = _make_batch(provider, tmp_path, ids, "ours")
    emulator_clock.advance(0.4)
    found = provider.find_job(_intent(provider, 3), sent_at=sent_at, claimed=())
    assert found is not None and found.job_id == ours != theirs and found.verified


def test_any_user_id_works_it_is_not_what_anthropic_is_sent() -> None:
    records = [
        {"id": "ticket.1", "prompt": "one"},
        {"id": "a b/c?", "prompt": "two"},
        {"id": "é" * 64, "prompt": "three"},
    ]
    values, _ = _run(records)
    assert values["status"] == "completed", values.get("error")
    _assert_all_accounted(values, records)
    assert all(r["status"] == "succeeded" for r in values["results"])
    assert [r["message"].content for r in values["results"]] == [
        "Emulated reply to: one",
        "Emulated reply to: two",
        "Emulated reply to: three",
    ]


# --------------------------------------------------------------------------- input rules


def test_inline_body_streams_valid_json_with_the_announced_length(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl"
    ids = ["r0", 'quote " and \\ backslash', "ünï", "r3"]
    lines = [{"custom_id": i, "params": {"text": "x" * 700_000}} for i in ids]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    body = InlineRequests(path, "key")
    InlineRequests.CHUNK = 4096  # many chunk boundaries
    try:
        raw = b"".join(body)
        assert raw == b"".join(body)  # re-iterable
    finally:
        InlineRequests.CHUNK = 1 << 20
    sent = [{**line, "custom_id": f"key-{n}"} for n, line in enumerate(lines)]
    assert len(raw) == body.length and json.loads(raw) == {"requests": sent}


# --------------------------------------------------------------------------- emulator protocol


def test_the_emulator_speaks_message_batches_to_the_sdk(
    monkeypatch: pytest.MonkeyPatch, emulator_clock: ManualClock
) -> None:
    import anthropic

    from agent.emulator import IN_PROCESS_BASE_URL

    http = emulator_http_client()
    client = anthropic.Anthropic(
        api_key="sk-ant-x", base_url=f"{IN_PROCESS_BASE_URL}/anthropic", http_client=http
    )
    params = {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "one two"}]}
    first = client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "ok", "params": params},
            {"custom_id": "no-max", "params": {**params, "max_tokens": None}},
        ]
    )
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == 2 and batch.request_counts.succeeded == 0
    emulator_clock.advance(0.4)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert ended.request_counts.model_dump() == {
        "canceled": 0,
        "errored": 1,
        "expired": 0,
        "processing": 0,
        "succeeded": 1,
    }
    assert ended.results_url == f"http://emulator/anthropic/v1/messages/batches/{batch.id}/results"
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    ok = results["ok"]
    assert ok.type == "succeeded" and ok.message.stop_reason == "max_tokens"
    assert ok.message.content[0].text == "Emulated reply"  # cut to max_tokens words
    assert ok.message.usage.service_tier == "batch"
    assert results["no-max"].type == "errored"
    # Newest first, one page at a time through the SDK's cursor paging.
    assert [b.id for b in client.messages.batches.list(limit=1)] == [batch.id, first.id]
    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        client.messages.batches.cancel(batch.id)
    assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)
    # The envelope is checked at once, as the API's schema validation does.
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        client.messages.batches.create(requests=[{"custom_id": "a.b", "params": params}])
    # Raw HTTP: Anthropic's own key header works; the version header is required.
    url = "/anthropic/v1/messages/batches"
    assert http.get(url, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}).is_success
    missing = http.get(url, headers={"x-api-key": "k"})
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_API_KEY", "the-right-key")
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client.messages.batches.list()
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_prompt_caching_cache_control_is_kept_in_the_batch_body_as_chat_anthropic_sends_it() -> (
    None
):
    from langchain_anthropic import ChatAnthropic

    messages = [
        {
            "role": "system",
            "content": [
                {
                    "type": "text",
                    "text": "A long shared document.",
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "Question one?",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ],
        },
    ]
    build = AnthropicProvider(emulated=True, base_url="").line_builder(
        "claude-haiku-4-5", {"max_tokens": 64}
    )
    line = orjson.loads(build(BatchRequest("a", messages, {})))
    realtime = ChatAnthropic(model="claude-haiku-4-5", max_tokens=64, api_key="sk-ant-test")  # type: ignore[call-arg,arg-type]
    payload = realtime._get_request_payload(messages)
    assert line["params"]["system"] == payload["system"]
    assert line["params"]["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert line["params"]["messages"][0]["content"][0]["cache_control"] == {
        "type": "ephemeral",
        "ttl": "1h",
    }
    assert line["params"]["messages"] == payload["messages"]
