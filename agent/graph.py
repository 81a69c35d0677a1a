"""The batch graph: submit -> poll (conditional polling edge) -> collect, crash-safe.

    START ──► submit ⟲ (one job per step) ──► (schedule | wait | poll)
      ├─────► poll ──► (park | submit | collect | wait | schedule)   (submit: the next quota wave)
      │       wait ──► (park | submit | collect | wait | schedule)
      │       park ──► (submit | collect | wait | schedule)
      ├─────► cancel ──► (park | collect | wait | schedule)
      └─────► (notify | END)                    (results already collected)
    collect ──► submit (follow-up job for retryable failures) | fallback | notify | END
    deadline ──► (collect | wait | schedule)   (from START, submit, poll, wait: once due)
    fallback ──► (notify | schedule | END)
    schedule ──► END;  notify ──► END

- `submit` first streams the requests once (`agent.planning`): checks them, splits them into jobs
  by model, count and bytes, builds each job's input file, puts the ids in the store
  (`agent.bulk`), estimates tokens and cost (`agent.estimate`; over `max_cost` it stops here)
  and records every job as an *intent* with a deterministic key; then it submits one intent per
  step, while it fits the provider's in-flight quota (`agent.quotas`: the rest wait, and a poll
  that sees jobs end sends the next wave; a job the provider refuses for a quota is re-queued)
  (`agent.submission`): it adopts the job the create journal (in the store) says a create
  made, else finds or uploads the input file and creates the job, never resending either call
  blindly (`send_once` looks the file or job up first), and stores the job ID. So neither a crash
  at any point nor a lost answer ever creates a second job, and every job ID is checkpointed right
  after the provider returns it. A thread with no records of its own (a lost database) first looks
  for the jobs an earlier run of it created. The request records are cleared once every job
  exists.
- `poll` makes one status check of every open job (`agent.job_records`). Providers report
  normalised facts (a status, a cancelled flag, a retryable kind), so no node or router here
  names a provider, its statuses or its error codes.
- The polling edge after `poll` goes to `collect` once every job is terminal; otherwise it goes to
  `schedule` (the default: one check per run) or, with a wait budget (`max_wait_seconds`), to
  `wait`, which sleeps for a growing interval and checks again. Each check emits a
  `batch_progress` custom stream event.
- `park` stores the results of a job that ended while later jobs of the thread wait for quota
  and deletes its files (`agent.parking`): in a thread of many waves, finished jobs would
  otherwise hold the provider's file storage the next wave needs.
- `schedule` ends the run; on a LangGraph server it first books the thread's next poll as a
  delayed run (`agent.scheduling`), so a served batch finishes with no client.
- `collect` streams output and error files and records one result per request (`agent.results`),
  in input order, matched by `custom_id`, as pages in the store (and in state for small
  batches). Failed requests of retryable kinds go back to `submit` as a follow-up job, up to
  `max_attempts`. Each job's tokens are priced at batch and realtime prices (`agent.pricing`).
- `cancel` (input `{"cancel": true}`) cancels the provider jobs; their partial results are
  collected once they end.
- `deadline` (`Context.deadline`, fixed in `deadline_at` when the thread plans; `agent.deadline`)
  runs once the deadline less its margin has come: it keeps every job's input lines, cancels
  the unfinished jobs and marks intents never submitted; collect then keeps every result
  already produced. With a `fallback`, the `fallback` node (`agent.fallback`) sends the requests
  still missing through the provider's chat API (realtime, or a flex tier), journaled one by
  one, and splits the cost by `via`.
- `notify` sends the completion webhook (`agent.notify`) once, when `webhook_url` is set.

Provider faults: transient ones (429, 5xx, network) are retried by the SDKs and then by the
node's `RetryPolicy`; a permanent one (401, 403, 400) or exhausted retries end the run with
status `error` and the message in state. Nothing already stored is lost, and invoking the thread
again resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from functools import wraps
from typing import Any, Literal, Protocol

from langchain_core.runnables import RunnableLambda
from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from agent.bulk import ThreadData
from agent.context import Context
from agent.deadline import check_settings, deadline_due, has_fallback
from agent.endpoints import EMBEDDINGS
from agent.fallback import keep_input, run_fallback
from agent.job_records import (
    apply_update,
    cancel_job,
    check_jobs,
    final_status,
    progress_counts,
    progress_event,
    progress_status,
)
from agent.notify import completion_payload, safe_target, send_notice
from agent.parking import park_jobs, parkable
from agent.pause import now, pause
from agent.planning import (
    has_source,
    plan_batch,
    refuse_another_request_set,
    retry_intents,
    thread_endpoint,
)
from agent.pricing import total_cost
from agent.providers import resolve_provider
from agent.providers.errors import ProviderError, QuotaExceededError, TransientProviderError
from agent.quotas import Waves, can_submit
from agent.requests import InputError
from agent.results import collect_round, results_store, state_results
from agent.scheduling import schedule_next_poll, schedule_noop
from agent.state import InputState, Job, OutputState, State, changed_jobs
from agent.statuses import TERMINAL_JOB_STATUSES, TERMINAL_THREAD_STATUSES
from agent.submission import adopt_existing, never_submitted, pending_intent, submit_intent

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


# The bulk input, dropped from state once every job exists (later checkpoints do not re-write it).
_NO_SOURCE: dict[str, Any] = {"requests": [], "input_path": "", "embed": []}


@records_errors
def submit(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Plan and record job intents, then submit one intent per step (adopting existing jobs)."""
    jobs = list(state.get("jobs") or [])
    if not jobs:
        if not has_source(state):
            raise InputError(
                "no requests: the input is empty (give `requests`, `input_path` or `embed`)",
                source="input",
            )
        return _plan(state, runtime)
    # Input sent again to a thread that holds a batch was checked by `route_start`: the same set.
    pending = [i for i, job in enumerate(jobs) if pending_intent(job)]
    if not pending:
        # Identical input sent again to a thread whose jobs all exist: nothing to submit.
        return {**_NO_SOURCE, "error": None}
    waves = Waves(jobs, runtime.context, state.get("quota_learned"))
    index = waves.next_intent()
    if index is None:
        # Every intent waits for quota: say why on each, and check the running jobs instead.
        return {"jobs": waves.marked(), "status": progress_status(jobs), "error": None}
    data = ThreadData(runtime.store, _thread_id())
    window = runtime.context.completion_window
    try:
        jobs[index] = submit_intent(jobs[index], jobs, state, data, completion_window=window)
    except QuotaExceededError as exc:
        # Nothing was created: keep the intent, lower the budget, and wait for jobs to end.
        return waves.refused(index, exc)
    jobs[index].pop("waiting_for", None)
    # The intents the new job leaves no room for say so (`batch-agent status` shows them).
    jobs = waves.marked()
    update: dict[str, Any] = {"jobs": jobs, "counts": progress_counts(state, jobs), "error": None}
    if len(pending) == 1:
        # Every job exists: drop the bulk input so later checkpoints do not re-write it.
        update.update(
            _NO_SOURCE,
            status=progress_status(jobs),
            waits_this_run=0,
            waited_seconds=0.0,
        )
    return update


def _plan(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Plan the batch; fix its deadline (a duration counts from now) before anything is sent."""
    ctx = runtime.context
    at = None
    if ctx.deadline or ctx.fallback != "none":
        if ctx.fallback != "none" and thread_endpoint(state) == EMBEDDINGS:
            raise InputError("an embeddings run has no deadline fallback", source="context")
        at = check_settings(ctx, resolve_provider(ctx), now())
    update = plan_batch(state, ctx, runtime.store, _thread_id())
    if update.get("jobs"):
        update.update(deadline_at=at, fallback_tier=ctx.fallback if at is not None else "none")
    return update


@records_errors
def poll(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Check the status of every open job once (the first check of a run)."""
    return {**_check(state, runtime), "waits_this_run": 0, "waited_seconds": 0.0}


@records_errors
def wait(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Pause for the next (growing) interval within the run's wait budget, then check again.

    The pause is `agent.pause.pause` (a sleep, unless a test swapped in its clock).
    """
    ctx = runtime.context
    waits = state.get("waits_this_run", 0)
    waited = state.get("waited_seconds", 0.0)
    seconds = max(0.0, min(ctx.next_poll_interval(waits), ctx.max_wait_seconds - waited))
    pause(seconds)
    return {
        **_check(state, runtime),
        "waits_this_run": waits + 1,
        "waited_seconds": waited + seconds,
    }


def _check(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Check every open job once, and stream the thread's progress (`batch_progress`)."""
    update = check_jobs(state, runtime.context, ThreadData(runtime.store, _thread_id()))
    get_stream_writer()(progress_event(_thread_id(), update, runtime.context))
    # Only the records whose status moved are written (`merge_jobs` keeps the others): a poll
    # step's writes do not grow with the jobs that are still waiting.
    return {**update, "jobs": changed_jobs(state.get("jobs") or [], update["jobs"])}


@records_errors
def park(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Store the results of jobs that ended while later waves wait, and free their files."""
    data = ThreadData(runtime.store, _thread_id())
    return {"jobs": park_jobs(state, runtime.context, data)}


@records_errors
def cancel(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Cancel every open provider job; partial results are collected when they end."""
    jobs = _cancel_all(state, runtime, "cancelled before it was submitted", keep_inputs=False)
    return {
        "jobs": jobs,
        "requests": [],
        "cancel": False,
        "cancel_requested": True,
        "counts": progress_counts(state, jobs),
        "status": "running" if jobs else "cancelled",
        "error": None,
        "waits_this_run": 0,
        "waited_seconds": 0.0,
    }


@records_errors
def deadline(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """At the deadline (less its margin): cancel what has not finished, keep what has.

    Intents never submitted are marked so; every job's input lines are kept in the store
    first (`agent.fallback.keep_input`), so the fallback can re-send its missing requests
    after collect deleted the provider's files. Nothing more is submitted or retried.
    """
    jobs = _cancel_all(state, runtime, "not submitted: the deadline came first", keep_inputs=True)
    return {
        "jobs": jobs,
        "cancel_requested": True,
        "deadline_hit": True,
        "counts": progress_counts(state, jobs),
        "status": "running",
        "error": None,
    }


def _cancel_all(
    state: State, runtime: Runtime[Context], unsent_note: str, *, keep_inputs: bool
) -> list[Job]:
    """Cancel every open provider job of the thread; mark intents never submitted."""
    jobs: list[Job] = []
    data = ThreadData(runtime.store, _thread_id())
    held = list(state.get("jobs") or [])
    for job in held:
        if pending_intent(job):
            # The create may have reached the provider before a crash: cancel that job too.
            adopted = adopt_existing(job, held, state, data)
            if adopted is None:
                if keep_inputs:
                    keep_input(job, held, state, data)
                jobs.append(never_submitted(job, unsent_note))
                continue
            job = adopted
        if job.get("unverified") and job["status"] not in TERMINAL_JOB_STATUSES:
            # Adopted without proof that it is ours: cancelling it could stop another's batch.
            note = f"not cancelled: batch {job['job_id']} was adopted without proof that it is this thread's; check it at the provider"
            jobs.append(never_submitted(job, note))
            continue
        if keep_inputs:
            keep_input(job, held, state, data)
        if job["status"] not in TERMINAL_JOB_STATUSES:
            job = apply_update(job, cancel_job(job), runtime.context)
        jobs.append(job)
    return jobs


@records_errors
def fallback(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Send the requests the batch did not answer by the deadline through the chat API."""
    return run_fallback(state, runtime.context, ThreadData(runtime.store, _thread_id()))


@records_errors
def collect(state: State, *, runtime: Runtime[Context]) -> dict[str, Any]:
    """Read this round's output and error files; queue retryable failures as a follow-up job."""
    ctx = runtime.context
    attempt = state.get("attempt", 1)
    count = state.get("request_count", 0)
    data = ThreadData(runtime.store, _thread_id())
    collected = collect_round(state, ctx, data)
    jobs = collected.jobs
    update: dict[str, Any] = {
        "jobs": jobs,
        "counts": collected.counts,
        "collected_counts": collected.counts,
        "usage": collected.usage,
        "cost": total_cost(job["cost"] for job in jobs if "cost" in job),
        "dedup": collected.dedup,
        "results": state_results(data, count, ctx),
        "results_store": results_store(data, count),
        "next_check_at": None,
        "error": None,
    }
    if collected.to_retry and attempt < ctx.max_attempts:
        request_hash = state.get("request_hash", "")
        follow_ups = retry_intents(jobs, collected.to_retry, data, request_hash, attempt + 1)
        return {**update, "jobs": jobs + follow_ups, "attempt": attempt + 1, "status": "running"}
    status = final_status(jobs, collected.counts, bool(state.get("cancel_requested")))
    if _fallback_next(state):
        # Not finished yet: a resumed thread must still reach the fallback.
        return {**update, "status": "running"}
    failures = [e for job in jobs for e in job["errors"]]
    error = ("; ".join(failures) or "every job failed") if status == "failed" else None
    if state.get("deadline_hit") and collected.counts["failed"]:
        # No fallback: say why the thread stopped short, not just that it was cancelled.
        error = (
            f"the deadline came: {collected.counts['failed']:,} of {collected.counts['total']:,} "
            "requests have no answer (kept with their error; set a fallback, realtime or flex, "
            "to send them at the deadline)"
        )
    return {**update, "status": status, "error": error}


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


def _fallback_next(state: State) -> bool:
    """Tell whether the deadline came and its fallback is to send the missing requests."""
    return bool(state.get("deadline_hit")) and has_fallback(state)


def _deadline_due(state: State, runtime: Runtime[Context]) -> bool:
    """Tell whether the thread's deadline (less the margin) has come, on the injected clock."""
    return deadline_due(state, runtime.context, now())


def route_start(
    state: State, runtime: Runtime[Context]
) -> Literal["submit", "poll", "cancel", "deadline", "notify", "__end__"]:
    """Route a new invocation by what the thread already holds.

    Input sent to a thread that holds a batch is checked here, before any node runs: a
    different request set raises, and LangGraph then drops the input with the failed step, so
    the thread is left as it was (a refusal in a node would keep the input in state for good).
    """
    if state.get("cancel") and state.get("status") not in TERMINAL_THREAD_STATUSES:
        return "cancel"
    jobs = state.get("jobs") or []
    if has_source(state):
        if jobs:
            refuse_another_request_set(state, runtime.context, _thread_id())
        return "submit"  # plan a new batch, or (the same set again) clear the input and go on
    if state.get("status") in TERMINAL_THREAD_STATUSES:
        # A finished thread answers again from its state, without calling the provider; only a
        # notice that a crash kept from being sent is still due.
        return "notify" if _notice_due(state, runtime) else "__end__"
    if jobs and _deadline_due(state, runtime):
        return "deadline"
    if can_submit(state, runtime.context):
        return "submit"  # an intent (or a follow-up job) still has to be submitted
    if jobs:
        return "poll"  # (intents waiting for quota are sent once a poll sees jobs end)
    # A new thread without requests: let submit raise the clear "input is empty" error.
    return "submit"


def route_after_submit(
    state: State, runtime: Runtime[Context]
) -> Literal["submit", "poll", "wait", "deadline", "schedule", "notify", "__end__"]:
    """Keep submitting one intent per step; then end the run, or wait within its budget."""
    jobs = state.get("jobs") or []
    if state.get("status") == "error" or not jobs:
        return "schedule" if _retry_later(state) else "__end__"
    if _deadline_due(state, runtime):
        return "deadline"
    if can_submit(state, runtime.context):
        return "submit"
    if state.get("status") in TERMINAL_THREAD_STATUSES:
        # The same request set sent again to a finished thread: answer from its state.
        return "notify" if _notice_due(state, runtime) else "__end__"
    if runtime.context.max_wait_seconds > 0:
        return "wait"
    # Identical input re-sent to a thread that is already being polled: poll as a resume would.
    # So too when intents wait for quota: only a poll that sees jobs end sends the next wave,
    # and a run that waits outside the graph (`run --wait`) comes back through submit each time.
    waiting = any(pending_intent(job) for job in jobs)
    return "poll" if waiting or state.get("polls", 0) > 0 else "schedule"


def route_after_check(
    state: State, runtime: Runtime[Context]
) -> Literal["park", "submit", "collect", "wait", "deadline", "schedule", "__end__"]:
    """Decide on the polling edge: collect when every job is terminal, else wait or schedule.

    The deadline comes first: once it is due, nothing more is submitted. A job that ended while
    later waves wait is parked first (its storage may be what the next wave's upload needs).
    """
    if state.get("status") in {"error", "cancelled"}:
        return "schedule" if _retry_later(state) else "__end__"
    if _deadline_due(state, runtime):
        return "deadline"
    if parkable(state):
        return "park"
    return route_after_park(state, runtime)


def route_after_park(
    state: State, runtime: Runtime[Context]
) -> Literal["submit", "collect", "wait", "deadline", "schedule", "__end__"]:
    """Go on from a check whose ended jobs are parked: the next wave, collect, wait or schedule."""
    if state.get("status") in {"error", "cancelled"}:
        return "schedule" if _retry_later(state) else "__end__"
    if _deadline_due(state, runtime):
        return "deadline"
    if can_submit(state, runtime.context):
        # A job ended and frees quota for the next wave (or a batch adopted unverified was not
        # ours, or one was refused for a quota and re-queued): submit what fits now.
        return "submit"
    if all(job["status"] in TERMINAL_JOB_STATUSES for job in state.get("jobs") or []):
        return "collect"
    if state.get("waited_seconds", 0.0) < runtime.context.max_wait_seconds:
        return "wait"
    # Jobs still in flight: on a server, book the next poll; standalone, just end the run.
    return "schedule"


def route_after_collect(
    state: State, runtime: Runtime[Context]
) -> Literal["submit", "fallback", "notify", "schedule", "__end__"]:
    """Submit the follow-up job when collect queued retries, else notify (if asked) and finish.

    After the deadline's collect, the fallback sends what the batch did not answer.
    """
    if state.get("status") == "error":
        return "schedule" if _retry_later(state) else "__end__"
    if _fallback_next(state):
        return "fallback"
    if any(pending_intent(job) for job in state.get("jobs") or []):
        return "submit"
    return "notify" if _notice_due(state, runtime) else "__end__"


def route_after_fallback(
    state: State, runtime: Runtime[Context]
) -> Literal["notify", "schedule", "__end__"]:
    """Finish after the fallback; requests it could not send yet are tried on a later run."""
    if state.get("status") == "error":
        return "schedule" if _retry_later(state) else "__end__"
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
    builder.add_node("park", park, retry_policy=NODE_RETRY)
    builder.add_node("cancel", cancel, retry_policy=NODE_RETRY)
    builder.add_node("collect", collect, retry_policy=NODE_RETRY)
    builder.add_node("deadline", deadline, retry_policy=NODE_RETRY)
    builder.add_node("fallback", fallback, retry_policy=NODE_RETRY)
    # Sync under the CLI (a no-op), async under a server (books a delayed run in process).
    builder.add_node("schedule", RunnableLambda(schedule_noop, afunc=schedule_next_poll))
    builder.add_node("notify", notify)
    builder.add_conditional_edges(START, route_start)
    builder.add_conditional_edges("submit", route_after_submit)
    builder.add_conditional_edges("poll", route_after_check)
    builder.add_conditional_edges("wait", route_after_check)
    builder.add_conditional_edges("cancel", route_after_check)
    builder.add_conditional_edges("park", route_after_park)
    builder.add_conditional_edges("collect", route_after_collect)
    builder.add_conditional_edges("deadline", route_after_check)
    builder.add_conditional_edges("fallback", route_after_fallback)
    builder.add_edge("schedule", END)
    builder.add_edge("notify", END)
    return builder


# --------------------------------------------------------------------------- helpers


def _thread_id() -> str:
    """Return the id of the thread the running node works for (from its config)."""
    return str(get_config().get("configurable", {}).get("thread_id", ""))
