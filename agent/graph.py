"""The batch graph: submit -> poll (conditional polling edge) -> collect, crash-safe.

    START ──► submit ⟲ (one job per step) ──► (END | wait | poll)
      ├─────► poll ──► (collect | wait | END)
      │       wait ──► (collect | wait | END)
      ├─────► cancel ──► (collect | wait | END)
      └─────► END                               (results already collected)
    collect ──► submit (follow-up job for retryable failures) | END

- `submit` first records every job as an *intent* with a deterministic key (one checkpoint), then
  submits one intent per step: it looks the job up by that key (adopting a job whose create
  response was lost), else finds or uploads the input file and creates the job, and stores the job
  ID. So a crash at any point never creates a second job, and every job ID is checkpointed right
  after the provider returns it. The request records are cleared once every job exists.
- `poll` makes one status check of every open job.
- The polling edge after `poll` goes to `collect` once every job is terminal; otherwise it ends the
  run (the default: one check per invocation) or, with a wait budget (`max_wait_seconds`), goes to
  `wait`, which sleeps for a growing interval and checks again.
- `collect` reads output and error files and records one result per request, in input order,
  matched by `custom_id`. Failed requests of retryable kinds go back to `submit` as a follow-up
  job, up to `max_attempts`.
- `cancel` (input `{"cancel": true}`) cancels the provider jobs; their partial results are
  collected once they end.

Provider faults: transient ones (429, 5xx, network) are retried by the SDKs and then by the
node's `RetryPolicy`; a permanent one (401, 403, 400) or exhausted retries end the run with
status `error` and the message in state. Nothing already stored is lost, and invoking the thread
again resumes where it stopped.
"""

from __future__ import annotations

import time
from functools import wraps
from typing import Any, Literal, Protocol

from langgraph.config import get_config
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from agent.context import Context
from agent.planning import first_round_batch, job_key, new_intent, plan_jobs, retry_batch
from agent.providers import BatchProvider, provider_for_job, resolve_provider
from agent.providers.base import JOB_KEY_METADATA, JobUpdate, RequestOutcome
from agent.providers.errors import ProviderError, TransientProviderError
from agent.requests import InputError, normalise_input, request_set_hash, with_system_prompt
from agent.state import (
    Counts,
    InputState,
    Job,
    OutputState,
    RequestError,
    Result,
    State,
    ThreadStatus,
    Usage,
    empty_usage,
)

TERMINAL_THREAD_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
TERMINAL_JOB_STATUSES = frozenset({"done", "failed"})
# Node-level retries on top of the SDKs' own: a provider outage of a minute or two passes.
NODE_RETRY = RetryPolicy(
    initial_interval=2.0,
    backoff_factor=3.0,
    max_interval=60.0,
    max_attempts=4,
    jitter=True,
    retry_on=TransientProviderError,
)


class Node(Protocol):
    """A node of this graph: state in, runtime by keyword (as LangGraph passes it), update out."""

    def __call__(self, state: State, *, runtime: Runtime[Context]) -> dict[str, Any]: ...  # noqa: D102


def records_errors(node: Node) -> Node:
    """Turn a provider failure into `status: error` in state instead of a crashed run.

    Transient failures are re-raised while the node's `RetryPolicy` has attempts left. The
    node's partial work is not written, so the state keeps everything it had before.
    """

    @wraps(node)
    def guarded(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
        try:
            return node(state, runtime=runtime)
        except TransientProviderError as exc:
            info = runtime.execution_info
            if info is None or info.node_attempt < NODE_RETRY.max_attempts:
                raise
            return {
                "status": "error",
                "error": f"{exc} (gave up after {info.node_attempt} attempts; invoke the thread again to retry)",
            }
        except ProviderError as exc:
            return {
                "status": "error",
                "error": f"{exc} (fix the cause, then invoke the thread again to resume)",
            }

    return guarded


# --------------------------------------------------------------------------- nodes


@records_errors
def submit(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Record job intents, then submit one intent per step (adopting jobs that already exist)."""
    ctx = runtime.context
    jobs = list(state.get("jobs") or [])
    records = state.get("requests") or []
    if records:
        requests = with_system_prompt(normalise_input(records), ctx.system_prompt)
        request_hash = request_set_hash(requests)
        if jobs and state.get("request_hash") != request_hash:
            raise InputError(
                "this thread already holds a batch with a different request set; start a new thread",
                source="input",
            )
        if not jobs:
            # Step 1: plan and check everything, record intents; nothing is uploaded yet.
            provider = resolve_provider(ctx)
            intents = plan_jobs(
                requests,
                provider=provider,
                context=ctx,
                thread_id=_thread_id(),
                request_hash=request_hash,
            )
            return {
                "requests": [
                    {"id": r.id, "messages": r.messages, "params": r.params} for r in requests
                ],
                "request_ids": [r.id for r in requests],
                "request_hash": request_hash,
                "jobs": intents,
                "attempt": 1,
                "status": "new",
                "counts": _sum_counts(intents),
                "error": None,
            }
    elif not jobs:
        normalise_input([])  # raises the clear "input is empty" error

    pending = [i for i, job in enumerate(jobs) if job["job_id"] is None]
    if not pending:
        # Identical input sent again to a thread whose jobs all exist: nothing to submit.
        return {"requests": [], "error": None}
    index = pending[0]
    jobs[index] = _submit_intent(jobs[index], jobs, records, ctx)
    done = len(pending) == 1
    update: dict[str, Any] = {
        "jobs": jobs,
        "counts": _sum_counts(jobs, state.get("results")),
        "error": None,
    }
    if done:
        # Every job exists: drop the bulk input so later checkpoints do not re-write it.
        update.update(
            requests=[], status=_progress_status(jobs), waits_this_run=0, waited_seconds=0.0
        )
    return update


@records_errors
def poll(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Check the status of every open job once (the first check of a run)."""
    return {**_check_jobs(state, runtime.context), "waits_this_run": 0, "waited_seconds": 0.0}


@records_errors
def wait(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Sleep for the next (growing) interval within the run's wait budget, then check again."""
    ctx = runtime.context
    waits = state.get("waits_this_run", 0)
    waited = state.get("waited_seconds", 0.0)
    pause = max(0.0, min(ctx.next_poll_interval(waits), ctx.max_wait_seconds - waited))
    time.sleep(pause)
    return {
        **_check_jobs(state, ctx),
        "waits_this_run": waits + 1,
        "waited_seconds": waited + pause,
    }


@records_errors
def cancel(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Cancel every open provider job; partial results are collected when they end."""
    jobs: list[Job] = []
    for job in state.get("jobs") or []:
        provider = provider_for_job(job)
        if job["job_id"] is None:
            # The create may have reached the provider before a crash: cancel that job too.
            found = provider.find_job(job["job_key"], job["intent_at"])
            if found is None:
                jobs.append(_never_submitted(job))
                continue
            job = _adopt(job, found.job_id, found.created_at, found.input_file_id)
        if job["status"] not in TERMINAL_JOB_STATUSES:
            job = _apply_update(job, _cancel_job(provider, job), runtime.context)
        jobs.append(job)
    return {
        "jobs": jobs,
        "requests": [],
        "cancel": False,
        "cancel_requested": True,
        "counts": _sum_counts(jobs, state.get("results")),
        "status": "running" if jobs else "cancelled",
        "error": None,
        "waits_this_run": 0,
        "waited_seconds": 0.0,
    }


@records_errors
def collect(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Read this round's output and error files; queue retryable failures as a follow-up job."""
    ctx = runtime.context
    attempt = state.get("attempt", 1)
    jobs = list(state.get("jobs") or [])
    cancelled = bool(state.get("cancel_requested"))
    results_by_id: dict[str, Result] = {r["id"]: r for r in state.get("results") or []}
    to_retry: dict[str, list[str]] = {}
    for job in (j for j in jobs if j["attempt"] == attempt):
        outcomes = _outcomes(job)
        missing, missing_retryable = _missing_error(job)
        for request_id in job["request_ids"]:
            outcome = outcomes.get(request_id)
            if outcome is None:
                result, retryable = _failed(request_id, missing, attempt), missing_retryable
            elif outcome.message is None:
                result, retryable = (
                    _failed(request_id, outcome.error or missing, attempt),
                    outcome.retryable,
                )
            else:
                result, retryable = _succeeded(request_id, outcome, attempt), False
            results_by_id[request_id] = result
            if retryable and not cancelled:
                to_retry.setdefault(job["job_key"], []).append(request_id)

    results = [results_by_id[i] for i in state.get("request_ids") or [] if i in results_by_id]
    update: dict[str, Any] = {
        "results": results,
        "usage": _sum_usage(results),
        "counts": _result_counts(results),
        "error": None,
    }
    if to_retry and attempt < ctx.max_attempts:
        by_key = {job["job_key"]: job for job in jobs}
        follow_ups = [
            new_intent(
                provider_for_job(by_key[source]),
                key=job_key(_thread_id(), state.get("request_hash", ""), attempt + 1, part),
                attempt=attempt + 1,
                model=by_key[source]["model"],
                params=by_key[source]["params"],
                request_ids=ids,
                retry_of=source,
            )
            for part, (source, ids) in enumerate(to_retry.items())
        ]
        return {**update, "jobs": jobs + follow_ups, "attempt": attempt + 1, "status": "running"}
    status = _final_status(jobs, results, cancelled)
    failures = [e for job in jobs for e in job["errors"]]
    return {
        **update,
        "status": status,
        "error": ("; ".join(failures) or "every job failed") if status == "failed" else None,
    }


# --------------------------------------------------------------------------- routers


def route_start(state: State) -> Literal["submit", "poll", "cancel", "__end__"]:
    """Route a new invocation by what the thread already holds."""
    if state.get("cancel") and state.get("status") not in TERMINAL_THREAD_STATUSES:
        return "cancel"
    if state.get("requests"):
        return "submit"
    if state.get("status") in TERMINAL_THREAD_STATUSES:
        # A finished thread answers again from its state, without calling the provider.
        return "__end__"
    jobs = state.get("jobs") or []
    if any(job["job_id"] is None for job in jobs):
        return "submit"  # an intent (or a follow-up job) still has to be submitted
    if jobs:
        return "poll"
    # A new thread without requests: let submit raise the clear "input is empty" error.
    return "submit"


def route_after_submit(
    state: State, runtime: Runtime[Context]
) -> Literal["submit", "poll", "wait", "__end__"]:
    """Keep submitting one intent per step; then end the run, or wait within its budget."""
    jobs = state.get("jobs") or []
    if state.get("status") == "error" or not jobs:
        return "__end__"
    if any(job["job_id"] is None for job in jobs):
        return "submit"
    if runtime.context.max_wait_seconds > 0:
        return "wait"
    # Identical input re-sent to a thread that is already being polled: poll as a resume would.
    return "poll" if state.get("polls", 0) > 0 else "__end__"


def route_after_check(
    state: State, runtime: Runtime[Context]
) -> Literal["collect", "wait", "__end__"]:
    """Decide after a status check: collect when every job is terminal, else wait or end."""
    if state.get("status") in {"error", "cancelled"}:
        return "__end__"
    if all(job["status"] in TERMINAL_JOB_STATUSES for job in state.get("jobs") or []):
        return "collect"
    if state.get("waited_seconds", 0.0) < runtime.context.max_wait_seconds:
        return "wait"
    return "__end__"


def route_after_collect(state: State) -> Literal["submit", "__end__"]:
    """Submit the follow-up job when collect queued retries, else finish."""
    if state.get("status") == "error":
        return "__end__"
    return "submit" if any(job["job_id"] is None for job in state.get("jobs") or []) else "__end__"


# --------------------------------------------------------------------------- builder


def build_graph() -> StateGraph[State, Context, InputState, OutputState]:
    """Return the uncompiled batch graph; compile it with the checkpointer of your choice."""
    builder = StateGraph(
        State, context_schema=Context, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node("submit", submit, retry_policy=NODE_RETRY)
    builder.add_node("poll", poll, retry_policy=NODE_RETRY)
    builder.add_node("wait", wait, retry_policy=NODE_RETRY)
    builder.add_node("cancel", cancel, retry_policy=NODE_RETRY)
    builder.add_node("collect", collect, retry_policy=NODE_RETRY)
    builder.add_conditional_edges(START, route_start)
    builder.add_conditional_edges("submit", route_after_submit)
    builder.add_conditional_edges("poll", route_after_check)
    builder.add_conditional_edges("wait", route_after_check)
    builder.add_conditional_edges("cancel", route_after_check)
    builder.add_conditional_edges("collect", route_after_collect)
    return builder


# --------------------------------------------------------------------------- helpers


def _thread_id() -> str:
    return str(get_config().get("configurable", {}).get("thread_id", ""))


def _submit_intent(job: Job, jobs: list[Job], records: list[dict[str, Any]], ctx: Context) -> Job:
    """Submit one intent: adopt an existing job with its key, else upload (or reuse) and create."""
    provider = provider_for_job(job)
    found = provider.find_job(job["job_key"], job["intent_at"])
    if found is not None:
        return _adopt(job, found.job_id, found.created_at, found.input_file_id)
    if job["retry_of"] is None:
        batch = first_round_batch(job, records, provider)
    else:
        source = next(j for j in jobs if j["job_key"] == job["retry_of"])
        batch = retry_batch(job, source, provider)
    file_name = f"batch-agent-{job['job_key']}.jsonl"
    file_id = provider.find_file(file_name, len(batch.jsonl), job["intent_at"]) or provider.upload(
        batch, file_name
    )
    metadata = {
        JOB_KEY_METADATA: job["job_key"],
        "batch_agent_thread": _thread_id()[:500],
        "batch_agent_attempt": str(job["attempt"]),
    }
    created = provider.create(
        file_id, model=job["model"], completion_window=ctx.completion_window, metadata=metadata
    )
    return _adopt(job, created.job_id, created.created_at, file_id)


def _cancel_job(provider: BatchProvider, job: Job) -> JobUpdate:
    """Cancel a job; one that ended since the last poll is simply taken as it ended."""
    try:
        return provider.cancel(job)
    except TransientProviderError:
        raise
    except ProviderError:
        update = provider.status(job)
        if update.status in TERMINAL_JOB_STATUSES:
            return update
        raise


def _adopt(job: Job, job_id: str, created_at: float, input_file_id: str) -> Job:
    return Job(
        **{
            **job,
            "job_id": job_id,
            "created_at": created_at,
            "input_file_id": input_file_id,
            "status": "queued",
        }
    )  # type: ignore[typeddict-item]


def _never_submitted(job: Job) -> Job:
    note = "cancelled before it was submitted"
    return Job(
        **{
            **job,
            "status": "failed",
            "provider_status": "not_submitted",
            "errors": [*job["errors"], note],
        }
    )  # type: ignore[typeddict-item]


def _check_jobs(state: State, ctx: Context) -> dict[str, Any]:
    jobs: list[Job] = []
    for job in state.get("jobs") or []:
        if job["job_id"] is not None and job["status"] not in TERMINAL_JOB_STATUSES:
            job = _apply_update(job, provider_for_job(job).status(job), ctx)
        jobs.append(job)
    return {
        "jobs": jobs,
        "counts": _sum_counts(jobs, state.get("results")),
        "status": _progress_status(jobs),
        "polls": state.get("polls", 0) + 1,
        "error": None,
    }


def _apply_update(job: Job, update: JobUpdate, ctx: Context) -> Job:
    status = update.status
    errors = list(update.errors)
    terminal_since = job.get("terminal_since")
    processed = update.counts["succeeded"] + update.counts["failed"]
    if (
        status == "done"
        and not update.output_file_id
        and not update.error_file_id
        and processed > 0
    ):
        # Terminal, with processed requests, but no files yet: some providers publish them late.
        terminal_since = terminal_since or time.time()
        if time.time() - terminal_since < ctx.output_wait_seconds:
            status = "running"
            errors.append(
                f"provider reports '{update.provider_status}' but no output file yet; waiting"
            )
        else:
            errors.append(
                f"no output file {ctx.output_wait_seconds:.0f}s after '{update.provider_status}'; collected as it is"
            )
    return Job(
        **{  # type: ignore[typeddict-item]
            **job,
            "provider_status": update.provider_status,
            "status": status,
            "counts": update.counts,
            "output_file_id": update.output_file_id,
            "error_file_id": update.error_file_id,
            "errors": errors,
            "terminal_since": terminal_since,
        }
    )


def _outcomes(job: Job) -> dict[str, RequestOutcome]:
    outcomes: dict[str, RequestOutcome] = {}
    if job["status"] == "failed" or job["job_id"] is None:
        return outcomes
    wanted = set(job["request_ids"])
    for outcome in provider_for_job(job).results(job):
        if outcome.custom_id not in wanted:
            continue  # a line for a request this job does not hold: never trust position or strays
        # A success wins over an error line for the same id.
        if outcome.custom_id not in outcomes or outcome.message is not None:
            outcomes[outcome.custom_id] = outcome
    return outcomes


def _missing_error(job: Job) -> tuple[RequestError, bool]:
    """Return the error for a request the job returned nothing for, and whether to retry it."""
    detail = f"job {job['job_id']} ended '{job['provider_status']}'"
    if job["errors"]:
        detail += ": " + "; ".join(job["errors"])
    if job["status"] == "failed":
        # A job that failed as a whole: only an enqueued-token limit is worth another try.
        retryable = any("token_limit_exceeded" in e for e in job["errors"])
        return RequestError(code="batch_failed", message=f"the batch failed ({detail})"), retryable
    return RequestError(
        code="no_result", message=f"the provider returned no result for this request ({detail})"
    ), True


def _failed(request_id: str, error: RequestError, attempt: int) -> Result:
    return Result(
        id=request_id,
        status="failed",
        message=None,
        usage=empty_usage(),
        error=error,
        attempts=attempt,
    )


def _succeeded(request_id: str, outcome: RequestOutcome, attempt: int) -> Result:
    meta = outcome.message.usage_metadata if outcome.message is not None else None
    usage = Usage(
        input_tokens=meta["input_tokens"] if meta else 0,
        output_tokens=meta["output_tokens"] if meta else 0,
        total_tokens=meta["total_tokens"] if meta else 0,
    )
    return Result(
        id=request_id,
        status="succeeded",
        message=outcome.message,
        usage=usage,
        error=None,
        attempts=attempt,
    )


def _sum_counts(jobs: list[Job], results: list[Result] | None = None) -> Counts:
    """Progress counts: job counts in the first round, then results plus the follow-up jobs."""
    if not results:
        total = Counts(total=0, succeeded=0, failed=0, pending=0)
        for job in jobs:
            for key in total:
                total[key] += job["counts"][key]  # type: ignore[literal-required]
        return total
    by_id = {r["id"]: r for r in results}
    counts = _result_counts(results)
    for job in jobs:
        first = by_id.get(job["request_ids"][0]) if job["request_ids"] else None
        if first is None or first["attempts"] >= job["attempt"]:
            continue  # this job's outcome is already in the results
        # A follow-up job in flight: its requests count by the job's own progress.
        counts["failed"] -= job["request_count"]
        for key in ("succeeded", "failed", "pending"):
            counts[key] += job["counts"][key]  # type: ignore[literal-required]
    return counts


def _result_counts(results: list[Result]) -> Counts:
    succeeded = sum(r["status"] == "succeeded" for r in results)
    return Counts(
        total=len(results), succeeded=succeeded, failed=len(results) - succeeded, pending=0
    )


def _sum_usage(results: list[Result]) -> Usage:
    usage = empty_usage()
    for result in results:
        for key in usage:
            usage[key] += result["usage"][key]  # type: ignore[literal-required]
    return usage


def _progress_status(jobs: list[Job]) -> ThreadStatus:
    if jobs and all(job["status"] in {"queued", "intent"} for job in jobs):
        return "submitted"
    return "running"


CANCELLED_PROVIDER_STATUSES = frozenset({"cancelled", "CANCELLED", "not_submitted"})


def _final_status(jobs: list[Job], results: list[Result], cancelled: bool) -> ThreadStatus:
    # A cancel that arrived after every job had already ended leaves a completed thread.
    if cancelled and any(job["provider_status"] in CANCELLED_PROVIDER_STATUSES for job in jobs):
        return "cancelled"
    if (
        jobs
        and all(job["status"] == "failed" for job in jobs)
        and not any(r["status"] == "succeeded" for r in results)
    ):
        return "failed"
    return "completed"
