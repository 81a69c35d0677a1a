"""Parking: a job that ends while others run has its results stored and its files freed at once."""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent.bulk import ThreadData
from agent.context import Context
from agent.emulator import read_access_log
from agent.graph import build_graph
from agent.parking import park_jobs
from tests.support import FAST_POLLING, assert_all_accounted

PER_JOB = 4
RECORDS: list[dict[str, Any]] = [
    {"id": f"req-{i:02d}", "prompt": f"question number {i}"} for i in range(3 * PER_JOB)
]


@pytest.mark.usefixtures("isolated_env")
def test_a_park_run_again_after_a_kill_takes_the_stored_results_not_the_deleted_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two jobs at a time (Gemini's concurrent-job cap): the first ends while the third waits.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "concurrent_job_limit=2")
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "1")
    saver, store = InMemorySaver(), InMemoryStore()
    ctx = Context(provider="gemini", max_requests_per_job=PER_JOB, **FAST_POLLING)  # type: ignore[arg-type]
    config: dict[str, Any] = {"configurable": {"thread_id": "park"}}
    stops = build_graph().compile(checkpointer=saver, store=store, interrupt_after=["park"])
    stops.invoke({"requests": RECORDS}, config, context=ctx)
    for _ in range(20):
        if any(job.get("parked") for job in stops.get_state(config).values["jobs"]):
            break
        stops.invoke(None, config, context=ctx)
    parked = [job for job in stops.get_state(config).values["jobs"] if job.get("parked")]
    assert parked and all(job.get("files_deleted") for job in parked)
    # A run killed after parking, before its checkpoint, parks again from the state before it:
    # from the stored results (its files are gone), calling the provider for deletes only.
    before = next(s for s in stops.get_state_history(config) if s.next == ("park",))
    seen = len(read_access_log())
    again = park_jobs(before.values, ctx, ThreadData(store, "park"))  # type: ignore[arg-type]
    assert [job["job_key"] for job in again] == [job["job_key"] for job in parked]
    assert all(job["parked"] and job.get("files_deleted") for job in again)
    calls = read_access_log()[seen:]
    assert calls and all(call["method"] == "DELETE" for call in calls), calls
    # The thread goes on and collects every request once, the parked ones from the store.
    graph = build_graph().compile(checkpointer=saver, store=store)
    for _ in range(40):
        if graph.get_state(config).values.get("status") in {"completed", "failed", "error"}:
            break
        graph.invoke(None, config, context=ctx)
    values = dict(graph.get_state(config).values)
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, RECORDS)
    assert [r["id"] for r in values["results"]] == [r["id"] for r in RECORDS]
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in values["results"])
    assert ThreadData(store, "park").parked(parked[0]["job_key"]) is False  # cleaned up
