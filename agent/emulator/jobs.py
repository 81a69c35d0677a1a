"""Clock-driven job lifecycle shared by both protocols.

A job never runs anywhere: its status is a pure function of the wall clock, the
job's creation time and the `delay` stored on it at creation. That is what lets
several processes share one state directory and agree on every status without a
background worker. The only mutation after creation is *finalisation*: the first
reader that sees a terminal status takes the lock, writes the output and error
files once, and stores the final state on the job record.

Private keys of a job record (never sent on the wire):

- ``_created`` (float seconds), ``_delay`` (float seconds)
- ``_sources``: ids of the data files holding the request lines, in order
- ``_total``: number of requests; ``_failed``: sorted indices of requests that
  will fail (computed once at creation)
- ``_cancel_at`` / ``_cancel_done``: cancel time and the number of requests
  already done then
- ``_final``: ``{"status", "done", "ended_at"}`` once finalised
- ``_faults``: the job-shaping fault knobs read at creation, or None (see
  `agent.emulator.faults`); ``expire`` replaces the ``done`` phase by ``expired``
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.emulator.faults import expire_limit
from agent.emulator.store import Provider, Store

# Share of the delay a cancelled job spends in its "cancelling" state.
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
    """

    start: float
    finalize: float


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
        name = "cancelled" if now >= cancel_at + CANCEL_FRACTION * delay else "cancelling"
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
        return float(job["_cancel_at"]) + CANCEL_FRACTION * delay
    if phase.name == "failed":
        return created + timeline.start * delay
    if phase.name in ("done", "expired"):
        return created + delay
    return None


@dataclass(frozen=True)
class RequestLine:
    """One request read back from a job's sources.

    Attributes:
        index: 0-based position among non-blank lines of all sources.
        line: 1-based physical line number inside its source file.
        obj: The decoded line, or None if it is not valid JSON.
    """

    index: int
    line: int
    obj: Any


def iter_requests(store: Store, provider: Provider, sources: list[str]) -> Iterator[RequestLine]:
    """Stream the request lines of a job's source files, skipping blank lines.

    Args:
        store: The state store.
        provider: Which protocol's files to read.
        sources: Source file ids in order.

    Yields:
        Each request with its index, physical line number and decoded object.
    """
    index = 0
    for file_id in sources:
        for number, raw in enumerate(store.iter_file_lines(provider, file_id), start=1):
            if not raw.strip():
                continue
            try:
                obj: Any = json.loads(raw)
            except ValueError:
                obj = None
            yield RequestLine(index, number, obj)
            index += 1


# (request, created) -> (succeeded, output line, (prompt_tokens, completion_tokens))
LineRenderer = Callable[[RequestLine, int], tuple[bool, dict[str, Any], tuple[int, int]]]
# (job, kind "output"|"error", size, lines) -> file metadata to store
FileMetaFactory = Callable[[dict[str, Any], str, int, int], dict[str, Any]]
# request not processed (expired) -> its error line, or None for no line
UnfinishedRenderer = Callable[[RequestLine], dict[str, Any] | None]


@dataclass
class Outputs:
    """What finalisation produced.

    Attributes:
        output_file: Id of the success file, or None when no line succeeded.
        error_file: Id of the error file, or None when no line failed.
        prompt_tokens: Sum over succeeded lines.
        completion_tokens: Sum over succeeded lines.
    """

    output_file: str | None
    error_file: str | None
    prompt_tokens: int
    completion_tokens: int


def write_outputs(
    store: Store,
    provider: Provider,
    job: dict[str, Any],
    done: int,
    created: int,
    render: LineRenderer,
    make_meta: FileMetaFactory,
    unfinished: UnfinishedRenderer | None = None,
    shuffle: Callable[[int], float] | None = None,
) -> Outputs:
    """Answer the first `done` requests and write the output and error files.

    Both files are written in one pass over the input, line by line, so memory
    stays flat whatever the batch size. A file with no line is not created.
    With `shuffle` (a fault knob, for tests), lines are buffered and written
    sorted by ``shuffle(index)`` instead.

    Args:
        store: The state store.
        provider: Which protocol.
        job: The job record.
        done: How many requests (in input order) get a line.
        created: The ``created`` timestamp to put in reply bodies.
        render: Turns a request into an output or error line.
        make_meta: Builds the API metadata of a result file.
        unfinished: If given, called for every request past `done`; a returned
            line goes to the error file (OpenAI ``batch_expired``).
        shuffle: If given, the sort key of a line from its request index.

    Returns:
        The ids of the files written and the token totals.
    """
    ids = {
        "output": make_meta(job, "output", 0, 0)["id"],
        "error": make_meta(job, "error", 0, 0)["id"],
    }
    counts = {"output": 0, "error": 0}
    sizes = {"output": 0, "error": 0}
    prompt = completion = 0
    out_path = store.file_data_path(provider, ids["output"])
    err_path = store.file_data_path(provider, ids["error"])
    buffered: dict[str, list[tuple[float, bytes]]] = {"output": [], "error": []}
    with store.atomic_writer(out_path) as out, store.atomic_writer(err_path) as err:
        handles = {"output": out, "error": err}
        for request in iter_requests(store, provider, job["_sources"]):
            ok = False
            line: dict[str, Any] | None
            if request.index >= done:
                if unfinished is None:
                    break
                line = unfinished(request)
                if line is None:
                    continue
            else:
                ok, line, (p_tokens, c_tokens) = render(request, created)
                if ok:
                    prompt += p_tokens
                    completion += c_tokens
            data = json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            kind = "output" if ok else "error"
            if shuffle is None:
                handles[kind].write(data)
            else:
                buffered[kind].append((shuffle(request.index), data))
            counts[kind] += 1
            sizes[kind] += len(data)
        for kind, rows in buffered.items():
            for _, data in sorted(rows, key=lambda row: row[0]):
                handles[kind].write(data)
    result: dict[str, str | None] = {}
    for kind in ("output", "error"):
        file_id = ids[kind]
        if counts[kind] == 0:
            # No line of this kind: drop the empty data file, report no file id.
            store.file_data_path(provider, file_id).unlink(missing_ok=True)
            result[kind] = None
            continue
        meta = make_meta(job, kind, sizes[kind], counts[kind])
        meta["id"] = file_id
        meta["_size"] = sizes[kind]
        store.put_file_meta(provider, meta)
        result[kind] = file_id
    return Outputs(result["output"], result["error"], prompt, completion)


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
