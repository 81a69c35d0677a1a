"""Result assembly: one stored result per request of a collected job, and the thread's totals.

`collect_round` collects one round (the first jobs, or a round of follow-up jobs): it stores
every request's result in the store's result pages, in input order (a retried request's new
result replaces its old one), answers duplicates from their originals, prices each job, and
says which requests are worth a follow-up job.

A job's output and error lines are matched to its requests by `custom_id`; an answer wins over an
error line for the same request, and a request the provider returned nothing for still gets a
result (`no_result`, or `batch_failed` for a job that failed as a whole). `Totals` keeps the
thread's counts and token usage over the stored results; `_dedup_saved` prices what sending
identical requests once saved.

Once a round's results are in the store, the files of its jobs are deleted at the provider
(`free_files`; unless `Context.keep_files`): they count against the provider's file storage
(a quota per project) and hold nothing the store does not. An input file a follow-up job
still reads its requests from (a provider that `keeps_input`) goes in the follow-up round.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agent.bulk import PAGE_SIZE, ResultSpool, ThreadData, to_result
from agent.context import Context
from agent.endpoints import EMBEDDINGS, job_endpoint
from agent.job_records import priced
from agent.planning import planned_spec
from agent.pricing import Cost, TokenTally, total_cost
from agent.providers import provider_for_job
from agent.providers.base import (
    RETRYABLE_CODES,
    RequestOutcome,
    job_chat_model,
    message_dump,
)
from agent.state import Counts, Dedup, Job, RequestError, Result, State, Usage, empty_usage
from agent.structured import AnswerCheck, OutputSpec, answer_check, checked_result
from agent.vectors import failed_vector_result, vector_result

logger = logging.getLogger("batch_agent")


@dataclass(frozen=True)
class CollectedRound:
    """What collecting one round gave: the jobs (this round's priced), the thread's totals."""

    jobs: list[Job]
    counts: Counts
    usage: Usage
    dedup: Dedup | None
    to_retry: dict[str, list[str]]
    """Request ids worth a follow-up job, by the key of the job they failed in."""


def collect_round(state: State, ctx: Context, data: ThreadData) -> CollectedRound:
    """Store one result per request of this round's jobs, in input order, and total the thread.

    Safe to run again for the same round (a collect killed before its checkpoint runs again on
    resume): once a round's results are stored, a record in the store says what the round
    gave, and a second run returns it without reading the provider's files, which may be
    deleted by then. Only then are the files deleted (unless `Context.keep_files`).

    Args:
        state: The thread's state (its jobs, round, counts and usage of earlier rounds).
        ctx: The run's settings (prices, schema validation, whether to keep files).
        data: The thread's bulk data (request ids, duplicates, result pages).

    Returns:
        The jobs, this round's priced; the thread's counts, usage and dedup saving; and, unless
        the thread was cancelled, the requests of retryable kinds that failed.
    """
    attempt = state.get("attempt", 1)
    jobs = list(state.get("jobs") or [])
    round_jobs = [[job["job_key"], job["job_id"]] for job in jobs if job["attempt"] == attempt]
    record = data.round_record(attempt)
    if record is None or record["jobs"] != round_jobs:
        record = None
    if record is None or not record["stored"]:
        record = _store_round(state, ctx, data, round_jobs, record)
    collected = CollectedRound(
        jobs=record["collected"]["jobs"],
        counts=record["collected"]["counts"],
        usage=record["collected"]["usage"],
        dedup=record["collected"]["dedup"],
        to_retry=record["collected"]["to_retry"],
    )
    for key, _ in round_jobs:
        data.forget_parked(str(key))  # the round's results hold them now
    if not ctx.keep_files:
        # The results are in the store now; what a follow-up job is made from stays.
        follow_up = collected.to_retry if attempt < ctx.max_attempts else {}
        kept = [free_files(job, attempt, follow_up) for job in collected.jobs]
        collected = dataclasses.replace(collected, jobs=kept)
    return collected


def _store_round(
    state: State,
    ctx: Context,
    data: ThreadData,
    round_jobs: list[list[str | None]],
    record: dict[str, Any] | None,
) -> dict[str, Any]:
    """Read this round's files, store its results and record what the round gave.

    `record` is the one an earlier run of this round wrote before it was killed while writing
    the results: its totals stand, because the pages it patched no longer hold what they
    replaced; the results are written again from the files (not deleted yet).
    """
    attempt = state.get("attempt", 1)
    jobs = list(state.get("jobs") or [])
    count = state.get("request_count", 0)
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
            tally, copies_tally = TokenTally(), TokenTally()
            # How a chat result was obtained (a deadline's fallback writes "realtime" or
            # "flex"); vectors have no fallback, and their results stay as small as they were.
            via = None if job_endpoint(job) == EMBEDDINGS else "batch"
            if job.get("parked"):
                # Stored when it ended, while later waves waited (`agent.parking`): files gone.
                rows = data.iter_parked(job["job_key"])
            else:
                ids = data.job_ids(job["job_key"], job["request_count"])
                rows = job_results(
                    job, ids, attempt, planned_spec(state), validate=ctx.validate_schema
                )
            for request_id, result, retryable in rows:
                if via:
                    result["via"] = via
                spool.put(positions[request_id], result)
                added.add(result)
                tally.add(result)
                for copy in put_copies(spool, positions, copies_of, request_id, result):
                    added.add(copy)
                    copies_tally.add(copy)
                if retryable and not cancelled:
                    to_retry.setdefault(job["job_key"], []).append(request_id)
            jobs[index] = priced(job, tally, ctx)
            if copies_tally.input_tokens or copies_tally.output_tokens:
                saved.append(priced(job, copies_tally, ctx)["cost"])
        if record is None:
            totals = (
                Totals()
                if attempt == 1
                else Totals.of(state.get("collected_counts"), state.get("usage"))
            )
            totals.merge(added)
            for result in spool.replaced():
                totals.remove(result)
            collected = {
                "jobs": jobs,
                "counts": totals.counts(),
                "usage": totals.usage,
                "dedup": _dedup_saved(state.get("dedup"), saved, attempt),
                "to_retry": to_retry,
            }
            record = {"jobs": round_jobs, "stored": False, "collected": collected}
            # Before any page changes: a kill while writing them must not lose what they held.
            data.put_round_record(attempt, record)
        spool.merge()
    record = {**record, "stored": True}
    data.put_round_record(attempt, record)
    return record


def put_copies(
    spool: ResultSpool,
    positions: Mapping[str, int],
    copies_of: Mapping[str, list[str]],
    request_id: str,
    result: dict[str, Any],
) -> list[dict[str, Any]]:
    """Put the answer of `request_id` under the id of each identical request sent with it.

    Returns:
        The copies put (`duplicate_of` names the original), for the caller's totals.
    """
    copies = []
    for copy_id in copies_of.get(request_id, ()):
        # An identical request, sent once: the same answer under its own id.
        copy = {**result, "id": copy_id, "duplicate_of": request_id}
        spool.put(positions[copy_id], copy)
        copies.append(copy)
    return copies


def free_files(job: Job, attempt: int, follow_up: Mapping[str, list[str]]) -> Job:
    """Delete the provider files of a job collected by round `attempt` (or before it).

    Called only once the job's results are in the store. A failed delete is logged (once: the
    job is marked either way) and never fails the run: it only leaves a file behind.

    Args:
        job: The job record.
        attempt: The round being collected; jobs of later rounds are left alone.
        follow_up: Request ids to retry, by job key: the input of such a job is kept when the
            provider keeps inputs (the follow-up job is built from it), for the next round.

    Returns:
        The job, marked `files_deleted` unless something is kept for a follow-up job.
    """
    if job.get("files_deleted") or job["job_id"] is None or job["attempt"] > attempt:
        return job
    provider = provider_for_job(job)
    if not provider.stores_files:
        return job
    keep_input = provider.keeps_input and job["job_key"] in follow_up
    problems = provider.delete_files(job, keep_input=keep_input)
    if problems:
        logger.warning(
            "could not delete the files of job %s at %s (they stay in its file storage; the "
            "results are stored): %s",
            job["job_id"],
            provider.name,
            "; ".join(problems),
        )
    return job if keep_input else Job(**{**job, "files_deleted": True})


def results_store(data: ThreadData, count: int) -> dict[str, Any]:
    """Return where a thread's `count` results live in the store (`State.results_store`)."""
    return {
        "namespace": list(data.namespace("results")),
        "pages": -(-count // PAGE_SIZE),
        "page_size": PAGE_SIZE,
        "count": count,
        "format": "jsonl",
    }


def job_results(
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
            if outcome.vector is not None:
                # An embedding: final, as an answer is.
                answered.add(request_id)
                failures.pop(request_id, None)
                yield request_id, _embedded(request_id, outcome, attempt), False
                continue
            if outcome.message is not None:
                # An answer was produced (and billed): final, even when it cannot be used.
                answered.add(request_id)
                failures.pop(request_id, None)
                yield request_id, _answered(request_id, outcome, missing, attempt, check), False
            elif request_id not in failures:
                failures[request_id] = (
                    _failed(request_id, outcome, missing, attempt, check),
                    outcome.retryable,
                )
    embeddings = job_endpoint(job) == EMBEDDINGS
    for request_id, (result, retryable) in failures.items():
        yield request_id, _not_embedded(result) if embeddings else result, retryable
    for request_id in ids:
        if request_id not in answered and request_id not in failures:
            result = _failed_without_line(request_id, missing, attempt)
            yield request_id, _not_embedded(result) if embeddings else result, missing_retryable


def outcome_result(
    job: Job,
    request_id: str,
    outcome: RequestOutcome,
    attempt: int,
    spec: OutputSpec | None = None,
    *,
    validate: bool = False,
) -> dict[str, Any]:
    """Return the stored result of one request's outcome, as `job_results` makes it.

    For an outcome read outside the job's files (a deadline's fallback sent the request in
    realtime, `agent.fallback`): the same format as the batch's results.
    """
    provider = provider_for_job(job)
    check = answer_check(provider, job_chat_model(job), spec, validate=validate)
    missing, _ = _missing_error(job)
    if outcome.message is None:
        return _failed(request_id, outcome, missing, attempt, check)
    return _answered(request_id, outcome, missing, attempt, check)


def _answered(
    request_id: str,
    outcome: RequestOutcome,
    missing: RequestError,
    attempt: int,
    check: AnswerCheck | None,
) -> dict[str, Any]:
    """Return the result of an outcome with a message: failed with its error, else checked."""
    assert outcome.message is not None
    if outcome.error is not None:
        return _failed(request_id, outcome, missing, attempt, check)
    result = _succeeded(request_id, outcome, attempt)
    if check is not None:
        result = checked_result(result, outcome.message, check, request_id)
    return result


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
    code = provider_for_job(job).unanswered_code(job)
    if code is not None:
        return RequestError(
            code=code, message=f"the batch ended before this request ran ({detail})"
        ), code in RETRYABLE_CODES
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


def _embedded(request_id: str, outcome: RequestOutcome, attempt: int) -> dict[str, Any]:
    """Return the stored result of an embedded text: its vector as float32 (`agent.vectors`)."""
    assert outcome.vector is not None
    return vector_result(request_id, outcome.vector, outcome.usage or empty_usage(), attempt)


def _not_embedded(result: dict[str, Any]) -> dict[str, Any]:
    """Return a failed result in an embeddings job's shape: no vector, no chat message."""
    return failed_vector_result(result["id"], result["error"], result["usage"], result["attempts"])


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


def state_results(data: ThreadData, count: int, ctx: Context) -> list[Result]:
    """Results for thread state: small batches only (large ones are read from the store)."""
    if count > ctx.results_in_state:
        return []
    return [to_result(r) for r in data.iter_results(count)]
