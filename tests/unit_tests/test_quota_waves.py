"""Quota-aware waves: a thread larger than the provider's in-flight quota runs in waves.

Through the real OpenAI SDK against the emulator, whose `enqueued_token_limit` knob fails a batch
whose prompt tokens would push the model's enqueued total over the limit, as OpenAI does
(`token_limit_exceeded`). Learned from those refusals, or set up front in the context, the
thread submits only what fits and the next jobs as earlier ones end: no failed job, no request
answered twice, no attempt spent on a refusal.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from rich.console import Console

from agent.cli.render import status_renderables, status_report
from agent.context import Context
from agent.emulator import ManualClock, list_jobs
from agent.emulator.answers import prompt_token_count
from agent.graph import build_graph
from agent.quotas import Waves, blocking, budget_for
from agent.state import Job
from tests.support import FAST_POLLING, assert_all_accounted

FAULTS = "BATCH_AGENT_EMULATOR_FAULTS"
DELAY = "BATCH_AGENT_EMULATOR_DELAY"
PER_JOB = 4
RECORDS: list[dict[str, Any]] = [
    {"id": f"req-{i:02d}", "prompt": f"question number {i}"} for i in range(6 * PER_JOB)
]
# The emulator's count of one job's prompt tokens (every prompt has the same word count).
JOB_TOKENS = PER_JOB * prompt_token_count([{"role": "user", "content": RECORDS[0]["prompt"]}])


def _run(**context: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the thread to its end; return its final values and every checkpoint's values."""
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config: dict[str, Any] = {"configurable": {"thread_id": "waves"}}
    ctx = Context(provider="openai", max_requests_per_job=PER_JOB, **{**FAST_POLLING, **context})
    graph.invoke({"requests": RECORDS}, config, context=ctx)
    for _ in range(40):
        if graph.get_state(config).values.get("status") in {"completed", "failed", "error"}:
            break
        graph.invoke({}, config, context=ctx)
    history = [dict(snapshot.values) for snapshot in graph.get_state_history(config)]
    return dict(graph.get_state(config).values), history


def _run_on(provider: str, thread: str) -> dict[str, Any]:
    """Run the records on `provider`, `PER_JOB` a job, to the thread's end; return its values."""
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config: dict[str, Any] = {"configurable": {"thread_id": thread}}
    ctx = Context(provider=provider, max_requests_per_job=PER_JOB, **FAST_POLLING)  # type: ignore[arg-type]
    graph.invoke({"requests": RECORDS}, config, context=ctx)
    for _ in range(40):
        if graph.get_state(config).values.get("status") in {"completed", "failed", "error"}:
            break
        graph.invoke({}, config, context=ctx)
    return dict(graph.get_state(config).values)


def _answered_once(values: dict[str, Any]) -> None:
    """Every request succeeded in its first attempt, and ran in exactly one emulator job."""
    assert_all_accounted(values, RECORDS)
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in values["results"])
    assert [job["status"] for job in values["jobs"]] == ["done"] * 6
    completed = [job for job in list_jobs() if job["status"] == "completed"]
    ran = Counter(job["id"] for job in completed)
    assert len(ran) == 6 and set(ran.values()) == {1}
    assert {job["job_id"] for job in values["jobs"]} == set(ran)


@pytest.fixture
def room_for_two_jobs(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An emulated OpenAI whose enqueued-token quota holds two of the thread's jobs at once."""
    monkeypatch.setenv(FAULTS, f"enqueued_token_limit={2 * JOB_TOKENS}")
    monkeypatch.setenv(DELAY, "2")  # jobs run long enough for the next ones to meet the quota


@pytest.mark.usefixtures("room_for_two_jobs")
def test_refusals_teach_the_thread_its_quota_and_refused_jobs_are_requeued_not_failed() -> None:
    # The thread is not told the quota, and first sends all six jobs.
    values, history = _run()
    assert values["status"] == "completed", values.get("error")
    _answered_once(values)
    refused = [job for job in list_jobs() if job["status"] == "failed"]
    assert refused, "the emulator never refused a batch: the test does not exercise waves"
    requeued = [j for j in values["jobs"] if j.get("refused_jobs")]
    assert {r for j in requeued for r in j["refused_jobs"]} == {job["id"] for job in refused}
    # Never a follow-up attempt for a refusal: the jobs stay the six planned ones.
    assert values["attempt"] == 1 and all(job["attempt"] == 1 for job in values["jobs"])
    (learned,) = values["quota_learned"].values()
    assert 0 < learned["tokens"] < 6 * JOB_TOKENS * 2
    assert any(job.get("waiting_for") for state in history for job in state.get("jobs") or [])


@pytest.mark.usefixtures("room_for_two_jobs")
def test_a_configured_budget_sends_waves_that_fit_and_the_provider_refuses_none() -> None:
    # The budget counts the thread's own estimate of each job (a tokenizer's count).
    dry, _ = _dry_run()
    estimate = max(part["input_tokens"] for part in dry["plan"])
    values, history = _run(max_enqueued_tokens=2 * estimate)
    assert values["status"] == "completed", values.get("error")
    _answered_once(values)
    assert [job for job in list_jobs() if job["status"] == "failed"] == []
    # At no checkpoint were more than two jobs in flight; some intents waited, and said why.
    for state in history:
        running = [j for j in state.get("jobs") or [] if j["job_id"] and j["status"] != "done"]
        assert len(running) <= 2
    reasons = {j.get("waiting_for") for state in history for j in state.get("jobs") or []}
    assert any(r and "max_enqueued_tokens" in r for r in reasons)
    # `batch-agent status` of a thread mid-way shows the intents that wait, and why.
    mid = next(s for s in history if any(j.get("waiting_for") for j in s.get("jobs") or []))
    report = status_report("waves", mid)
    assert report["waiting_for_quota"] == sum(1 for j in mid["jobs"] if j.get("waiting_for"))
    console = Console(record=True, width=80)
    for renderable in status_renderables(report, console):
        console.print(renderable)
    shown = console.export_text()
    assert "waiting for quota" in shown and "max_enqueued_tokens" in shown
    # Once every job is sent, none says it waits.
    assert all(job["waiting_for"] is None for job in status_report("waves", values)["jobs"])


@pytest.mark.usefixtures("room_for_two_jobs")
def test_runs_that_do_not_wait_in_the_graph_poll_while_intents_wait_for_quota(
    emulator_clock: ManualClock,
) -> None:
    # As `batch-agent run --wait` drives a thread: every invocation returns at once (no wait in
    # the graph) and the loop pauses between them. Intents that wait must not stop the polling.
    dry, _ = _dry_run()
    estimate = max(part["input_tokens"] for part in dry["plan"])
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config: dict[str, Any] = {"configurable": {"thread_id": "waves"}}
    ctx = Context(
        provider="openai",
        max_requests_per_job=PER_JOB,
        max_wait_seconds=0,
        max_enqueued_tokens=2 * estimate,
    )
    graph.invoke({"requests": RECORDS}, config, context=ctx)
    for _ in range(60):
        if graph.get_state(config).values.get("status") in {"completed", "failed", "error"}:
            break
        emulator_clock.advance(0.5)
        graph.invoke({}, config, context=ctx)
    values = dict(graph.get_state(config).values)
    assert values["status"] == "completed", values.get("error")
    _answered_once(values)
    assert [job for job in list_jobs() if job["status"] == "failed"] == []


def _dry_run() -> tuple[dict[str, Any], None]:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config: dict[str, Any] = {"configurable": {"thread_id": "dry"}}
    ctx = Context(provider="openai", max_requests_per_job=PER_JOB)
    return dict(graph.invoke({"requests": RECORDS, "dry_run": True}, config, context=ctx)), None


def _job(key: str, *, job_id: str | None, status: str, tokens: int, model: str = "m") -> Job:
    return Job(  # type: ignore[typeddict-item]
        job_key=key,
        attempt=1,
        provider="openai",
        job_id=job_id,
        model=model,
        params={},
        request_count=10,
        input_bytes=100,
        input_tokens=tokens,
        status=status,
    )


def test_an_intent_waits_only_while_jobs_of_its_own_model_hold_the_token_pool() -> None:
    ctx = Context(provider="openai", max_enqueued_tokens=1000)
    running = _job("a", job_id="batch_a", status="running", tokens=700)
    other_model = _job("b", job_id="batch_b", status="running", tokens=900, model="n")
    intent = _job("c", job_id=None, status="intent", tokens=400)
    budget = budget_for(intent, ctx)
    reason = blocking(intent, [running, other_model, intent], budget)
    assert reason is not None and "700" in reason and "max_enqueued_tokens" in reason
    # The job that held the pool ends: the intent is next, whatever the other model holds.
    done = {**running, "status": "done"}
    assert blocking(intent, [done, other_model, intent], budget) is None  # type: ignore[list-item]
    # Alone, a job is always sent (only the provider can say whether it fits then).
    big = _job("d", job_id=None, status="intent", tokens=5000)
    assert Waves([big], ctx, None).next_intent() == 0


# A create refused for a cap on what is in flight (nothing made): the knob, and its limit.
CREATE_CAPS = [
    ("mistral", f"pending_request_limit={2 * PER_JOB}", "requests"),
    ("gemini", "concurrent_job_limit=2", "jobs"),
    ("anthropic", f"queued_request_limit={2 * PER_JOB}", "requests"),
]


@pytest.mark.parametrize(
    ("provider", "knob", "limit"), CREATE_CAPS, ids=[c[0] for c in CREATE_CAPS]
)
def test_a_create_refused_for_a_cap_keeps_the_intent_and_waits_for_a_wave(
    provider: str, knob: str, limit: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS, knob)
    monkeypatch.setenv(DELAY, "1")
    values = _run_on(provider, f"caps-{provider}")
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, RECORDS)
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in values["results"])
    # Six jobs, each created once: the refused creates made nothing.
    assert len(values["jobs"]) == 6 and len(list_jobs()) == 6
    (learned,) = values["quota_learned"].values()
    assert learned[limit] == (2 if limit == "jobs" else 2 * PER_JOB)


def test_ended_jobs_free_the_file_storage_the_next_wave_needs(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Gemini's file storage, inputs and outputs, holds about two of the thread's jobs: a job's
    # files stay only until its results are stored, which is as it ends, not when the round does.
    monkeypatch.setenv(FAULTS, "file_storage_limit=2000")
    monkeypatch.setenv(DELAY, "1")
    values = _run_on("gemini", "storage")
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, RECORDS)
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in values["results"])
    assert [r["id"] for r in values["results"]] == [r["id"] for r in RECORDS]
    jobs = values["jobs"]
    assert len(jobs) == 6 and len(list_jobs()) == 6  # no job failed or was made twice
    # Every job but the last ended while others ran: its results were parked, its files freed.
    assert sum(bool(job.get("parked")) for job in jobs) >= 4
    assert all(job.get("files_deleted") for job in jobs)


@pytest.mark.usefixtures("isolated_env")
def test_jobs_are_planned_to_fit_the_enqueued_token_quota_each() -> None:
    # One job would hold every request (the per-job caps are far away); the quota holds a third
    # of their tokens, and a job over it would be refused even alone: planned as three or more.
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config: dict[str, Any] = {"configurable": {"thread_id": "fit"}}
    whole = graph.invoke(
        {"requests": RECORDS, "dry_run": True}, config, context=Context(provider="openai")
    )
    (only,) = whole["plan"]
    cap = only["input_tokens"] // 3
    split = graph.invoke(
        {"requests": RECORDS, "dry_run": True},
        {"configurable": {"thread_id": "fit-2"}},
        context=Context(provider="openai", max_enqueued_tokens=cap),
    )
    parts = split["plan"]
    assert len(parts) >= 3 and all(part["input_tokens"] <= cap for part in parts)
    assert sum(part["requests"] for part in parts) == len(RECORDS)
    assert sum(part["input_tokens"] for part in parts) == only["input_tokens"]
