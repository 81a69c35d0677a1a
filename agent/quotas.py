"""Quota-aware waves: how much of a thread may be in flight at a provider at once.

Providers cap what is in flight, not what is planned: OpenAI a per-model pool of enqueued
prompt tokens (a batch over it is created, then failed with `token_limit_exceeded`), Mistral the
pending requests of a workspace, Gemini the concurrent jobs and the bytes of stored files of a
project. A thread of 10M requests planned at once would be refused, so every planned job stays
an intent and `submit` sends the next one only when it fits next to the jobs still running
(`blocking`): the thread runs in waves, each started as earlier jobs finish.

A budget comes from three places, the lowest winning: the run's context (`max_enqueued_tokens`,
`max_pending_requests`, `max_concurrent_jobs`, `max_stored_bytes`), the provider's documented
default (`BatchProvider.quota_defaults`), and what the provider's own refusals taught the thread
(`learn`, kept in state as `quota_learned`). A refusal lowers the budget to what was in flight
when it came, so the refused job waits for at least one job to finish; it is never a failure of
its requests.

One rule keeps a thread moving: a job is always sent when nothing else of its budget is in
flight (only the provider can say whether it fits then).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agent.context import Context
from agent.providers import provider_class
from agent.providers.errors import QuotaExceededError
from agent.quota_budget import CONTEXT_FIELDS, LIMITS, Budget, Limit, configured_budget
from agent.state import Job, State
from agent.statuses import TERMINAL_JOB_STATUSES
from agent.submission import pending_intent

# How a waiting job names each limit.
_WORDS: dict[Limit, str] = {
    "tokens": "enqueued input tokens",
    "requests": "pending requests",
    "jobs": "jobs in flight",
    "bytes": "bytes of input files in flight",
}


def learned_key(job: Job) -> str:
    """Return the key under which refusals for `job`'s provider and model are learned."""
    return f"{job['provider']}/{job['model']}"


def budget_for(job: Job, ctx: Context, learned: Mapping[str, Any] | None = None) -> Budget:
    """Return the budget `job` must fit: provider defaults, the context's, what was learned."""
    budget = configured_budget(provider_class(job["provider"]).quota_defaults, ctx)
    return budget.lowered((learned or {}).get(learned_key(job)) or {})


def in_flight(job: Job) -> bool:
    """Tell whether a job holds provider quota: created and not ended."""
    return job["job_id"] is not None and job["status"] not in TERMINAL_JOB_STATUSES


def needs(job: Job) -> dict[Limit, int]:
    """Return what `job` takes of each limit once it is sent."""
    return {
        "tokens": job.get("input_tokens", 0),
        "requests": job["request_count"],
        "jobs": 1,
        "bytes": job["input_bytes"],
    }


def usage(jobs: Iterable[Job], like: Job) -> dict[Limit, int]:
    """Return what the running jobs of `like`'s provider hold (tokens: of `like`'s model only)."""
    held: dict[Limit, int] = dict.fromkeys(LIMITS, 0)
    for job in jobs:
        if job is like or not in_flight(job) or job["provider"] != like["provider"]:
            continue
        for limit, amount in needs(job).items():
            # The token pool is per model; the other caps count every model of the provider.
            if limit != "tokens" or job["model"] == like["model"]:
                held[limit] += amount
    return held


def blocking(job: Job, jobs: list[Job], budget: Budget) -> str | None:
    """Return why `job` must wait for quota (None: it may be sent now).

    A job is sent whenever nothing else of its provider is in flight, whatever its size: only
    the provider can tell then whether it fits.
    """
    held = usage(jobs, job)
    if held["jobs"] == 0:
        return None
    wanted = needs(job)
    for limit in LIMITS:
        cap = getattr(budget, limit)
        if cap is not None and held[limit] + wanted[limit] > cap:
            return (
                f"waiting for quota: {held[limit]:,} {_WORDS[limit]} in flight + "
                f"{wanted[limit]:,} > {cap:,} ({CONTEXT_FIELDS[limit]})"
            )
    return None


def learn(
    learned: Mapping[str, Any] | None, job: Job, jobs: list[Job], limit: Limit
) -> dict[str, Any]:
    """Return `learned` lowered after the provider refused `job` for `limit`.

    The new cap is what the thread's other jobs held when the refusal came: `job` then waits
    until at least one of them ends. With nothing else in flight the cap is left as it was (the
    refusal came from someone else's jobs, or the job alone is too large; the caller says which).
    """
    result = {key: dict(value) for key, value in (learned or {}).items()}
    held = usage(jobs, job)[limit]
    if held <= 0:
        return result
    entry = result.setdefault(learned_key(job), {})
    current = entry.get(limit)
    entry[limit] = held if current is None else min(current, held)
    return result


class Waves:
    """Which of a thread's intents may be sent now, and what a quota refusal changes."""

    def __init__(self, jobs: list[Job], ctx: Context, learned: Mapping[str, Any] | None) -> None:
        """Bind to the thread's job records, the run's settings and what refusals taught it."""
        self.jobs, self.ctx, self.learned = jobs, ctx, dict(learned or {})

    def _blocking(self, index: int) -> str | None:
        job = self.jobs[index]
        return blocking(job, self.jobs, budget_for(job, self.ctx, self.learned))

    def pending(self) -> list[int]:
        """Return the indexes of the intents still to be submitted, in plan order."""
        return [i for i, job in enumerate(self.jobs) if pending_intent(job)]

    def next_intent(self) -> int | None:
        """Return the first intent that fits its budget now (None: all wait, or none is left)."""
        return next((i for i in self.pending() if self._blocking(i) is None), None)

    def marked(self) -> list[Job]:
        """Return the jobs with each held-back intent saying why it waits (`Job.waiting_for`)."""
        jobs = list(self.jobs)
        for index in self.pending():
            reason = self._blocking(index)
            if reason is not None and jobs[index].get("waiting_for") != reason:
                jobs[index] = Job(**{**jobs[index], "waiting_for": reason})  # type: ignore[typeddict-item]
            elif reason is None and "waiting_for" in jobs[index]:
                jobs[index] = Job(**{k: v for k, v in jobs[index].items() if k != "waiting_for"})  # type: ignore[typeddict-item]
        return jobs

    def refused(self, index: int, exc: QuotaExceededError) -> dict[str, Any]:
        """Return the state update after the provider refused to create intent `index`.

        The intent stays; the budget drops to what else is in flight, so it waits for one of
        those jobs to end. With nothing else of the thread in flight, the quota is held by
        others (or the job alone is over it): the run ends with a retryable error, and a
        served thread tries again later.
        """
        job = self.jobs[index]
        limit = exc.limit if exc.limit in LIMITS else "jobs"
        if usage(self.jobs, job)["jobs"] == 0:
            return {
                "status": "error",
                "error": f"{exc} (nothing else of this thread is in flight: the quota is held by "
                f"other work, or job {job['job_key']} alone is over it - lower "
                "max_requests_per_job; invoke the thread again to retry)",
                "retry_later": True,
            }
        self.learned = learn(self.learned, job, self.jobs, limit)  # type: ignore[arg-type]
        return {"jobs": self.marked(), "quota_learned": self.learned, "error": None}


def can_submit(state: State, ctx: Context) -> bool:
    """Tell whether the thread has an intent to submit now (one that fits its quota)."""
    jobs = state.get("jobs") or []
    if state.get("cancel_requested") or not any(pending_intent(job) for job in jobs):
        return False
    return Waves(list(jobs), ctx, state.get("quota_learned")).next_intent() is not None
