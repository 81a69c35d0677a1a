"""The batch graph: submit -> poll (conditional polling edge) -> collect.

    START ──► submit ──► (END | wait | poll)
      │                         │
      ├──► poll ──► (collect | wait | END)
      │      wait ──► (collect | wait | END)
      └──► END        (results already collected)

- `submit` validates the requests, builds the provider input, uploads it, creates the batch
  job(s) and stores each job ID in checkpointed state. The request records are then cleared, so
  later checkpoints do not re-write them.
- `poll` makes one status check of every open job.
- The polling edge after `poll` goes to `collect` once every job is terminal; otherwise it ends
  the run (the default: one check per invocation, a caller or a schedule invokes again), or, when
  the context grants a wait budget (`max_wait_seconds`), goes to `wait`, which sleeps for a growing
  interval and checks again. Each check is one superstep, so a run stays a handful of steps.
- `collect` downloads output and error files and records one result per request, in input order,
  matched by `custom_id`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agent.context import Context
from agent.providers import provider_for_job, resolve_provider
from agent.providers.base import JobUpdate, RequestOutcome
from agent.requests import (
    BatchRequest,
    InputError,
    normalise_input,
    request_set_hash,
    with_system_prompt,
)
from agent.state import (
    Counts,
    InputState,
    Job,
    OutputState,
    Result,
    State,
    ThreadStatus,
    Usage,
    empty_usage,
)

TERMINAL_THREAD_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
TERMINAL_JOB_STATUSES = frozenset({"done", "failed"})
CANCELLED_PROVIDER_STATUSES = frozenset({"cancelled", "CANCELLED"})


# --------------------------------------------------------------------------- nodes


def submit(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Validate the requests, upload them and create one batch job per model."""
    ctx = runtime.context
    requests = with_system_prompt(normalise_input(state.get("requests") or []), ctx.system_prompt)
    request_hash = request_set_hash(requests)
    if state.get("jobs"):
        if state.get("request_hash") == request_hash:
            # The same input sent again (e.g. a retried client call): resume, never re-submit.
            return {"requests": []}
        raise InputError(
            "this thread already holds a batch with a different request set; start a new thread",
            source="input",
        )

    provider = resolve_provider(ctx)
    params = {"temperature": ctx.temperature, "max_tokens": ctx.max_tokens, "top_p": ctx.top_p}
    groups = _group_by_model(requests, ctx.model or provider.default_model)
    # Build every batch before uploading anything, so a request the chat model rejects costs nothing.
    prepared = [provider.prepare(group, model, params) for model, group in groups.items()]
    thread_id = str(get_config().get("configurable", {}).get("thread_id", ""))
    jobs = [
        provider.submit(
            batch,
            completion_window=ctx.completion_window,
            metadata={
                "batch_agent_thread": thread_id,
                "batch_agent_request_set": request_hash[:32],
                "batch_agent_part": str(index),
            },
        )
        for index, batch in enumerate(prepared)
    ]
    return {
        "requests": [],
        "request_ids": [r.id for r in requests],
        "request_hash": request_hash,
        "jobs": jobs,
        "status": "submitted",
        "counts": _sum_counts(jobs),
        "error": None,
        "polls": 0,
        "waits_this_run": 0,
        "waited_seconds": 0.0,
    }


def poll(state: State) -> dict[str, Any]:
    """Check the status of every open job once (the first check of a run)."""
    return {**_check_jobs(state), "waits_this_run": 0, "waited_seconds": 0.0}


def wait(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Sleep for the next (growing) interval within the run's wait budget, then check again."""
    ctx = runtime.context
    waits = state.get("waits_this_run", 0)
    waited = state.get("waited_seconds", 0.0)
    pause = max(0.0, min(ctx.next_poll_interval(waits), ctx.max_wait_seconds - waited))
    time.sleep(pause)
    return {**_check_jobs(state), "waits_this_run": waits + 1, "waited_seconds": waited + pause}


def collect(state: State) -> dict[str, Any]:
    """Download every job's output and error files and record one result per request."""
    jobs = state.get("jobs") or []
    outcomes: dict[str, RequestOutcome] = {}
    for job in jobs:
        if job["status"] == "failed":
            continue
        for outcome in provider_for_job(job).results(job):
            # A success wins over an error line for the same id (e.g. a retried request).
            if outcome.custom_id not in outcomes or outcome.message is not None:
                outcomes[outcome.custom_id] = outcome

    missing_reason = _missing_reason(jobs)
    results: list[Result] = []
    usage = empty_usage()
    for request_id in state.get("request_ids") or []:
        result = _result_for(request_id, outcomes.get(request_id), missing_reason)
        for key in usage:
            usage[key] += result["usage"][key]  # type: ignore[literal-required]
        results.append(result)

    succeeded = sum(r["status"] == "succeeded" for r in results)
    status = _final_status(jobs)
    return {
        "results": results,
        "usage": usage,
        "status": status,
        "counts": Counts(
            total=len(results), succeeded=succeeded, failed=len(results) - succeeded, pending=0
        ),
        "error": missing_reason if status == "failed" else None,
    }


# --------------------------------------------------------------------------- routers


def route_start(state: State) -> Literal["submit", "poll", "__end__"]:
    """Route a new invocation by what the thread already holds."""
    if state.get("requests"):
        return "submit"
    if state.get("status") in TERMINAL_THREAD_STATUSES:
        # A finished thread answers again from its state, without calling the provider.
        return "__end__"
    if state.get("jobs"):
        return "poll"
    # A new thread without requests: let submit raise the clear "input is empty" error.
    return "submit"


def route_after_submit(
    state: State, runtime: Runtime[Context]
) -> Literal["poll", "wait", "__end__"]:
    """After submitting, end the run unless the context grants a wait budget."""
    if state.get("status") in TERMINAL_THREAD_STATUSES:
        return "__end__"
    if runtime.context.max_wait_seconds > 0:
        return "wait"
    # Identical input re-sent to a thread that is already being polled: poll as a resume would.
    return "poll" if state.get("polls", 0) > 0 else "__end__"


def route_after_check(
    state: State, runtime: Runtime[Context]
) -> Literal["collect", "wait", "__end__"]:
    """Decide after a status check: collect when every job is terminal, else wait or end."""
    if all(job["status"] in TERMINAL_JOB_STATUSES for job in state.get("jobs") or []):
        return "collect"
    if state.get("waited_seconds", 0.0) < runtime.context.max_wait_seconds:
        return "wait"
    return "__end__"


# --------------------------------------------------------------------------- builder


def build_graph() -> StateGraph[State, Context, InputState, OutputState]:
    """Return the uncompiled batch graph; compile it with the checkpointer of your choice."""
    builder = StateGraph(
        State, context_schema=Context, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("submit", submit)
    builder.add_node("poll", poll)
    builder.add_node("wait", wait)
    builder.add_node("collect", collect)
    builder.add_conditional_edges(START, route_start)
    builder.add_conditional_edges("submit", route_after_submit)
    builder.add_conditional_edges("poll", route_after_check)
    builder.add_conditional_edges("wait", route_after_check)
    builder.add_edge("collect", END)
    return builder


# --------------------------------------------------------------------------- helpers


def _group_by_model(
    requests: Iterable[BatchRequest], default_model: str
) -> dict[str, list[BatchRequest]]:
    """Split requests by model, first-seen order: providers run one model per job."""
    groups: dict[str, list[BatchRequest]] = {}
    for request in requests:
        groups.setdefault(request.model or default_model, []).append(request)
    return groups


def _check_jobs(state: State) -> dict[str, Any]:
    jobs: list[Job] = []
    for job in state.get("jobs") or []:
        if job["status"] not in TERMINAL_JOB_STATUSES:
            job = _apply_update(job, provider_for_job(job).status(job))
        jobs.append(job)
    return {
        "jobs": jobs,
        "counts": _sum_counts(jobs),
        "status": _progress_status(jobs),
        "polls": state.get("polls", 0) + 1,
    }


def _apply_update(job: Job, update: JobUpdate) -> Job:
    return Job(
        **{
            **job,
            "provider_status": update.provider_status,
            "status": update.status,
            "counts": update.counts,
            "output_file_id": update.output_file_id,
            "error_file_id": update.error_file_id,
            "errors": update.errors,
        }
    )


def _sum_counts(jobs: Iterable[Job]) -> Counts:
    total = Counts(total=0, succeeded=0, failed=0, pending=0)
    for job in jobs:
        for key in total:
            total[key] += job["counts"][key]  # type: ignore[literal-required]
    return total


def _progress_status(jobs: list[Job]) -> ThreadStatus:
    if jobs and all(job["status"] == "queued" for job in jobs):
        return "submitted"
    return "running"


def _final_status(jobs: list[Job]) -> ThreadStatus:
    if jobs and all(job["status"] == "failed" for job in jobs):
        return "failed"
    if jobs and all(job["provider_status"] in CANCELLED_PROVIDER_STATUSES for job in jobs):
        return "cancelled"
    return "completed"


def _missing_reason(jobs: list[Job]) -> str:
    parts = []
    for job in jobs:
        detail = f"job {job['job_id']} ended '{job['provider_status']}'"
        if job["errors"]:
            detail += ": " + "; ".join(job["errors"])
        parts.append(detail)
    return "the provider returned no result for this request (" + ", ".join(parts) + ")"


def _result_for(request_id: str, outcome: RequestOutcome | None, missing_reason: str) -> Result:
    if outcome is None:
        return Result(
            id=request_id,
            status="failed",
            message=None,
            usage=empty_usage(),
            error={"code": "no_result", "message": missing_reason},
        )
    if outcome.message is None:
        return Result(
            id=request_id, status="failed", message=None, usage=empty_usage(), error=outcome.error
        )
    meta = outcome.message.usage_metadata
    usage = Usage(
        input_tokens=meta["input_tokens"] if meta else 0,
        output_tokens=meta["output_tokens"] if meta else 0,
        total_tokens=meta["total_tokens"] if meta else 0,
    )
    return Result(
        id=request_id, status="succeeded", message=outcome.message, usage=usage, error=None
    )
