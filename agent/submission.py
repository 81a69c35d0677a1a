"""Submission: turn a job intent into exactly one provider job, crash-safe, for every provider.

An intent is submitted once: its input file is uploaded (or an earlier upload found) and the job
created through `send_once`, which looks before it ever resends. The *create journal* in the
store is written before every create and again with the job it made, the same way for every
provider: it is what lets a provider without job metadata or listing stay crash-safe. From it
`_reconcile` adopts the job a create already made (a crash after the answer, or a lost answer),
and `_take_inventory` fills it once for a thread that lost its own records. A job adopted without
proof that it is ours is checked once it ends (`settle_identity`). A job's input is rebuilt byte
for byte from the thread's source (or an earlier job's input, for a follow-up job) when the
local spool no longer holds it; the one provider fact submission depends on is whether the
provider keeps a copy of that input (`BatchProvider.keeps_input`): when it does not, the store
keeps the job's lines, for follow-up jobs.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.bulk import ClaimedJobs, ThreadData
from agent.endpoints import job_endpoint
from agent.planning import planned_spec, source_requests, spool_path, write_lines
from agent.providers import BatchProvider, provider_for_job
from agent.providers.base import (
    ADOPTION_LOOKBACK_SECONDS,
    JOB_KEY_METADATA,
    THREAD_METADATA,
    CreatedJob,
    job_line_builder,
    send_once,
)
from agent.providers.errors import ProviderError
from agent.requests import InputError, finish_hash, update_hash
from agent.state import Counts, Job, State, flagged
from agent.statuses import TERMINAL_JOB_STATUSES

logger = logging.getLogger("batch_agent")


def submit_intent(
    job: Job, jobs: list[Job], state: State, data: ThreadData, *, completion_window: str
) -> Job:
    """Submit one intent: adopt the job it already made, else upload (or reuse) and create, once.

    Neither the upload nor the create is ever resent blindly (`send_once`): after a failure that
    may have happened once the provider had acted, the file or job is looked for first.

    Args:
        job: The intent to submit (one of `jobs`).
        jobs: Every job record of the thread (their job ids are never adopted twice).
        state: The thread's state (its source, request hash and output spec, to rebuild input).
        data: The thread's bulk data (request ids, the create journal, kept inputs).
        completion_window: The run's completion window for the create.

    Returns:
        The job record holding the provider's job (status `queued`).
    """
    provider = provider_for_job(job)
    _take_inventory(provider, jobs, state, data)
    path = spool_path(job["job_key"])
    if not provider.keeps_input and not data.has_input(job["job_key"]):
        # The provider keeps no copy of the input: the store does, for follow-up jobs.
        job = _built_input(job, path, jobs, state, provider, data)
        data.put_input(job["job_key"], path)
    found = _reconcile(provider, job, jobs, data)
    if found is not None:
        return _adopt(job, found)
    if job.get("refused_jobs") and job["input_file_id"] and provider.keeps_input:
        # Re-queued after a quota refusal: the provider still holds the uploaded input.
        file_id = job["input_file_id"]
    else:
        job = _built_input(job, path, jobs, state, provider, data)
        file_name = f"batch-agent-{job['job_key']}.jsonl"
        size, intent_at = job["input_bytes"], job["intent_at"]
        file_id = provider.find_file(file_name, size, intent_at) or send_once(
            lambda: provider.upload(path, file_name),
            lambda: provider.find_file(file_name, size, intent_at),
        )
    metadata = {
        JOB_KEY_METADATA: job["job_key"],
        THREAD_METADATA: data.thread_id[:500],
        "batch_agent_attempt": str(job["attempt"]),
    }
    sent_at = data.journal_create(job["job_key"])  # from here on, a job may exist for this intent
    claimed = claimed_jobs(data, jobs)
    created = send_once(
        lambda: provider.create(
            file_id,
            model=job["model"],
            completion_window=completion_window,
            metadata=metadata,
            endpoint=job_endpoint(job),
        ),
        lambda: provider.find_job(job, sent_at=sent_at, claimed=claimed),
    )
    _journal(data, job["job_key"], created)  # durable before the checkpoint
    path.unlink(missing_ok=True)
    return _adopt(job, created)


def built_input_file(job: Job, jobs: list[Job], state: State, data: ThreadData) -> Path:
    """Return the spool file holding an intent's input lines, rebuilt if it is gone.

    Raises:
        ProviderError: The input cannot be rebuilt (the thread's source changed or is gone).
    """
    path = spool_path(job["job_key"])
    _built_input(job, path, jobs, state, provider_for_job(job), data)
    return path


def _built_input(
    job: Job, path: Path, jobs: list[Job], state: State, provider: BatchProvider, data: ThreadData
) -> Job:
    """Make sure the job's input file is in the spool, rebuilding the same bytes if it is not.

    Another process may have planned this job, or the spool may have been cleaned.
    """
    if path.is_file() and path.stat().st_size == job["input_bytes"]:
        return job
    if data.has_input(job["job_key"]):
        # The store keeps the lines already (a provider that keeps no copy): no source needed.
        lines = data.input_lines(job["job_key"], job["request_count"])
        return Job(**{**job, "input_bytes": write_lines(path, lines)})  # type: ignore[typeddict-item]
    wanted = data.job_ids(job["job_key"], job["request_count"])
    # Rebuilt from the thread's source, the request set must be the one planned, byte for byte.
    digest = hashlib.sha256() if job["retry_of"] is None else None
    thread = data.thread_id
    resume = (
        f"`batch-agent run --thread {thread} --wait` (or stop it: `batch-agent cancel {thread}`)"
    )
    try:
        size = write_lines(path, _rebuild_lines(job, wanted, jobs, state, provider, data, digest))
    except InputError as exc:
        raise ProviderError(
            f"the input of job {job['job_key']} is no longer in the spool and cannot be rebuilt "
            f"from the thread's source ({exc}); put the source back unchanged, then resume with "
            f"{resume}"
        ) from None
    if digest is not None:
        finish_hash(digest, planned_spec(state))
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


def adopt_existing(job: Job, jobs: list[Job], state: State, data: ThreadData) -> Job | None:
    """Return the intent `job` holding the job a create already made for it (None: none was).

    Asked before an intent is cancelled: its create may have reached the provider before a crash.
    """
    provider = provider_for_job(job)
    _take_inventory(provider, jobs, state, data)
    found = _reconcile(provider, job, jobs, data)
    return None if found is None else _adopt(job, found)


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
    intents = [job for job in jobs if pending_intent(job)]
    if intents and not state.get("new_thread"):
        since = min(job["intent_at"] for job in intents) - ADOPTION_LOOKBACK_SECONDS
        claimed = claimed_jobs(data, jobs)
        found = provider.thread_jobs(data.thread_id, intents, since=since, claimed=claimed)
        for key, created in found.items():
            if data.create_record(key) is None:
                _journal(data, key, created)
                logger.warning(
                    "thread %s: adopted %s job %s that an earlier run of this thread created%s",
                    data.thread_id,
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
        claimed=claimed_jobs(data, jobs),
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
    build = job_line_builder(provider, job, planned_spec(state))

    def from_source() -> Iterator[bytes]:
        for request in source_requests(state, state.get("system_prompt", "")):
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
                "resubmitted: finish the thread with "
                f"`batch-agent cancel {data.thread_id}` and send them on a new thread"
            ) from None
        raws, first = iter(old_copy.read_bytes().splitlines()), None
    if first is not None:
        yield provider.line_id(first), first
    for raw in raws:
        if raw.strip():
            yield provider.line_id(raw), raw


def _adopt(job: Job, created: CreatedJob) -> Job:
    """Return the intent `job` holding the job a create made (or a lookup found)."""
    return flagged(
        {
            **job,
            "job_id": created.job_id,
            "created_at": created.created_at,
            "input_file_id": created.input_file_id,
            "status": "queued",
        },
        unverified=not created.verified,
    )


def claimed_jobs(data: ThreadData, jobs: list[Job]) -> ClaimedJobs:
    """Return the job ids no lookup for this thread may adopt: its own, refused ones included."""
    own = [job["job_id"] for job in jobs if job["job_id"]]
    own += [refused for job in jobs for refused in job.get("refused_jobs", ())]
    return data.claimed(own)


def requeue(job: Job, data: ThreadData) -> Job:
    """Return a job the provider refused for a quota as an intent again, for the same requests.

    None of its requests ran, so it is not an attempt: the intent keeps its key, its request
    ids and (at a provider that keeps it) its uploaded input file. The refused job's id is kept
    in `refused_jobs`, where no lookup adopts it, and the create journal forgets it, so the
    next submit creates a new job. Safe to repeat: a crash before the checkpoint leaves the
    refused job in state, which the next check requeues again.
    """
    data.forget_create(job["job_key"])
    refused = [*job.get("refused_jobs", ()), str(job["job_id"])]
    total = job["request_count"]
    return flagged(
        {
            **job,
            "job_id": None,
            "status": "intent",
            "provider_status": "",
            "created_at": None,
            "counts": Counts(total=total, succeeded=0, failed=0, pending=total),
            "output_file_id": None,
            "error_file_id": None,
            "errors": [
                f"{job['provider']} refused job {job['job_id']} for a quota "
                f"({'; '.join(job['errors']) or 'no detail'}); re-queued"
            ],
            "terminal_since": None,
            "refused_jobs": refused,
        },
        cancelled=False,
        retryable=False,
    )


def pending_intent(job: Job) -> bool:
    """Tell whether `job` is an intent still to be submitted (not one cancelled before it was)."""
    return job["job_id"] is None and job["status"] == "intent"


def never_submitted(job: Job, note: str) -> Job:
    """Return `job` ended without a provider job of its own (cancelled first, or not ours)."""
    return Job(
        **{
            **job,
            "status": "failed",
            "provider_status": "",
            "cancelled": True,
            "errors": [*job["errors"], note],
        }
    )  # type: ignore[typeddict-item]


def settle_identity(jobs: list[Job], index: int, data: ThreadData, *, cancelled: bool) -> None:
    """Check whose a job adopted unverified is, now that it ended and its results exist.

    Its results carry the key of the job they belong to (`BatchProvider.job_owner`). Ours: it
    is verified. Another job of this thread's that holds an unverified batch too: the two swap.
    Anyone else's (or unreadable): it is released, and the intent is created after all. Its
    results were never at risk of being taken for ours: they match none of our custom ids.
    """
    job = jobs[index]
    owner = provider_for_job(job).job_owner(job)
    if owner == job["job_key"]:
        jobs[index] = flagged(job, unverified=False)
        return
    other = next((i for i, j in enumerate(jobs) if owner and j["job_key"] == owner), None)
    logger.warning(
        "thread %s: batch %s, adopted for job %s without proof, belongs to %s; released",
        data.thread_id,
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
    if other is not None and pending_intent(jobs[other]):
        jobs[other] = _moved(jobs[other], job)
        _journal_moved(data, jobs[other])
    data.forget_job(job["job_key"])
    if cancelled:
        jobs[index] = never_submitted(
            {**job, "job_id": None},
            "cancelled before it was submitted",  # type: ignore[typeddict-item]
        )
        return
    jobs[index] = flagged(
        {
            **job,
            "job_id": None,
            "created_at": None,
            "input_file_id": None,
            "status": "intent",
            "provider_status": "",
            "counts": Counts(
                total=job["request_count"],
                succeeded=0,
                failed=0,
                pending=job["request_count"],
            ),
            "output_file_id": None,
            "error_file_id": None,
            "terminal_since": None,
        },
        unverified=False,
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
    return flagged({**job, **moved}, unverified=not verified)


def _journal_moved(data: ThreadData, job: Job) -> None:
    """Record in the create journal the batch a job now holds after `settle_identity`."""
    if job["job_id"]:
        held = CreatedJob(
            job_id=job["job_id"],
            created_at=job["created_at"] or time.time(),
            input_file_id=job["input_file_id"] or "",
            verified=not job.get("unverified"),
        )
        _journal(data, job["job_key"], held)
