"""The one job lifecycle of every emulated protocol: phases by the clock, finalisation, cancel.

A job never runs anywhere: its status is a pure function of the clock (`agent.emulator.clock`),
the job's creation time and the `delay` stored on it at creation. That is what lets several
processes share one state directory and agree on every status without a background worker. The
only mutations after creation are a *cancel* (it stores when it came and how many requests were
done then) and *finalisation*: the first reader that sees a terminal status takes the lock,
writes the output and error files once, and stores the final state on the job record.

`JobLifecycle` is that lifecycle bound to one protocol (its phase boundaries, its wire status
names, its 404): the route modules (`openai_routes`, `mistral_routes`, `anthropic_routes`) only
translate what it says into their protocol's statuses and JSON shapes.

Private keys of a job record (never sent on the wire):

- ``_created`` (float seconds), ``_delay`` (float seconds)
- ``_sources``: ids of the data files holding the request lines, in order
- ``_total``: number of requests; ``_failed``: sorted indices of requests that
  will fail (computed once at creation)
- ``_invalid``: the job fails validation as it leaves its queued phase (OpenAI only)
- ``_cancel_at`` / ``_cancel_done``: cancel time and the number of requests
  already done then
- ``_final``: ``{"status", "done", "ended_at"}`` once finalised
- ``_faults``: the job-shaping fault knobs read at creation, or None (see
  `agent.emulator.faults`); ``expire`` replaces the ``done`` phase by ``expired``
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agent.emulator.clock import Clock
from agent.emulator.faults import Faults, expire_limit, job_faults, shuffle_key
from agent.emulator.result_files import (
    FileMetaFactory,
    LineRenderer,
    Outputs,
    UnfinishedRenderer,
    write_outputs,
)
from agent.emulator.store import Provider, Store, current_delay
from agent.emulator.web import HttpError

# Share of the delay a cancelled job spends in its "cancelling" state (unless its protocol's
# `Timeline` says otherwise).
CANCEL_FRACTION = 0.1


@dataclass(frozen=True)
class Phase:
    """Where a job stands at a given instant.

    Attributes:
        name: One of ``queued``, ``running``, ``finalizing``, ``done``, ``failed``,
            ``expired``, ``cancelling``, ``cancelled``.
        done: How many requests (in input order) are processed.
        terminal: Whether the phase can no longer change.
    """

    name: str
    done: int

    @property
    def terminal(self) -> bool:
        """Return True for done, failed, expired and cancelled."""
        return self.name in ("done", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class Timeline:
    """The fractions of the delay at which a protocol's phases start.

    Attributes:
        start: End of the queued/validating phase.
        finalize: End of the running phase (1.0 when there is no finalizing phase).
        cancel: Share of the delay a cancelled job spends cancelling; 0 makes a cancel
            instantly terminal (Gemini).
    """

    start: float
    finalize: float
    cancel: float = CANCEL_FRACTION


def compute_phase(job: dict[str, Any], now: float, timeline: Timeline) -> Phase:
    """Compute a job's phase from the clock.

    Args:
        job: The job record.
        now: Current time in seconds since the epoch.
        timeline: The protocol's phase boundaries.

    Returns:
        The phase at `now`.
    """
    final = job.get("_final")
    if final is not None:
        return Phase(final["status"], final["done"])
    created, delay, total = job["_created"], job["_delay"], job["_total"]
    cancel_at = job.get("_cancel_at")
    if cancel_at is not None:
        name = "cancelled" if now >= cancel_at + timeline.cancel * delay else "cancelling"
        return Phase(name, job["_cancel_done"])
    elapsed = now - created
    if elapsed < timeline.start * delay:
        return Phase("queued", 0)
    if job.get("_invalid"):
        return Phase("failed", 0)
    limit = expire_limit(job)
    if limit is not None:
        # An expiring job runs until the window closes, never finalizing, and
        # gets only `limit` requests done.
        if elapsed >= delay:
            return Phase("expired", limit)
        if elapsed >= timeline.finalize * delay:
            return Phase("running", limit)
    if elapsed >= delay:
        return Phase("done", total)
    if elapsed >= timeline.finalize * delay:
        return Phase("finalizing", total)
    span = (timeline.finalize - timeline.start) * delay
    fraction = (elapsed - timeline.start * delay) / span if span > 0 else 1.0
    cap = total if limit is None else limit
    return Phase("running", min(cap, math.floor(total * fraction)))


def split_counts(job: dict[str, Any], done: int) -> tuple[int, int]:
    """Return ``(succeeded, failed)`` among the first `done` requests."""
    failed = bisect.bisect_left(job["_failed"], done)
    return done - failed, failed


def ended_at(job: dict[str, Any], phase: Phase, timeline: Timeline) -> float | None:
    """Return when a terminal phase was reached (None for a live phase)."""
    final = job.get("_final")
    if final is not None:
        return float(final["ended_at"])
    created, delay = job["_created"], job["_delay"]
    if phase.name == "cancelled":
        return float(job["_cancel_at"]) + timeline.cancel * delay
    if phase.name == "failed":
        return created + timeline.start * delay
    if phase.name in ("done", "expired"):
        return created + delay
    return None


def finalize_if_needed(
    store: Store,
    provider: Provider,
    job: dict[str, Any],
    timeline: Timeline,
    now: float,
    produce: Callable[[dict[str, Any], Phase, float], None],
) -> dict[str, Any]:
    """Persist a job's terminal state exactly once, the first time it is seen.

    The check is repeated under the lock on a fresh copy of the record, so two
    processes racing to the terminal state still generate the outputs once.

    Args:
        store: The state store.
        provider: Which protocol.
        job: The job record as last read.
        timeline: The protocol's phase boundaries.
        now: Current time.
        produce: Writes outputs for ``(job, phase, ended_at)`` and updates the
            record's public fields in place (not ``_final``, set here).

    Returns:
        The up-to-date job record.
    """
    if job.get("_final") is not None:
        return job
    phase = compute_phase(job, now, timeline)
    if not phase.terminal:
        return job
    with store.lock():
        fresh = store.get_job(provider, job["id"]) or job
        if fresh.get("_final") is not None:
            return fresh
        phase = compute_phase(fresh, now, timeline)
        ended = ended_at(fresh, phase, timeline)
        assert ended is not None
        produce(fresh, phase, ended)
        fresh["_final"] = {"status": phase.name, "done": phase.done, "ended_at": ended}
        store.put_job(provider, fresh)
        return fresh


# (job, phase, ended_at) -> writes a terminal job's outputs, updates its public fields in place
Producer = Callable[[dict[str, Any], Phase, float], None]


class JobLifecycle:
    """The shared lifecycle, bound to one protocol.

    Args:
        store: The state store.
        provider: Which protocol's jobs.
        timeline: The protocol's phase boundaries.
        statuses: The protocol's wire status of each phase name (see `Phase`).
        clock: The time source.
        produce: Writes a job's outputs when it reaches a terminal phase (called once, under
            the lock, by `refresh`).
        not_found: Builds the protocol's 404 for an unknown job id.
    """

    def __init__(
        self,
        store: Store,
        provider: Provider,
        timeline: Timeline,
        statuses: Mapping[str, str],
        clock: Clock,
        produce: Producer,
        not_found: Callable[[str], HttpError],
    ) -> None:
        """Bind the lifecycle to one protocol."""
        self.store = store
        self.provider = provider
        self.timeline = timeline
        self.statuses = statuses
        self.clock = clock
        self._produce = produce
        self._not_found = not_found

    def now(self) -> float:
        """Return the current time of this emulator's clock."""
        return self.clock.now()

    # -- creation ------------------------------------------------------------------

    @contextmanager
    def creating(self, faults: dict[str, Any] | None) -> Iterator[dict[str, Any] | None]:
        """Hold the lock while a job is scanned and stored; yield its fault knobs.

        Draws hash the job's creation order, not its random id, so a seeded run of jobs fails
        the same requests every time (and a retry still gets a fresh draw): the order is
        counted here, under the lock, and stored with the knobs.

        Args:
            faults: The job-shaping knobs of the create (`Faults.job_record`), or None.

        Yields:
            The knobs with their ``_sequence``, or None.
        """
        with self.store.lock():
            if faults is not None:
                faults = {**faults, "_sequence": len(self.store.list_jobs(self.provider))}
            yield faults

    def record(
        self,
        fields: dict[str, Any],
        *,
        now: float,
        sources: list[str],
        total: int,
        failed: list[int],
        faults: dict[str, Any] | None,
        invalid: bool = False,
        delay: float | None = None,
    ) -> dict[str, Any]:
        """Build a new job record: the protocol's public `fields` plus the lifecycle's keys.

        The delay (`delay`, the one the job's requests asked for with ``[emulator:delay=S]``,
        else `current_delay` now) is stored, so every process that reads the job later
        computes the same status.

        Returns:
            The record (not stored yet: see `save`).
        """
        return {
            **fields,
            "_created": now,
            "_delay": current_delay() if delay is None else delay,
            "_sources": sources,
            "_total": total,
            "_failed": failed,
            "_invalid": invalid,
            "_cancel_at": None,
            "_cancel_done": None,
            "_final": None,
            "_faults": faults,
        }

    def save(self, job: dict[str, Any]) -> None:
        """Persist a job record."""
        self.store.put_job(self.provider, job)

    @staticmethod
    def answer_late(faults: Faults) -> None:
        """Hold a create's answer for the ``create_delay`` fault (the job already exists).

        A real sleep, not the emulator's clock: what the fault shows is an HTTP answer that
        comes late (or never, for a client that gives up), which only wall time can do.
        """
        if faults.create_delay > 0:
            time.sleep(faults.create_delay)

    # -- reading -------------------------------------------------------------------

    def require(self, job_id: str) -> dict[str, Any]:
        """Return a job record as stored.

        Raises:
            HttpError: The protocol's 404 for an unknown id.
        """
        job = self.store.get_job(self.provider, job_id)
        if job is None:
            raise self._not_found(job_id)
        return job

    def read(self, job_id: str, now: float) -> dict[str, Any]:
        """Return a job record as of `now`, finalised if it has just become terminal.

        Raises:
            HttpError: The protocol's 404 for an unknown id.
        """
        return self.refresh(self.require(job_id), now)

    def refresh(self, job: dict[str, Any], now: float) -> dict[str, Any]:
        """Finalise `job` if it is terminal at `now` and not finalised yet; return it."""
        return finalize_if_needed(self.store, self.provider, job, self.timeline, now, self._produce)

    def newest_first(self) -> list[dict[str, Any]]:
        """Every job of the protocol, newest first (ties by id), as stored."""
        jobs = self.store.list_jobs(self.provider)
        return sorted(jobs, key=lambda j: (j["_created"], j["id"]), reverse=True)

    def in_flight(self, now: float) -> list[dict[str, Any]]:
        """Every job of the protocol not ended at `now`: what a provider's caps count.

        Read under the creation lock (`creating`), so a create's check and its save are one step.
        """
        return [
            job for job in self.store.list_jobs(self.provider) if not self.phase(job, now).terminal
        ]

    def phase(self, job: dict[str, Any], now: float) -> Phase:
        """Return where `job` stands at `now`."""
        return compute_phase(job, now, self.timeline)

    def status(self, job: dict[str, Any], phase: Phase) -> str:
        """Return the wire status of `phase` (the ``unknown_status`` fault replaces success)."""
        if phase.name == "done":
            unknown = job_faults(job).get("unknown_status")
            if unknown:
                return str(unknown)
        return self.statuses[phase.name]

    def status_now(self, job: dict[str, Any], now: float) -> str:
        """Return the wire status of `job` at `now`, finalising it first if it just ended."""
        job = self.refresh(job, now)
        return self.status(job, self.phase(job, now))

    def started_at(self, job: dict[str, Any]) -> float:
        """Return when `job` leaves (or left) its queued phase."""
        return float(job["_created"]) + self.timeline.start * float(job["_delay"])

    def ended_at(self, job: dict[str, Any], phase: Phase) -> float | None:
        """Return when a terminal `phase` was reached (None for a live phase)."""
        return ended_at(job, phase, self.timeline)

    @staticmethod
    def results_lag(job: dict[str, Any], now: float, end: float) -> bool:
        """Tell whether the ``output_lag`` fault still hides an ended job's result files."""
        return now < end + float(job_faults(job).get("output_lag") or 0.0)

    # -- changes -------------------------------------------------------------------

    def cancel(
        self, job_id: str, now: float, refuse: Callable[[str, str], HttpError]
    ) -> dict[str, Any]:
        """Cancel a live job at `now`; a repeated cancel while cancelling changes nothing.

        Args:
            job_id: The job.
            now: The time of the cancel.
            refuse: Builds the protocol's error for a job already terminal, from its id and
                its wire status.

        Returns:
            The job record after the cancel.

        Raises:
            HttpError: 404 for an unknown job, or `refuse`'s error for a terminal one.
        """
        self.require(job_id)
        with self.store.lock():
            job = self.require(job_id)
            phase = self.phase(job, now)
            if phase.terminal:
                raise refuse(job_id, self.status(job, phase))
            if phase.name != "cancelling":
                job["_cancel_at"] = now
                job["_cancel_done"] = phase.done
                self.save(job)
        return job

    def write_outputs(
        self,
        job: dict[str, Any],
        phase: Phase,
        ended: float,
        render: LineRenderer,
        make_meta: FileMetaFactory,
        unfinished: UnfinishedRenderer | None = None,
        one_file: bool = False,
    ) -> Outputs:
        """Write the result files of a job that reached terminal `phase` at `ended`.

        The first ``phase.done`` requests get a line from `render`; with `unfinished`, the
        others get its line. The ``shuffle`` fault reorders each file (see `write_outputs`).
        With `one_file`, failed lines go to the output file too (Gemini's one responses file).

        Returns:
            The ids of the files written and the token totals.
        """
        shuffle = job_faults(job).get("shuffle")
        return write_outputs(
            self.store,
            self.provider,
            job,
            phase.done,
            int(ended),
            render,
            make_meta,
            unfinished=unfinished,
            shuffle=(lambda index: shuffle_key(job, index)) if shuffle else None,
            one_file=one_file,
        )
