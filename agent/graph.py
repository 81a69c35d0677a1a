"""The batch graph: submit -> poll (conditional polling edge) -> collect, crash-safe.

    START ──► submit ⟲ (one job per step) ──► (schedule | wait | poll)
      ├─────► poll ──► (collect | wait | schedule)
      │       wait ──► (collect | wait | schedule)
      ├─────► cancel ──► (collect | wait | schedule)
      └─────► (notify | END)                    (results already collected)
    collect ──► submit (follow-up job for retryable failures) | notify | END
    schedule ──► END;  notify ──► END

- `submit` first streams the requests once (`agent.planning`): checks them, splits them into jobs
  by model, count and bytes, builds each job's input file, puts the ids in the store
  (`agent.bulk`), estimates tokens and cost (`agent.estimate`; over `max_cost` it stops here)
  and records every job as an *intent* with a deterministic key; then it
  submits one intent per step: it adopts the job the create journal (in the store) says a create
  made, else finds or uploads the input file and creates the job, never resending either call
  blindly (`send_once` looks the file or job up first), and stores the job ID. So neither a crash
  at any point nor a lost answer ever creates a second job, and every job ID is checkpointed right
  after the provider returns it. A thread with no records of its own (a lost database) first looks
  for the jobs an earlier run of it created (`_take_inventory`). The request records are cleared
  once every job exists.
- `poll` makes one status check of every open job.
- The polling edge after `poll` goes to `collect` once every job is terminal; otherwise it goes to
  `schedule` (the default: one check per run) or, with a wait budget (`max_wait_seconds`), to
  `wait`, which sleeps for a growing interval and checks again. Each check emits a
  `batch_progress` custom stream event.
- `schedule` ends the run; on a LangGraph server it first books the thread's next poll as a
  delayed run (`agent.scheduling`), so a served batch finishes with no client.
- `collect` streams output and error files and records one result per request, in input order,
  matched by `custom_id`, as pages in the store (and in state for small batches). Failed requests of retryable kinds go back to `submit` as a follow-up
  job, up to `max_attempts`. Each job's tokens are priced at batch and realtime prices
  (`agent.pricing`).
- `cancel` (input `{"cancel": true}`) cancels the provider jobs; their partial results are
  collected once they end.
- `notify` sends the completion webhook (`agent.notify`) once, when `webhook_url` is set.

Provider faults: transient ones (429, 5xx, network) are retried by the SDKs and then by the
node's `RetryPolicy`; a permanent one (401, 403, 400) or exhausted retries end the run with
status `error` and the message in state. Nothing already stored is lost, and invoking the thread
again resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
from langchain_core.runnables import RunnableLambda
from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from agent.bulk import PAGE_SIZE, ResultSpool, ThreadData, to_result
from agent.context import Context
from agent.estimate import check_budget, price_plan
from agent.notify import completion_payload, safe_target, send_notice
from agent.planning import (
    Plan,
    intents_for,
    job_key,
    new_intent,
    plan_requests,
    spool_path,
    write_lines,
)
from agent.pricing import Cost, TokenTally, total_cost
from agent.providers import BatchProvider, provider_for_job, resolve_provider
from agent.providers.base import (
    ADOPTION_LOOKBACK_SECONDS,
    JOB_KEY_METADATA,
    THREAD_METADATA,
    CreatedJob,
    JobUpdate,
    RequestOutcome,
    job_chat_model,
    job_line_builder,
    message_dump,
    send_once,
)
from agent.providers.errors import ProviderError, TransientProviderError
from agent.requests import (
    BatchRequest,
    InputError,
    finish_hash,
    iter_file_requests,
    iter_validated,
    iter_with_system_prompt,
    request_set_hash,
    update_hash,
)
from agent.scheduling import schedule_next_poll, schedule_noop
from agent.state import (
    Counts,
    Dedup,
    InputState,
    Job,
    OutputState,
    RequestError,
    Result,
    State,
    Usage,
    empty_usage,
)
from agent.statuses import TERMINAL_JOB_STATUSES, TERMINAL_THREAD_STATUSES, ThreadStatus
from agent.structured import (
    AnswerCheck,
    OutputSpec,
    answer_check,
    checked_result,
    spec_fingerprint,
)

logger = logging.getLogger("batch_agent")
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
        _remember_webhook(runtime)
        try:
            return node(state, runtime=runtime)
        except TransientProviderError as exc:
            info = runtime.execution_info
            if info is None or info.node_attempt < NODE_RETRY.max_attempts:
                raise
            return {
                "status": "error",
                "error": f"{exc} (gave up after {info.node_attempt} attempts; invoke the thread again to retry)",
                # An outage may pass: a served thread books another try (see `_retry_later`).
                "retry_later": True,
            }
        except ProviderError as exc:
            return {
                "status": "error",
                "error": f"{exc} (fix the cause, then invoke the thread again to resume)",
                "retry_later": False,
            }

    return guarded


# --------------------------------------------------------------------------- nodes


@records_errors
def submit(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Plan and record job intents, then submit one intent per step (adopting existing jobs)."""
    jobs = list(state.get("jobs") or [])
    has_source = bool(state.get("requests") or state.get("input_path"))
    if not jobs:
        if not has_source:
            raise InputError(
                "no requests: the input is empty (give `requests` or `input_path`)", source="input"
            )
        return _plan(state, runtime.context, runtime)
    # Input sent again to a thread that holds a batch was checked by `route_start`: the same set.
    pending = [i for i, job in enumerate(jobs) if _pending_intent(job)]
    if not pending:
        # Identical input sent again to a thread whose jobs all exist: nothing to submit.
        return {"requests": [], "input_path": "", "error": None}
    index = pending[0]
    jobs[index] = _submit_intent(jobs[index], jobs, state, runtime)
    update: dict[str, Any] = {"jobs": jobs, "counts": _progress_counts(state, jobs), "error": None}
    if len(pending) == 1:
        # Every job exists: drop the bulk input so later checkpoints do not re-write it.
        update.update(
            requests=[],
            input_path="",
            status=_progress_status(jobs),
            waits_this_run=0,
            waited_seconds=0.0,
        )
    return update


@records_errors
def poll(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Check the status of every open job once (the first check of a run)."""
    data = ThreadData(runtime.store, _thread_id())
    return {**_check_jobs(state, runtime.context, data), "waits_this_run": 0, "waited_seconds": 0.0}


@records_errors
def wait(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Sleep for the next (growing) interval within the run's wait budget, then check again."""
    ctx = runtime.context
    waits = state.get("waits_this_run", 0)
    waited = state.get("waited_seconds", 0.0)
    pause = max(0.0, min(ctx.next_poll_interval(waits), ctx.max_wait_seconds - waited))
    time.sleep(pause)
    return {
        **_check_jobs(state, ctx, ThreadData(runtime.store, _thread_id())),
        "waits_this_run": waits + 1,
        "waited_seconds": waited + pause,
    }


@records_errors
def cancel(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Cancel every open provider job; partial results are collected when they end."""
    jobs: list[Job] = []
    data = ThreadData(runtime.store, _thread_id())
    held = list(state.get("jobs") or [])
    for job in held:
        provider = provider_for_job(job)
        if _pending_intent(job):
            # The create may have reached the provider before a crash: cancel that job too.
            _take_inventory(provider, held, state, data)
            found = _reconcile(provider, job, held, data)
            if found is None:
                jobs.append(_never_submitted(job, "cancelled before it was submitted"))
                continue
            job = _adopt(job, found)
        if job.get("unverified") and job["status"] not in TERMINAL_JOB_STATUSES:
            # Adopted without proof that it is ours: cancelling it could stop another's batch.
            note = f"not cancelled: batch {job['job_id']} was adopted without proof that it is this thread's; check it at the provider"
            jobs.append(_never_submitted(job, note))
            continue
        if job["status"] not in TERMINAL_JOB_STATUSES:
            job = _apply_update(job, _cancel_job(provider, job), runtime.context)
        jobs.append(job)
    return {
        "jobs": jobs,
        "requests": [],
        "cancel": False,
        "cancel_requested": True,
        "counts": _progress_counts(state, jobs),
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
    count = state.get("request_count", 0)
    data = ThreadData(runtime.store, _thread_id())
    cancelled = bool(state.get("cancel_requested"))
    to_retry: dict[str, list[str]] = {}
    added = Totals()
    copies_of = data.duplicates_by_original(state.get("duplicate_count", 0))
    saved: list[Cost] = []
    with ResultSpool(data, first_round=attempt == 1, count=count) as spool:
        positions = {
            request_id: position for position, request_id in enumerate(data.request_ids(count))
        }
        for index, job in enumerate(jobs):
            if job["attempt"] != attempt:
                continue
            ids = data.job_ids(job["job_key"], job["request_count"])
            tally, copies_tally = TokenTally(), TokenTally()
            for request_id, result, retryable in _job_results(
                job, ids, attempt, _planned_spec(state), validate=ctx.validate_schema
            ):
                spool.put(positions[request_id], result)
                added.add(result)
                tally.add(result)
                for copy_id in copies_of.get(request_id, ()):
                    # An identical request, sent once: the same answer under its own id.
                    copy = {**result, "id": copy_id, "duplicate_of": request_id}
                    spool.put(positions[copy_id], copy)
                    added.add(copy)
                    copies_tally.add(copy)
                if retryable and not cancelled:
                    to_retry.setdefault(job["job_key"], []).append(request_id)
            jobs[index] = _priced(job, tally, ctx)
            if copies_tally.input_tokens or copies_tally.output_tokens:
                saved.append(_priced(job, copies_tally, ctx)["cost"])
        replaced = spool.merge()
    pages = -(-count // PAGE_SIZE)
    totals = (
        Totals() if attempt == 1 else Totals.of(state.get("collected_counts"), state.get("usage"))
    )
    totals.merge(added)
    for result in replaced:
        totals.remove(result)
    counts, usage = totals.counts(), totals.usage
    update: dict[str, Any] = {
        "jobs": jobs,
        "counts": counts,
        "collected_counts": counts,
        "usage": usage,
        "cost": total_cost(job["cost"] for job in jobs if "cost" in job),
        "dedup": _dedup_saved(state.get("dedup"), saved, attempt),
        "results": _state_results(data, count, ctx),
        "results_store": {
            "namespace": list(data.namespace("results")),
            "pages": pages,
            "page_size": PAGE_SIZE,
            "count": count,
            "format": "jsonl",
        },
        "next_check_at": None,
        "error": None,
    }
    if to_retry and attempt < ctx.max_attempts:
        by_key = {job["job_key"]: job for job in jobs}
        follow_ups = []
        for part, (source, ids) in enumerate(to_retry.items()):
            key = job_key(_thread_id(), state.get("request_hash", ""), attempt + 1, part)
            data.put_ids(ids, "jobs", key)
            follow_ups.append(
                new_intent(
                    provider_for_job(by_key[source]),
                    key=key,
                    attempt=attempt + 1,
                    model=by_key[source]["model"],
                    params=by_key[source]["params"],
                    request_count=len(ids),
                    retry_of=source,
                    chat_model=job_chat_model(by_key[source]),
                )
            )
        return {**update, "jobs": jobs + follow_ups, "attempt": attempt + 1, "status": "running"}
    status = _final_status(jobs, counts, cancelled)
    failures = [e for job in jobs for e in job["errors"]]
    return {
        **update,
        "status": status,
        "error": ("; ".join(failures) or "every job failed") if status == "failed" else None,
    }


def notify(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Send the completion webhook once (`agent.notify`); a failing receiver never fails the batch."""
    url = _webhook_url(runtime)
    problem = send_notice(url, completion_payload(_thread_id(), dict(state)))
    if problem:
        logger.warning("%s", problem)
        # Given up on: recorded, and not retried by later runs (the receiver refused it).
        return {"webhook": {"target": safe_target(url), "sent_at": None, "error": problem}}
    return {"webhook": {"target": safe_target(url), "sent_at": time.time(), "error": None}}


# --------------------------------------------------------------------------- routers


def _retry_later(state: State) -> bool:
    """Tell whether a run ended on a provider outage that outlasted the retries (worth another try).

    Standalone, `schedule` then just ends the run (the CLI reports the error; `--wait` resumes);
    on a server it books another run, so an unattended thread survives an outage.
    """
    return (
        state.get("status") == "error"
        and bool(state.get("retry_later"))
        and bool(state.get("jobs"))
    )


def _notice_due(state: State, runtime: Runtime[Context]) -> bool:
    """Tell whether a finished thread has a webhook set and no notice attempted yet."""
    return bool(
        state.get("status") in TERMINAL_THREAD_STATUSES
        and not state.get("webhook")
        and _webhook_url(runtime)
    )


def _webhook_url(runtime: Runtime[Context]) -> str:
    """Return the run's `webhook_url`, else the one an earlier run of the thread gave."""
    if runtime.context.webhook_url:
        return runtime.context.webhook_url
    return ThreadData(runtime.store, _thread_id()).webhook_url() if runtime.store else ""


def _remember_webhook(runtime: Runtime[Context]) -> None:
    """Keep a run's webhook for the thread, so a later run without it still sends the notice."""
    if runtime.context.webhook_url and runtime.store is not None:
        ThreadData(runtime.store, _thread_id()).remember_webhook_url(runtime.context.webhook_url)


def route_start(
    state: State, runtime: Runtime[Context]
) -> Literal["submit", "poll", "cancel", "notify", "__end__"]:
    """Route a new invocation by what the thread already holds.

    Input sent to a thread that holds a batch is checked here, before any node runs: a
    different request set raises, and LangGraph then drops the input with the failed step, so
    the thread is left as it was (a refusal in a node would keep the input in state for good).
    """
    if state.get("cancel") and state.get("status") not in TERMINAL_THREAD_STATUSES:
        return "cancel"
    jobs = state.get("jobs") or []
    if state.get("requests") or state.get("input_path"):
        if jobs:
            _refuse_another_request_set(state, runtime.context)
        return "submit"  # plan a new batch, or (the same set again) clear the input and go on
    if state.get("status") in TERMINAL_THREAD_STATUSES:
        # A finished thread answers again from its state, without calling the provider; only a
        # notice that a crash kept from being sent is still due.
        return "notify" if _notice_due(state, runtime) else "__end__"
    if any(_pending_intent(job) for job in jobs):
        return "submit"  # an intent (or a follow-up job) still has to be submitted
    if jobs:
        return "poll"
    # A new thread without requests: let submit raise the clear "input is empty" error.
    return "submit"


def _refuse_another_request_set(state: State, ctx: Context) -> None:
    """Raise unless the input sent to a thread that holds a batch is the batch's request set.

    Cheap when it is the planned input (same inline records, or the same unchanged file);
    otherwise the input is read once and its fingerprint compared.

    Raises:
        InputError: The input is another request set (requests, tools or response schema differ),
            naming both sizes and how to start a new thread. Nothing was sent anywhere.
    """
    spec = OutputSpec.from_values(state)
    planned_spec = _planned_spec(state)
    if _source_fingerprint(state) == state.get("source_fingerprint") and spec_fingerprint(
        spec
    ) == spec_fingerprint(planned_spec):
        return
    count = 0

    def counted() -> Iterator[BatchRequest]:
        nonlocal count
        for request in _source(state, state.get("system_prompt", ctx.system_prompt)):
            count += 1
            yield request

    fingerprint = request_set_hash(counted(), spec)
    held = str(state.get("request_hash", ""))
    if fingerprint == held:
        return
    thread = _thread_id()
    raise InputError(
        f"thread {thread} already holds a batch of {_requests(state.get('request_count', 0))} "
        f"(request set {held[:12]}); this input is a different request set, of "
        f"{_requests(count)} (request set {fingerprint[:12]}): requests, tools or response "
        "schema differ. A thread runs one request set: send this input on a new thread (run it "
        "without --thread, or with a new --thread ID); nothing was sent",
        source="input",
    )


def _requests(count: int) -> str:
    return f"{count:,} request{'' if count == 1 else 's'}"


def route_after_submit(
    state: State, runtime: Runtime[Context]
) -> Literal["submit", "poll", "wait", "schedule", "notify", "__end__"]:
    """Keep submitting one intent per step; then end the run, or wait within its budget."""
    jobs = state.get("jobs") or []
    if state.get("status") == "error" or not jobs:
        return "schedule" if _retry_later(state) else "__end__"
    if any(_pending_intent(job) for job in jobs):
        return "submit"
    if state.get("status") in TERMINAL_THREAD_STATUSES:
        # The same request set sent again to a finished thread: answer from its state.
        return "notify" if _notice_due(state, runtime) else "__end__"
    if runtime.context.max_wait_seconds > 0:
        return "wait"
    # Identical input re-sent to a thread that is already being polled: poll as a resume would.
    return "poll" if state.get("polls", 0) > 0 else "schedule"


def route_after_check(
    state: State, runtime: Runtime[Context]
) -> Literal["submit", "collect", "wait", "schedule", "__end__"]:
    """Decide on the polling edge: collect when every job is terminal, else wait or schedule."""
    if state.get("status") in {"error", "cancelled"}:
        return "schedule" if _retry_later(state) else "__end__"
    if any(_pending_intent(job) for job in state.get("jobs") or []):
        return "submit"  # a batch adopted unverified was not ours: create the job after all
    if all(job["status"] in TERMINAL_JOB_STATUSES for job in state.get("jobs") or []):
        return "collect"
    if state.get("waited_seconds", 0.0) < runtime.context.max_wait_seconds:
        return "wait"
    # Jobs still in flight: on a server, book the next poll; standalone, just end the run.
    return "schedule"


def route_after_collect(
    state: State, runtime: Runtime[Context]
) -> Literal["submit", "notify", "schedule", "__end__"]:
    """Submit the follow-up job when collect queued retries, else notify (if asked) and finish."""
    if state.get("status") == "error":
        return "schedule" if _retry_later(state) else "__end__"
    if any(_pending_intent(job) for job in state.get("jobs") or []):
        return "submit"
    return "notify" if _notice_due(state, runtime) else "__end__"


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
    # Sync under the CLI (a no-op), async under a server (books a delayed run in process).
    builder.add_node("schedule", RunnableLambda(schedule_noop, afunc=schedule_next_poll))
    builder.add_node("notify", notify)
    builder.add_conditional_edges(START, route_start)
    builder.add_conditional_edges("submit", route_after_submit)
    builder.add_conditional_edges("poll", route_after_check)
    builder.add_conditional_edges("wait", route_after_check)
    builder.add_conditional_edges("cancel", route_after_check)
    builder.add_conditional_edges("collect", route_after_collect)
    builder.add_edge("schedule", END)
    builder.add_edge("notify", END)
    return builder


# --------------------------------------------------------------------------- helpers


def _thread_id() -> str:
    return str(get_config().get("configurable", {}).get("thread_id", ""))


def _plan(state: State, ctx: Context, runtime: Runtime[Context]) -> dict[str, Any]:
    """Stream the source once: check it, split it into jobs, build their files, record intents."""
    provider = resolve_provider(ctx)
    spec = OutputSpec.from_values(state)
    plan = plan_requests(
        _source(state, ctx.system_prompt),
        provider=provider,
        context=ctx,
        spec=spec,
        # Exact token counts where the budget or a plan needs them; else the cheap heuristic.
        exact_tokens=bool(state.get("dry_run")) or ctx.max_cost is not None,
    )
    try:
        summary, estimate = price_plan(plan.summary(), provider.name, ctx.price_override)
        dedup = dedup_estimate(plan, provider.name, ctx)
        if not state.get("dry_run"):
            check_budget(estimate, ctx.max_cost)  # before anything is uploaded
    except InputError:
        plan.discard()
        raise
    if state.get("dry_run"):
        plan.discard()
        return {
            "plan": summary,
            "estimate": estimate,
            "dedup": dedup,
            "requests": [],
            "input_path": "",
            "dry_run": False,
            "status": "new",
            "error": None,
        }
    intents = intents_for(plan, provider, ctx, _thread_id())
    data = ThreadData(runtime.store, _thread_id())
    data.put_ids(plan.request_ids, "request_ids")
    for planned, intent in zip(plan.jobs, intents, strict=True):
        data.put_ids(planned.request_ids, "jobs", intent["job_key"])
    data.put_duplicates(plan.duplicates)
    counts = _progress_counts(state, intents)
    counts["total"] += len(plan.duplicates)  # answered at collect, from their originals
    counts["pending"] += len(plan.duplicates)
    return {
        "request_count": len(plan.request_ids),
        "duplicate_count": len(plan.duplicates),
        "dedup": dedup,
        "request_hash": plan.request_hash,
        "source_fingerprint": _source_fingerprint(state),
        "system_prompt": ctx.system_prompt,
        "output_spec": spec.to_state() if spec else None,
        "jobs": intents,
        "plan": summary,
        "estimate": estimate,
        "attempt": 1,
        "status": "new",
        "counts": counts,
        "error": None,
    }


def dedup_estimate(plan: Plan, provider: str, ctx: Context) -> Dedup | None:
    """Price what the plan's duplicates would have cost: the estimated saving of sending each once."""
    if not plan.duplicates:
        return None
    _, saved = price_plan(plan.duplicate_summary(), provider, ctx.price_override)
    return Dedup(
        requests=len(plan.duplicates),
        estimated_batch_usd=saved["batch_usd"],
        saved_batch_usd=None,
        saved_realtime_usd=None,
    )


def _source_fingerprint(state: State) -> str:
    """Identify the source cheaply: the same inline records, or the same unchanged file.

    The planned source stays in state until every job exists; this tells "still the planned
    input" from "input sent again" without re-reading a large file on every submit step.
    """
    records = state.get("requests") or []
    if records:
        return hashlib.sha256(orjson.dumps(records, option=orjson.OPT_SORT_KEYS)).hexdigest()
    path = Path(str(state.get("input_path")))
    stat = path.stat() if path.is_file() else None
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}" if stat else str(path)


def _source(state: State, system_prompt: str) -> Iterator[BatchRequest]:
    """Stream the thread's requests from inline records or the input file."""
    records = state.get("requests") or []
    if records:
        requests = iter_validated(enumerate(records, start=1), source="input")
    else:
        requests = iter_file_requests(str(state.get("input_path")))
    return iter_with_system_prompt(requests, system_prompt)


def _submit_intent(job: Job, jobs: list[Job], state: State, runtime: Runtime[Context]) -> Job:
    """Submit one intent: adopt the job it already made, else upload (or reuse) and create, once.

    Neither the upload nor the create is ever resent blindly (`send_once`): after a failure that
    may have happened once the provider had acted, the file or job is looked for first.
    """
    provider = provider_for_job(job)
    data = ThreadData(runtime.store, _thread_id())
    _take_inventory(provider, jobs, state, data)
    path = spool_path(job["job_key"])
    if not provider.keeps_input and not data.has_input(job["job_key"]):
        # The provider keeps no copy of the input: the store does, for follow-up jobs.
        job = _built_input(job, path, jobs, state, provider, data)
        data.put_input(job["job_key"], path)
    found = _reconcile(provider, job, jobs, data)
    if found is not None:
        return _adopt(job, found)
    job = _built_input(job, path, jobs, state, provider, data)
    file_name = f"batch-agent-{job['job_key']}.jsonl"
    size, intent_at = job["input_bytes"], job["intent_at"]
    file_id = provider.find_file(file_name, size, intent_at) or send_once(
        lambda: provider.upload(path, file_name),
        lambda: provider.find_file(file_name, size, intent_at),
    )
    metadata = {
        JOB_KEY_METADATA: job["job_key"],
        THREAD_METADATA: _thread_id()[:500],
        "batch_agent_attempt": str(job["attempt"]),
    }
    sent_at = data.journal_create(job["job_key"])  # from here on, a job may exist for this intent
    claimed = data.claimed(j["job_id"] for j in jobs if j["job_id"])
    created = send_once(
        lambda: provider.create(
            file_id,
            model=job["model"],
            completion_window=runtime.context.completion_window,
            metadata=metadata,
        ),
        lambda: provider.find_job(job, sent_at=sent_at, claimed=claimed),
    )
    _journal(data, job["job_key"], created)  # durable before the checkpoint
    path.unlink(missing_ok=True)
    return _adopt(job, created)


def _built_input(
    job: Job, path: Path, jobs: list[Job], state: State, provider: BatchProvider, data: ThreadData
) -> Job:
    """Make sure the job's input file is in the spool, rebuilding the same bytes if it is not.

    Another process may have planned this job, or the spool may have been cleaned.
    """
    if path.is_file() and path.stat().st_size == job["input_bytes"]:
        return job
    wanted = data.job_ids(job["job_key"], job["request_count"])
    # Rebuilt from the thread's source, the request set must be the one planned, byte for byte.
    digest = hashlib.sha256() if job["retry_of"] is None else None
    resume = f"`batch-agent run --thread {_thread_id()} --wait` (or stop it: `batch-agent cancel {_thread_id()}`)"
    try:
        size = write_lines(path, _rebuild_lines(job, wanted, jobs, state, provider, data, digest))
    except InputError as exc:
        raise ProviderError(
            f"the input of job {job['job_key']} is no longer in the spool and cannot be rebuilt "
            f"from the thread's source ({exc}); put the source back unchanged, then resume with "
            f"{resume}"
        ) from None
    if digest is not None:
        finish_hash(digest, _planned_spec(state))
        if digest.hexdigest() != state.get("request_hash"):
            path.unlink(missing_ok=True)
            raise ProviderError(
                f"the input of job {job['job_key']} is no longer in the spool, and the thread's "
                f"source ({state.get('input_path') or 'its inline requests'}) has changed since it "
                f"was planned; nothing was sent for it: put the planned file back, then resume with "
                f"{resume}"
            )
    return Job(**{**job, "input_bytes": size})  # type: ignore[typeddict-item]


def _journal(data: ThreadData, job_key: str, created: CreatedJob) -> None:
    """Record the job a create made (or a lookup found) for `job_key` in the create journal."""
    data.journal_job(
        job_key,
        created.job_id,
        created_at=created.created_at,
        input_file_id=created.input_file_id,
        verified=created.verified,
    )


def _take_inventory(
    provider: BatchProvider, jobs: list[Job], state: State, data: ThreadData
) -> None:
    """Once per thread, before it submits anything: adopt jobs an earlier life of it created.

    A thread whose checkpoint database was lost (a new worker, a deleted file) starts again with
    no record of its jobs, but they exist at the provider under the same deterministic keys.
    They are found by the provider's own identity of each job (`BatchProvider.thread_jobs`) and
    written to the create journal, which `_reconcile` adopts from. A thread whose id was just
    made (`new_thread` input) has no earlier life and skips the lookup.
    """
    if data.inventory_taken():
        return
    intents = [job for job in jobs if _pending_intent(job)]
    if intents and not state.get("new_thread"):
        since = min(job["intent_at"] for job in intents) - ADOPTION_LOOKBACK_SECONDS
        claimed = data.claimed(job["job_id"] for job in jobs if job["job_id"])
        found = provider.thread_jobs(_thread_id(), intents, since=since, claimed=claimed)
        for key, created in found.items():
            if data.create_record(key) is None:
                _journal(data, key, created)
                logger.warning(
                    "thread %s: adopted %s job %s that an earlier run of this thread created%s",
                    _thread_id(),
                    provider.name,
                    created.job_id,
                    "" if created.verified else " (to be verified once it ends)",
                )
    data.mark_inventory_taken()


def _reconcile(
    provider: BatchProvider, job: Job, jobs: list[Job], data: ThreadData
) -> CreatedJob | None:
    """Return the job an intent already made, from the create journal.

    No entry: no create was ever sent for it (jobs of an earlier life were journaled by
    `_take_inventory`). An entry with a job id: a crash came after the answer, before the
    checkpoint. An entry without one: the answer was lost, so the job is looked for at the
    provider by its identity.
    """
    record = data.create_record(job["job_key"])
    if record is None:
        return None
    if record.get("job_id"):
        return CreatedJob(
            job_id=str(record["job_id"]),
            created_at=float(record.get("created_at") or record.get("sent_at") or time.time()),
            input_file_id=str(record.get("input_file_id") or ""),
            verified=bool(record.get("verified", True)),
        )
    found = provider.find_job(
        job,
        sent_at=float(record["sent_at"]),
        claimed=data.claimed(j["job_id"] for j in jobs if j["job_id"]),
    )
    if found is not None:
        _journal(data, job["job_key"], found)
    return found


def _rebuild_lines(
    job: Job,
    ids: list[str],
    jobs: list[Job],
    state: State,
    provider: BatchProvider,
    data: ThreadData,
    digest: Any = None,
) -> Iterator[bytes]:
    """Rebuild a job's input lines (from the thread's source, or the source job's input).

    From the thread's source, every request read is fed into `digest` (a `request_set_hash`
    digest), so the caller can check the source is still the request set it planned.
    """
    wanted = set(ids)
    if job["retry_of"] is not None:
        source = next(j for j in jobs if j["job_key"] == job["retry_of"])
        lines = {
            custom_id: raw
            for custom_id, raw in _source_job_lines(source, provider, data)
            if custom_id in wanted
        }
        missing = [i for i in ids if i not in lines]
        if missing:
            raise InputError(
                f"the input of job {source['job_id']} lacks {len(missing)} request(s) to retry",
                source="provider",
                request_id=missing[0],
            )
        return (lines[i] for i in ids)
    build = job_line_builder(provider, job, _planned_spec(state))

    def from_source() -> Iterator[bytes]:
        for request in _source(state, state.get("system_prompt", "")):
            if digest is not None:
                update_hash(digest, request)
            if request.id in wanted:
                yield build(request)

    return from_source()


def _source_job_lines(
    source: Job, provider: BatchProvider, data: ThreadData
) -> Iterator[tuple[str, bytes]]:
    """Stream `(request id, input line)` of an earlier job, to resubmit some of its requests.

    From the provider's copy of the input file, or, for a provider that keeps none, from the
    store. A thread from before inputs were kept in the store may still have the old local copy.
    """
    if provider.keeps_input:
        yield from provider.input_lines(source)
        return
    try:
        raws: Iterator[bytes] = data.input_lines(source["job_key"], source["request_count"])
        first = next(raws, None)
    except KeyError:
        old_copy = Path(str(source["input_file_id"] or ""))
        if not source["input_file_id"] or not old_copy.is_file():
            raise ProviderError(
                f"{provider.name} keeps no copy of a batch's input, and the input of job "
                f"{source['job_id']} is neither in this thread's store nor at "
                f"{source['input_file_id'] or 'a local path'}; its failed requests cannot be "
                f"resubmitted: finish the thread with `batch-agent cancel {_thread_id()}` and send "
                "them on a new thread"
            ) from None
        raws, first = iter(old_copy.read_bytes().splitlines()), None
    if first is not None:
        yield _keyed_line(first)
    for raw in raws:
        if raw.strip():
            yield _keyed_line(raw)


def _keyed_line(raw: bytes) -> tuple[str, bytes]:
    return str(orjson.loads(raw)["custom_id"]), raw


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


def _priced(job: Job, tally: TokenTally, ctx: Context) -> Job:
    """Record a collected job's tokens and their cost at the prices in force when it was created."""
    created = job["created_at"] or job["intent_at"]
    cost = tally.cost(
        job["provider"],
        job["model"],
        when=datetime.fromtimestamp(created, tz=UTC),
        price_override=ctx.price_override,
    )
    return Job(**{**job, "cost": cost})  # type: ignore[typeddict-item]


def _adopt(job: Job, created: CreatedJob) -> Job:
    return Job(
        **{
            **job,
            "job_id": created.job_id,
            "created_at": created.created_at,
            "input_file_id": created.input_file_id,
            "status": "queued",
            "unverified": not created.verified,
        }
    )  # type: ignore[typeddict-item]


def _pending_intent(job: Job) -> bool:
    """Tell whether `job` is an intent still to be submitted (not one cancelled before it was)."""
    return job["job_id"] is None and job["status"] == "intent"


def _never_submitted(job: Job, note: str) -> Job:
    return Job(
        **{
            **job,
            "status": "failed",
            "provider_status": "",
            "cancelled": True,
            "errors": [*job["errors"], note],
        }
    )  # type: ignore[typeddict-item]


def _check_jobs(state: State, ctx: Context, data: ThreadData) -> dict[str, Any]:
    jobs: list[Job] = []
    for job in state.get("jobs") or []:
        if job["job_id"] is not None and job["status"] not in TERMINAL_JOB_STATUSES:
            job = _apply_update(job, provider_for_job(job).status(job), ctx)
        jobs.append(job)
    for index, job in enumerate(jobs):
        if job.get("unverified") and job["status"] in TERMINAL_JOB_STATUSES:
            _settle_identity(jobs, index, data, cancelled=bool(state.get("cancel_requested")))
    update = {
        "jobs": jobs,
        "counts": _progress_counts(state, jobs),
        "status": _progress_status(jobs),
        "polls": state.get("polls", 0) + 1,
        "error": None,
    }
    get_stream_writer()(progress_event(_thread_id(), update, ctx))
    return update


def _settle_identity(jobs: list[Job], index: int, data: ThreadData, *, cancelled: bool) -> None:
    """Check whose a job adopted unverified is, now that it ended and its results exist.

    Its results carry the key of the job they belong to (`BatchProvider.job_owner`). Ours: it
    is verified. Another job of this thread's that holds an unverified batch too: the two swap.
    Anyone else's (or unreadable): it is released, and the intent is created after all. Its
    results were never at risk of being taken for ours: they match none of our custom ids.
    """
    job = jobs[index]
    owner = provider_for_job(job).job_owner(job)
    if owner == job["job_key"]:
        jobs[index] = Job(**{**job, "unverified": False})  # type: ignore[typeddict-item]
        return
    other = next((i for i, j in enumerate(jobs) if owner and j["job_key"] == owner), None)
    logger.warning(
        "thread %s: batch %s, adopted for job %s without proof, belongs to %s; released",
        _thread_id(),
        job["job_id"],
        job["job_key"],
        "job " + str(owner) if other is not None else "another thread",
    )
    if other is not None and jobs[other].get("unverified"):
        # Two unverified adoptions crossed: each holds the other's batch.
        theirs = jobs[other]
        jobs[other] = _moved(theirs, job)
        jobs[index] = _moved(job, theirs)
        _journal_moved(data, jobs[other])
        _journal_moved(data, jobs[index])
        return
    if other is not None and _pending_intent(jobs[other]):
        jobs[other] = _moved(jobs[other], job)
        _journal_moved(data, jobs[other])
    data.forget_job(job["job_key"])
    if cancelled:
        jobs[index] = _never_submitted(
            {**job, "job_id": None},
            "cancelled before it was submitted",  # type: ignore[typeddict-item]
        )
        return
    jobs[index] = Job(
        **{  # type: ignore[typeddict-item]
            **job,
            "job_id": None,
            "created_at": None,
            "input_file_id": None,
            "status": "intent",
            "provider_status": "",
            "unverified": False,
            "counts": Counts(
                total=job["request_count"],
                succeeded=0,
                failed=0,
                pending=job["request_count"],
            ),
            "output_file_id": None,
            "error_file_id": None,
            "terminal_since": None,
        }
    )


def _moved(job: Job, holder: Job) -> Job:
    """Return `job` holding the batch (and its last status) that `holder` held."""
    moved = {
        key: holder[key]  # type: ignore[literal-required]
        for key in (
            "job_id",
            "created_at",
            "input_file_id",
            "provider_status",
            "status",
            "counts",
            "output_file_id",
            "error_file_id",
            "terminal_since",
        )
    }
    verified = holder["status"] in TERMINAL_JOB_STATUSES  # an ended batch's owner is proven
    return Job(**{**job, **moved, "unverified": not verified})  # type: ignore[typeddict-item]


def _journal_moved(data: ThreadData, job: Job) -> None:
    """Record in the create journal the batch a job now holds after `_settle_identity`."""
    if job["job_id"]:
        held = CreatedJob(
            job_id=job["job_id"],
            created_at=job["created_at"] or time.time(),
            input_file_id=job["input_file_id"] or "",
            verified=not job.get("unverified"),
        )
        _journal(data, job["job_key"], held)


def progress_event(thread_id: str, update: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Return the custom stream event a status check emits (`stream_mode="custom"`).

    Small at any batch size: the thread's counts and one line per job.
    """
    jobs = update["jobs"]
    done = all(job["status"] in TERMINAL_JOB_STATUSES for job in jobs)
    return {
        "event": "batch_progress",
        "thread_id": thread_id,
        "status": update["status"],
        "counts": update["counts"],
        "polls": update["polls"],
        "jobs": [
            {
                "job_id": job["job_id"],
                "provider_status": job["provider_status"],
                "status": job["status"],
                "counts": job["counts"],
            }
            for job in jobs
        ],
        # A hint for progress displays; the actual pause depends on how the thread is driven.
        "next_check_seconds": None if done else ctx.next_poll_interval(update["polls"] - 1),
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
            "cancelled": update.cancelled,
            "retryable": update.retryable,
        }
    )


def _job_results(
    job: Job,
    ids: list[str],
    attempt: int,
    spec: OutputSpec | None = None,
    *,
    validate: bool = False,
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Yield `(id, stored result, retryable)` once for every request of a job, by custom_id.

    Answers are yielded as they stream in; failures wait until the files are read, because an
    answer for the same id wins over an error line; requests with no line at all come last.
    An answer realtime `.invoke()` would raise for fails alone (`read_outcome`), its message and
    usage kept when there are any. With tools / a response schema (`spec`), answers carry
    `tool_calls` and `parsed`, and one the output parser rejects (or, with `validate`, that
    breaks the schema) is failed (`agent.structured.checked_result`).
    """
    answered: set[str] = set()
    failures: dict[str, tuple[dict[str, Any], bool]] = {}
    missing, missing_retryable = _missing_error(job)
    if job["status"] != "failed" and job["job_id"] is not None:
        provider = provider_for_job(job)
        check = answer_check(provider, job_chat_model(job), spec, validate=validate)
        request_id_of = provider.id_matcher(job, ids)
        for outcome in provider.results(job, spec):
            request_id = request_id_of(outcome.custom_id)
            # A line for a request this job does not hold: never trust position or strays.
            if request_id is None or request_id in answered:
                continue
            if outcome.message is not None:
                # An answer was produced (and billed): final, even when it cannot be used.
                answered.add(request_id)
                failures.pop(request_id, None)
                if outcome.error is not None:
                    yield request_id, _failed(request_id, outcome, missing, attempt, check), False
                    continue
                result = _succeeded(request_id, outcome, attempt)
                if check is not None:
                    result = checked_result(result, outcome.message, check, request_id)
                yield request_id, result, False
            elif request_id not in failures:
                failures[request_id] = (
                    _failed(request_id, outcome, missing, attempt, check),
                    outcome.retryable,
                )
    for request_id, (result, retryable) in failures.items():
        yield request_id, result, retryable
    for request_id in ids:
        if request_id not in answered and request_id not in failures:
            yield request_id, _failed_without_line(request_id, missing, attempt), missing_retryable


def _planned_spec(state: State) -> OutputSpec | None:
    """Return the tools / response schema the thread's batch was planned with."""
    return OutputSpec.from_state(state.get("output_spec"))


def _missing_error(job: Job) -> tuple[RequestError, bool]:
    """Return the error for a request the job returned nothing for, and whether to retry it."""
    ended = f"ended '{job['provider_status']}'" if job["provider_status"] else "was never sent"
    detail = f"job {job['job_id']} {ended}"
    if job["errors"]:
        detail += ": " + "; ".join(job["errors"])
    if job["status"] == "failed":
        # A job that failed as a whole: retried only when its provider says the cause passes.
        return RequestError(code="batch_failed", message=f"the batch failed ({detail})"), bool(
            job.get("retryable")
        )
    return RequestError(
        code="no_result", message=f"the provider returned no result for this request ({detail})"
    ), True


def _failed_without_line(request_id: str, error: RequestError, attempt: int) -> dict[str, Any]:
    return {
        "id": request_id,
        "status": "failed",
        "content": None,
        "message": None,
        "usage": empty_usage(),
        "error": dict(error),
        "attempts": attempt,
    }


def _failed(
    request_id: str,
    outcome: RequestOutcome,
    missing: RequestError,
    attempt: int,
    check: AnswerCheck | None,
) -> dict[str, Any]:
    """Return the result of a failed line: its error, with its message and usage if any."""
    error = outcome.error or missing
    if outcome.message is None:
        result = _failed_without_line(request_id, error, attempt)
        if outcome.usage is not None:
            result["usage"] = outcome.usage  # billed although no message could be built
        return result
    result = {**_succeeded(request_id, outcome, attempt), "status": "failed", "error": dict(error)}
    return checked_result(result, outcome.message, check, request_id)


def _succeeded(request_id: str, outcome: RequestOutcome, attempt: int) -> dict[str, Any]:
    message = outcome.message
    assert message is not None
    meta = message.usage_metadata
    usage = Usage(
        input_tokens=meta["input_tokens"] if meta else 0,
        output_tokens=meta["output_tokens"] if meta else 0,
        total_tokens=meta["total_tokens"] if meta else 0,
    )
    return {
        "id": request_id,
        "status": "succeeded",
        "content": message.text,
        "message": message_dump(message),
        "usage": usage,
        "error": None,
        "attempts": attempt,
    }


def _dedup_saved(dedup: Dedup | None, saved: list[Cost], attempt: int) -> Dedup | None:
    """Add this round's answered duplicates, priced like their originals, to what dedup saved."""
    total = total_cost(saved)
    if dedup is None or total is None:
        return dedup
    # Follow-up rounds add the copies of retried originals to what earlier rounds saved.
    earlier = attempt > 1 and dedup["saved_batch_usd"] is not None
    return Dedup(
        **{  # type: ignore[typeddict-item]
            **dedup,
            "saved_batch_usd": _add_usd(dedup["saved_batch_usd"], total["batch_usd"])
            if earlier
            else total["batch_usd"],
            "saved_realtime_usd": _add_usd(dedup["saved_realtime_usd"], total["realtime_usd"])
            if earlier
            else total["realtime_usd"],
        }
    )


def _add_usd(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _progress_counts(state: State, jobs: list[Job]) -> Counts:
    """Progress: job counts in the first round, then the last collect plus follow-up jobs."""
    base = state.get("collected_counts")
    if base is None:
        total = Counts(total=0, succeeded=0, failed=0, pending=0)
        for job in jobs:
            for key in total:
                total[key] += job["counts"][key]  # type: ignore[literal-required]
        return total
    counts = Counts(**base)
    for job in jobs:
        if job["attempt"] == state.get("attempt", 1) and job["attempt"] > 1:
            # A follow-up job in flight: its requests count by the job's own progress.
            counts["failed"] -= job["request_count"]
            for key in ("succeeded", "failed", "pending"):
                counts[key] += job["counts"][key]  # type: ignore[literal-required]
    return counts


class Totals:
    """Running counts and token usage over stored results."""

    def __init__(self) -> None:
        """Start from nothing."""
        self.succeeded = 0
        self.failed = 0
        self.usage = empty_usage()

    @classmethod
    def of(cls, counts: Counts | None, usage: Usage | None) -> Totals:
        """Start from the totals of the last collect."""
        totals = cls()
        if counts:
            totals.succeeded, totals.failed = counts["succeeded"], counts["failed"]
        if usage:
            totals.usage = Usage(**usage)
        return totals

    def add(self, result: dict[str, Any], sign: int = 1) -> None:
        """Count one stored result in (or, with `sign=-1`, out).

        A duplicate's answer counts as a result, but its tokens were billed once, to the original.
        """
        if result["status"] == "succeeded":
            self.succeeded += sign
        else:
            self.failed += sign
        if result.get("duplicate_of"):
            return
        for key in self.usage:
            self.usage[key] += sign * result["usage"][key]  # type: ignore[literal-required]

    def remove(self, result: dict[str, Any]) -> None:
        """Count out a result that was replaced."""
        self.add(result, -1)

    def merge(self, other: Totals) -> None:
        """Add another set of totals."""
        self.succeeded += other.succeeded
        self.failed += other.failed
        for key in self.usage:
            self.usage[key] += other.usage[key]  # type: ignore[literal-required]

    def counts(self) -> Counts:
        """Return the totals as progress counts (nothing pending)."""
        return Counts(
            total=self.succeeded + self.failed,
            succeeded=self.succeeded,
            failed=self.failed,
            pending=0,
        )


def _state_results(data: ThreadData, count: int, ctx: Context) -> list[Result]:
    """Results for thread state: small batches only (large ones are read from the store)."""
    if count > ctx.results_in_state:
        return []
    return [to_result(r) for r in data.iter_results(count)]


def _progress_status(jobs: list[Job]) -> ThreadStatus:
    if jobs and all(job["status"] in {"queued", "intent"} for job in jobs):
        return "submitted"
    return "running"


def _final_status(jobs: list[Job], counts: Counts, cancelled: bool) -> ThreadStatus:
    # A cancel that arrived after every job had already ended leaves a completed thread.
    if cancelled and any(job.get("cancelled") for job in jobs):
        return "cancelled"
    if jobs and all(job["status"] == "failed" for job in jobs) and counts["succeeded"] == 0:
        return "failed"
    return "completed"
