"""Parking: a job's results are stored as soon as it ends, while later waves wait to be sent.

A round is collected once all its jobs are terminal (`agent.results.collect_round`), and in a
thread that runs in quota waves (`agent.quotas`) the first jobs end hours or days before the
last. Until their results are stored, their input and output files stay at the provider, where
they count against its file storage (Gemini caps a project at 20 GB, which 10M requests' inputs
alone exceed): the next wave's upload would be refused for storage that only the thread's own
finished jobs hold. So a poll that sees a job end while intents of the thread still wait to be
sent *parks* it: reads its output and error files once, stores each request's result in the
store (`ThreadData.put_parked`), and deletes its files (unless kept). The round's collect then
reads the parked results instead of the files.

Crash safety: the parked pages are marked complete last, and the files are deleted only after
that. A kill before the mark parks the job again from its files; a kill after it finds the mark
and only deletes the files (again: a delete of a deleted file is logged, never fatal).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agent.bulk import ThreadData
from agent.context import Context
from agent.deadline import has_fallback
from agent.fallback import keep_input
from agent.planning import planned_spec
from agent.results import free_files, job_results
from agent.state import Job, State
from agent.statuses import TERMINAL_JOB_STATUSES
from agent.submission import pending_intent


def parkable(state: State) -> list[int]:
    """Return the indexes of the jobs to park now: ended, while other work of the thread remains.

    A job is parked once: it belongs to the round being run, it ended with a provider job of its
    own (one adopted unverified is settled first), and intents of the thread still wait to be
    sent (the next wave may need the storage its files hold).
    """
    jobs = state.get("jobs") or []
    attempt = state.get("attempt", 1)
    if not any(pending_intent(job) for job in jobs):
        # Every job is sent: the round's collect, when the last ends, is as soon as storage
        # matters (parking then would only store each result twice).
        return []
    return [
        index
        for index, job in enumerate(jobs)
        if job["attempt"] == attempt
        and job["job_id"] is not None
        and job["status"] in TERMINAL_JOB_STATUSES
        and not job.get("parked")
        and not job.get("unverified")
    ]


def park_jobs(state: State, ctx: Context, data: ThreadData) -> list[Job]:
    """Park every job `parkable` names; return the changed job records (marked `parked`).

    Args:
        state: The thread's state.
        ctx: The run's settings (schema validation, whether to keep files, retries).
        data: The thread's bulk data, where the results are parked.
    """
    jobs = state.get("jobs") or []
    attempt = state.get("attempt", 1)
    cancelled = bool(state.get("cancel_requested"))
    changed: list[Job] = []
    for index in parkable(state):
        job = jobs[index]
        retryable: list[str] = []
        if data.parked(job["job_key"]):  # parked by a run killed before its checkpoint
            retryable = [rid for rid, _, again in data.iter_parked(job["job_key"]) if again]
        else:
            ids = data.job_ids(job["job_key"], job["request_count"])
            rows = job_results(job, ids, attempt, planned_spec(state), validate=ctx.validate_schema)
            data.put_parked(job["job_key"], _noting_retryable(rows, retryable))
        retried = bool(retryable) and not cancelled
        job = Job(**{**job, "parked": True})  # type: ignore[typeddict-item]
        if has_fallback(state):
            # A deadline's fallback re-sends the requests the batch left unanswered from their
            # input lines: keep them before the files go (a no-op for a fully answered job).
            keep_input(job, list(jobs), state, data)
        if not ctx.keep_files:
            # A follow-up job built from this job's input file needs it (`free_files`).
            follow_up: dict[str, list[str]] = (
                {job["job_key"]: retryable} if retried and attempt < ctx.max_attempts else {}
            )
            job = free_files(job, attempt, follow_up)
        changed.append(job)
    return changed


def _noting_retryable(
    rows: Iterator[tuple[str, dict[str, Any], bool]], retryable: list[str]
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Pass `rows` on, appending the id of each retryable one to `retryable`."""
    for row in rows:
        if row[2]:
            retryable.append(row[0])
        yield row
