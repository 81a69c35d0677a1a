"""A deadline's fallback: send the requests the batch did not answer through the chat API.

At the deadline (`agent.deadline`) the graph cancels what has not finished and collects every
result already produced. The requests still missing (cancelled, expired, never submitted: see
`agent.deadline.is_missing`; not the ones that failed for a request error such as a 400) are
then re-sent one by one, each from its job's own input line, through the provider's chat API
(`BatchProvider.realtime_line`): in `realtime` at the standard price, or on OpenAI's or
Gemini's `flex` tier at the batch price. Their results have the batch's format and say how they were obtained
(`via`).

- Inputs: the `deadline` node keeps every job's input lines in the store before anything is
  collected (`keep_input`), since collecting deletes the provider's copy.
- Budget: before anything is sent, the fallback's cost is estimated (`agent.estimate`) at the
  tier's price; when the cost so far plus that exceeds `max_cost`, nothing is sent and the
  requests keep their error.
- Concurrency and rate limits: at most `fallback_concurrency` calls are in flight; a 429 or a
  server fault is retried by the SDK, then here with a growing pause (`agent.pause`, so a
  test's virtual clock), up to `RETRIES` times; a request that still fails keeps its batch error
  and is tried again by the next invocation of the thread.
- Journal: each result is put in the store as it arrives (`ThreadData.put_fallback_result`);
  a run killed mid-fallback re-sends only the requests without an entry, so at most the calls in
  flight at the kill (`fallback_concurrency`) are ever sent twice.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from agent.bulk import ResultSpool, ThreadData
from agent.context import Context
from agent.deadline import is_missing
from agent.estimate import price_plan
from agent.pause import pause
from agent.planning import planned_spec
from agent.pricing import Cost, TokenTally, format_usd, total_cost
from agent.providers import provider_for_job
from agent.providers.base import BatchProvider, RequestOutcome
from agent.providers.errors import ProviderError, TransientProviderError
from agent.results import Totals, outcome_result, put_copies, state_results
from agent.state import Job, State
from agent.structured import OutputSpec
from agent.submission import built_input_file

logger = logging.getLogger("batch_agent")
# Retries of one request after the SDK's own (a 429 that outlasts them: flex capacity).
RETRIES = 6
FIRST_BACKOFF_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 120.0


@dataclass(frozen=True)
class Missing:
    """One request to re-send: its id, the job whose input line holds it, and that line."""

    request_id: str
    job: Job
    raw: bytes


def keep_input(job: Job, jobs: list[Job], state: State, data: ThreadData) -> None:
    """Keep `job`'s input lines in the store, for the fallback (collecting deletes the files).

    An intent's lines come from the spool (rebuilt from the source if need be), a submitted
    job's from the provider's copy of its input file; a provider that keeps no copy has them
    in the store already. A job whose lines are gone (files deleted by an earlier collect) has
    none kept: its requests cannot be re-sent, and keep their error.
    """
    if data.has_input(job["job_key"]):
        return
    counts = job["counts"]
    if job["status"] == "done" and counts["total"] and counts["succeeded"] == counts["total"]:
        return  # every request answered: nothing of it will be missing
    if job["job_id"] is None:
        data.put_input(job["job_key"], built_input_file(job, jobs, state, data))
        return
    provider = provider_for_job(job)
    if not provider.keeps_input or not job["input_file_id"] or job.get("files_deleted"):
        return
    with tempfile.TemporaryDirectory(prefix="batch-agent-fallback-") as directory:
        path = Path(directory) / "input.jsonl"
        try:
            with path.open("wb") as fh:
                for _, raw in provider.input_lines(job):
                    fh.write(raw.rstrip(b"\n") + b"\n")
        except TransientProviderError:
            raise  # the node's retry policy tries again
        except ProviderError as exc:
            # Gone at the provider (deleted, expired): the deadline still cancels on time.
            logger.warning(
                "could not keep the input of job %s for the deadline's fallback (its missing "
                "requests keep their error): %s",
                job["job_id"],
                exc,
            )
            return
        data.put_input(job["job_key"], path)


def run_fallback(state: State, ctx: Context, data: ThreadData) -> dict[str, Any]:
    """Re-send the missing requests, journal each result, and fold them into the results.

    Args:
        state: The thread's state after the deadline's collect.
        ctx: The run's settings (`max_cost`, `fallback_concurrency`, prices).
        data: The thread's bulk data (results, kept inputs, the journal).

    Returns:
        The state update: counts, usage, cost and `cost_by_via`, the `fallback` report, and
        the thread's status (`error` with `retry_later` while some requests could not be sent).
    """
    via = str(state.get("fallback_tier") or ctx.fallback)
    flex = via == "flex"
    count = state.get("request_count", 0)
    journal = data.fallback_results()
    missing, unsendable = _missing(state, data, set(journal))
    todo = [m for m in missing if m.request_id not in journal]
    estimate = _estimate(todo, via, ctx)
    report: dict[str, Any] = {
        "via": via,
        "requests": len(missing) + unsendable,
        "sent": 0,
        "succeeded": 0,
        "failed": 0,
        "not_sent": unsendable,
        "estimate_usd": estimate,
        "refused": None,
    }
    refusal = _over_budget(state, ctx, journal, todo, estimate, via)
    if refusal is not None:
        report["refused"] = refusal
        # Finished as a deadline without a fallback finishes: what the batch gave, and why.
        return {
            "fallback_report": report,
            "status": "cancelled",
            "error": refusal,
            "retry_later": False,
        }
    spec = planned_spec(state)
    given_up: list[str] = []
    for entry, outcome in _sent(todo, flex, spec, max(1, ctx.fallback_concurrency)):
        if outcome is None:
            given_up.append(entry.request_id)
            continue
        result = _result(entry, outcome, ctx, spec, via)
        # Journaled at once: a run killed now never pays for this request again.
        data.put_fallback_result(entry.request_id, result, entry.job["job_key"])
        journal[entry.request_id] = {"result": result, "job_key": entry.job["job_key"]}
        report["sent"] += 1
    for journaled in journal.values():
        report["succeeded" if journaled["result"]["status"] == "succeeded" else "failed"] += 1
    _merge(state, data, journal)
    totals = Totals()
    for stored in data.iter_results(count):
        totals.add(stored)
    update: dict[str, Any] = {
        "fallback_report": report,
        "results": state_results(data, count, ctx),
        "counts": totals.counts(),
        "collected_counts": totals.counts(),
        "usage": totals.usage,
        **_costs(state, ctx, journal),
        "status": "completed",
        "error": None,
        "retry_later": False,
    }
    if given_up:
        update.update(
            status="error",
            error=f"{len(given_up)} requests could not be sent {via} at the deadline (rate "
            "limits or server faults outlasted the retries); they keep their batch error: "
            "invoke the thread again to retry them",
            retry_later=True,
        )
    return update


def _missing(state: State, data: ThreadData, journaled: set[str]) -> tuple[list[Missing], int]:
    """Return the requests to re-send (with their input lines), and how many have no line."""
    count = state.get("request_count", 0)
    wanted = {
        stored["id"]
        for stored in data.iter_results(count)
        if is_missing(stored) or stored["id"] in journaled
    }
    # The last job that held a request is the one whose line to send (follow-ups come later).
    job_of: dict[str, Job] = {}
    for job in sorted(state.get("jobs") or [], key=lambda j: j["attempt"]):
        for request_id in data.job_ids(job["job_key"], job["request_count"]):
            if request_id in wanted:
                job_of[request_id] = job
    found: list[Missing] = []
    by_job: dict[str, list[str]] = {}
    for request_id, job in job_of.items():
        by_job.setdefault(job["job_key"], []).append(request_id)
    jobs = {job["job_key"]: job for job in job_of.values()}
    for key, ids in by_job.items():
        job = jobs[key]
        if not data.has_input(key):
            continue
        needed = set(ids)
        job_ids = data.job_ids(key, job["request_count"])
        known = set(job_ids)
        provider = provider_for_job(job)
        for position, raw in enumerate(_lines(data, job)):
            # A line names its request (a kept line holds the request's own id); else the
            # lines are in the order of the job's ids, as they were built.
            request_id = provider.line_id(raw)
            if request_id not in known:
                request_id = job_ids[position] if position < len(job_ids) else ""
            if request_id in needed:
                found.append(Missing(request_id, job, raw))
    return found, len(wanted) - len(found)


def _lines(data: ThreadData, job: Job) -> Iterator[bytes]:
    """Yield the job's kept input lines, in the order of its request ids."""
    return data.input_lines(job["job_key"], job["request_count"])


def _sent(
    todo: list[Missing], flex: bool, spec: OutputSpec | None, concurrency: int
) -> Iterator[tuple[Missing, RequestOutcome | None]]:
    """Send `todo` with at most `concurrency` calls in flight; yield each outcome as it comes.

    A new call starts only as one ends, so a run that stops (killed, or an error raised by
    the caller) leaves no queue of calls behind: at most `concurrency` were in flight.
    """
    pending = iter(todo)
    # One SDK client per job, shared by the calls in flight (the clients are thread-safe).
    providers: dict[str, BatchProvider] = {}

    def start(entry: Missing) -> Future[RequestOutcome | None]:
        key = entry.job["job_key"]
        if key not in providers:
            providers[key] = provider_for_job(entry.job)
        return pool.submit(_send, providers[key], entry, flex, spec)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        running: dict[Future[RequestOutcome | None], Missing] = {}
        try:
            for entry in islice(pending, concurrency):
                running[start(entry)] = entry
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    entry = running.pop(future)
                    # Journaled by the caller before the next call starts.
                    yield entry, future.result()
                    for following in islice(pending, 1):
                        running[start(following)] = following
        finally:
            for future in running:
                future.cancel()


def _send(
    provider: BatchProvider, entry: Missing, flex: bool, spec: OutputSpec | None
) -> RequestOutcome | None:
    """Send one request, backing off on passing faults; None when they outlast the retries."""
    for attempt in range(RETRIES + 1):
        try:
            return provider.realtime_line(entry.job, entry.raw, flex=flex, spec=spec)
        except TransientProviderError:
            if attempt == RETRIES:
                return None
            pause(min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2**attempt))
    return None


def _result(
    entry: Missing,
    outcome: RequestOutcome,
    ctx: Context,
    spec: OutputSpec | None,
    via: str,
) -> dict[str, Any]:
    """Return the stored result of a fallback outcome: the batch's format, with its `via`."""
    result = outcome_result(
        entry.job,
        entry.request_id,
        outcome,
        entry.job["attempt"],
        spec,
        validate=ctx.validate_schema,
    )
    result["via"] = via
    return result


def _merge(state: State, data: ThreadData, journal: dict[str, dict[str, Any]]) -> None:
    """Write the journaled results (and their duplicates' copies) over the stored ones."""
    if not journal:
        return
    count = state.get("request_count", 0)
    copies_of = data.duplicates_by_original(state.get("duplicate_count", 0))
    positions = {request_id: n for n, request_id in enumerate(data.request_ids(count))}
    with ResultSpool(data, first_round=False, count=count) as spool:
        for request_id, entry in journal.items():
            spool.put(positions[request_id], entry["result"])
            put_copies(spool, positions, copies_of, request_id, entry["result"])
        spool.merge()


def _estimate(todo: list[Missing], via: str, ctx: Context) -> float | None:
    """Estimate what sending `todo` costs at the tier's price (flex: batch; else realtime)."""
    if not todo:
        return 0.0
    per_job: dict[str, dict[str, Any]] = {}
    providers: dict[str, str] = {}
    for entry in todo:
        job = entry.job
        row = per_job.setdefault(
            job["job_key"],
            {"model": job["model"], "requests": 0, "input_tokens": 0, "max_output_tokens": 0},
        )
        providers[job["job_key"]] = job["provider"]
        row["requests"] += 1
        # The job's planned input tokens, shared evenly among its requests.
        row["input_tokens"] += -(-int(job.get("input_tokens", 0)) // max(1, job["request_count"]))
        cap = job["params"].get("max_tokens")
        if cap is None or row["max_output_tokens"] is None:
            row["max_output_tokens"] = None
        else:
            row["max_output_tokens"] += int(cap)
    total = 0.0
    for key, row in per_job.items():
        _, estimate = price_plan([row], providers[key], ctx.price_override)
        usd = estimate["batch_usd"] if via == "flex" else estimate["realtime_usd"]
        if usd is None:
            return None
        total += usd
    return total


def _over_budget(
    state: State,
    ctx: Context,
    journal: dict[str, dict[str, Any]],
    todo: list[Missing],
    estimate: float | None,
    via: str,
) -> str | None:
    """Return why the fallback may not run under `max_cost` (None: it may)."""
    if ctx.max_cost is None or not todo:
        return None
    spent = _paid(state, ctx, journal)
    if estimate is None or spent is None:
        return (
            f"the deadline fallback was not run: its {via} cost cannot be checked against "
            f"max_cost {format_usd(ctx.max_cost)} (unknown price); {len(todo)} requests keep "
            "their error"
        )
    if spent + estimate > ctx.max_cost:
        return (
            f"the deadline fallback was not run: {len(todo)} requests {via} are estimated at "
            f"{format_usd(estimate)}, and with {format_usd(spent)} spent that exceeds max_cost "
            f"{format_usd(ctx.max_cost)}; they keep their error"
        )
    return None


def _paid(state: State, ctx: Context, journal: dict[str, dict[str, Any]]) -> float | None:
    """Return what the thread's results cost so far: the batch, plus the journaled fallback."""
    by_via = _costs(state, ctx, journal)["cost_by_via"]
    values = list(by_via.values())
    return None if any(v is None for v in values) else sum(v or 0.0 for v in values)


def _costs(state: State, ctx: Context, journal: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return the thread's `cost` (batch jobs and fallback) and `cost_by_via`."""
    jobs = {job["job_key"]: job for job in state.get("jobs") or []}
    job_costs: list[Cost] = [job["cost"] for job in jobs.values() if "cost" in job]
    batch = total_cost(job_costs)
    by_via: dict[str, float | None] = {"batch": batch["batch_usd"] if batch else 0.0}
    tallies: dict[tuple[str, str, str], TokenTally] = {}
    for entry in journal.values():
        job = jobs.get(entry["job_key"])
        provider, model = (job["provider"], job["model"]) if job else ("", "")
        result = entry["result"]
        tallies.setdefault((provider, model, result["via"]), TokenTally()).add(result)
    fallback_costs: list[Cost] = []
    for (provider, model, via), tally in tallies.items():
        cost = tally.cost(provider, model, when=None, price_override=ctx.price_override)
        fallback_costs.append(cost)
        paid = cost["batch_usd"] if via == "flex" else cost["realtime_usd"]
        earlier = by_via.get(via, 0.0)
        by_via[via] = None if paid is None or earlier is None else earlier + paid
    return {"cost": total_cost(job_costs + fallback_costs), "cost_by_via": by_via}
