"""Input, full and output state of the batch graph.

The state is deliberately small and JSON-like. The request records arrive in `requests` and are
cleared by `submit` once they are uploaded: SqliteSaver writes the whole state into every
checkpoint, so keeping thousands of prompts there would re-write them on every poll.

Every field has a description, which LangGraph Studio shows next to it (input, output and state
schemas). Fields only the full `State` holds are the graph's own bookkeeping: their descriptions
start with "Internal:", and callers should not set them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    TypeVar,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

from langchain_core.messages import AIMessage
from pydantic import ConfigDict, Field, with_config
from pydantic._internal._docs_extraction import extract_docstrings_from_cls
from typing_extensions import TypedDict  # pydantic needs this TypedDict on Python < 3.12

from agent.endpoints import Endpoint
from agent.estimate import Estimate
from agent.pricing import Cost
from agent.statuses import JobStatus, ResultStatus, ThreadStatus

# Attribute docstrings become JSON-schema descriptions, which Studio shows next to each field.
_DOCSTRING_DESCRIPTIONS = ConfigDict(use_attribute_docstrings=True)
Via = Literal["batch", "realtime", "flex"]
_T = TypeVar("_T")


def _describe_channels(cls: _T) -> _T:
    """Copy each of a state class's attribute docstrings into the field's type.

    The server builds the state schema Studio shows from the graph's channels: one per
    top-level field, typed with the field's annotation, so pydantic never sees the class and
    its `use_attribute_docstrings`. `NotRequired[T]` becomes `NotRequired[Annotated[T,
    Field(description=<docstring>)]]`, which carries the description into that schema. Nested
    records (`Job`, `Result`, ...) are read by pydantic as classes and keep plain docstrings.
    """
    hints = get_type_hints(cls, include_extras=True)
    for name, text in extract_docstrings_from_cls(cast(type, cls), use_inspect=True).items():
        hint, described = hints[name], Field(description=text)
        if get_origin(hint) is NotRequired:
            hint = NotRequired[_described(get_args(hint)[0], described)]
        else:
            hint = _described(hint, described)
        cls.__annotations__[name] = hint
    return cls


def _described(hint: Any, described: Any) -> Any:
    """Return `hint` annotated with `described`, before any metadata it has (a reducer).

    LangGraph takes a channel's reducer from the *last* `Annotated` metadata, so the
    description goes first.
    """
    if get_origin(hint) is Annotated:
        base, *meta = get_args(hint)
        return Annotated[(base, described, *meta)]  # type: ignore[valid-type]
    return Annotated[hint, described]


@with_config(_DOCSTRING_DESCRIPTIONS)
class Counts(TypedDict):
    """Request counts, summed over a thread's jobs."""

    total: int
    """Requests in the batch."""
    succeeded: int
    """Requests answered."""
    failed: int
    """Requests that failed (their `error` says why)."""
    pending: int
    """Requests not finished yet."""


@with_config(_DOCSTRING_DESCRIPTIONS)
class Usage(TypedDict):
    """Token usage totals."""

    input_tokens: int
    """Input (prompt) tokens."""
    output_tokens: int
    """Output (completion) tokens."""
    total_tokens: int
    """Input plus output tokens."""


@with_config(_DOCSTRING_DESCRIPTIONS)
class RequestError(TypedDict):
    """Why one request failed."""

    code: str
    """A short, stable reason, e.g. 'no_result', 'refusal', 'output_parsing' or the provider's
    error code."""
    message: str
    """The provider's (or the parser's) message."""


@with_config(_DOCSTRING_DESCRIPTIONS)
class Job(TypedDict):
    """One provider batch job: the 'parking ticket' that lets any process resume the thread.

    The record is written as an *intent* (no `job_id` yet) before the provider is called; its
    `job_key` travels with the job (in its metadata, or in its requests' custom ids), so a job
    whose create response was lost is found and adopted instead of created twice.
    """

    job_key: str
    """Deterministic key (thread, request set, attempt, part), stored in the job's metadata."""
    attempt: int
    """1 for the first submission, 2+ for follow-up jobs that retry failed requests."""
    provider: str
    """Protocol used: 'openai', 'mistral', 'anthropic' or 'gemini'."""
    job_id: str | None
    """The provider's job id; None while the job is only an intent."""
    model: str
    """The model the job runs (what it is created, priced and billed with)."""
    params: dict[str, Any]
    """The run's settings of its chat model (the context's temperature, max_tokens, top_p and
    model_settings), kept so a resumed submit builds the same file and collect parses alike."""
    chat_model: NotRequired[str]
    """The model of the chat model object that built the bodies and parses the answers: the
    run's, also when the requests named `model` themselves, as `llm.invoke(msgs, model=X)` keeps
    `llm`'s rules. Absent when it is `model` itself (and in records written before it existed)."""
    endpoint: NotRequired[Endpoint]
    """What the job's requests call: 'chat', 'responses' (OpenAI's Responses API) or
    'embeddings' (`agent.endpoints`). Absent in records written before it existed: 'chat'."""
    request_count: int
    """Requests in this job; their ids are in the store (`agent.bulk`), not in state."""
    input_bytes: int
    """Size of the job's input file in bytes."""
    input_tokens: NotRequired[int]
    """Estimated input tokens of the job's requests: what it holds of an enqueued-token quota
    while it runs (`agent.quotas`). Absent in records written before it existed: 0."""
    waiting_for: NotRequired[str]
    """For an intent held back: why it waits (the quota that is full while earlier jobs run)."""
    refused_jobs: NotRequired[list[str]]
    """Provider jobs refused for a quota (`token_limit_exceeded`) before this one was created
    for the same requests: none of their requests ran, and none is ever adopted again."""
    retry_of: str | None
    """For a follow-up job, the `job_key` of the job whose failed requests it resubmits."""
    intent_at: float
    """When the intent was recorded (epoch seconds), before the provider was called."""
    created_at: float | None
    """When the provider created the job (epoch seconds); None while it is an intent."""
    input_file_id: str | None
    """The provider's id of the uploaded input file (None: not uploaded, or no file API)."""
    emulated: bool
    """True when the job lives in the in-process offline emulator (synthetic answers)."""
    base_url: str
    """The endpoint the job was created on ('' for the provider's default or the emulator)."""
    organization: NotRequired[str]
    """The OpenAI organization the job was created in ('' or absent: the SDK's default)."""
    provider_status: str
    """The provider's raw status string, kept as-is."""
    status: JobStatus
    """The provider status normalised: intent, queued, running, cancelling, done or failed."""
    counts: Counts
    """This job's request counts, as the provider last reported them."""
    output_file_id: str | None
    """The provider's id of the job's output file, once there is one."""
    error_file_id: str | None
    """The provider's id of the job's error file, once there is one."""
    errors: list[str]
    """Batch-level errors and notes (validation failures, an unknown status, missing output)."""
    terminal_since: float | None
    """When the job was first seen terminal without output files (some providers lag)."""
    cancelled: NotRequired[bool]
    """True once the job ended because it was cancelled (or was cancelled before it was sent)."""
    retryable: NotRequired[bool]
    """True for a job that failed as a whole for a passing reason: its requests are retried."""
    files_deleted: NotRequired[bool]
    """True once the job's files at the provider were deleted (or a delete was tried and
    logged), after its results were stored; absent while they are kept (`Context.keep_files`)."""
    parked: NotRequired[bool]
    """True once the job's results were stored as it ended, while later jobs of the thread
    waited for quota (`agent.parking`): its files are deleted then, and its round's collect
    reads the store."""
    cost: NotRequired[Cost]
    """Tokens of the collected results and their batch and realtime cost (`agent.pricing`)."""
    unverified: NotRequired[bool]
    """True for a job adopted without proof that it is this intent's (a provider whose jobs
    carry no metadata, while the batch still runs); checked once it ends, released if not ours."""


def flagged(record: Mapping[str, Any], **flags: bool) -> Job:
    """Return a copy of a job record with each flag present when true and absent when false.

    Readers take an absent flag as false (`job.get("cancelled")`), and every byte of a job
    record is written again in each checkpoint of the thread.
    """
    out = dict(record)
    for name, on in flags.items():
        if on:
            out[name] = True
        else:
            out.pop(name, None)
    return cast(Job, out)


class JobChange(TypedDict):
    """What a status check changed in one job record (`changed_jobs`, applied by `merge_jobs`)."""

    job_key: str
    """The record's `job_key`."""
    set: dict[str, Any]
    """Fields with a new value."""
    unset: list[str]
    """Fields the record no longer has."""


class JobChanges(TypedDict):
    """An update of the `jobs` channel that names only the changed fields of changed records."""

    changes: list[JobChange]
    """One entry per changed record."""


def merge_jobs(current: list[Job] | None, update: list[Job] | JobChanges | None) -> list[Job]:
    """Reduce the `jobs` channel: records replace those with their `job_key`; changes patch them.

    Planning, submit and collect return whole records: each replaces the record with its key
    (a new key is appended; records are never dropped). A status check returns `JobChanges`
    (`changed_jobs`): the fields that moved, so a poll step writes a few bytes per job that
    progressed instead of every record again.
    """
    merged = list(current or [])
    if not update:
        return merged
    where = {job["job_key"]: index for index, job in enumerate(merged)}
    if isinstance(update, dict):
        for change in update["changes"]:
            index = where.get(change["job_key"])
            if index is None:  # a record the check added: its changes are all of it
                where[change["job_key"]] = len(merged)
                merged.append(cast(Job, dict(change["set"])))
                continue
            patched = {**merged[index], **change["set"]}
            for name in change["unset"]:
                patched.pop(name, None)
            merged[index] = cast(Job, patched)
        return merged
    for job in update:
        index = where.get(job["job_key"])
        if index is None:
            where[job["job_key"]] = len(merged)
            merged.append(job)
        else:
            merged[index] = job
    return merged


def changed_jobs(before: list[Job], after: list[Job]) -> JobChanges:
    """Return what changed from `before`'s records to `after`'s, as the update `merge_jobs` applies."""
    held: dict[str, Mapping[str, Any]] = {job["job_key"]: job for job in before}
    changes: list[JobChange] = []
    for job in after:
        old: Mapping[str, Any] = held.get(job["job_key"], {})
        if old == job:
            continue
        changes.append(
            JobChange(
                job_key=job["job_key"],
                set={name: value for name, value in job.items() if old.get(name, _ABSENT) != value},
                unset=[name for name in old if name not in job],
            )
        )
    return JobChanges(changes=changes)


# Tells a field that is absent from one that holds None.
_ABSENT = object()


@with_config(_DOCSTRING_DESCRIPTIONS)
class Dedup(TypedDict):
    """Identical requests sent once: how many, and what that saved."""

    requests: int
    """Requests answered from an identical earlier request instead of being sent."""
    estimated_batch_usd: float | None
    """At planning: what sending them would have cost at the batch price (None: unknown)."""
    saved_batch_usd: float | None
    """Once collected: their answers' tokens at the batch price (None: not yet, or unknown)."""
    saved_realtime_usd: float | None
    """The same tokens at the realtime price."""


@with_config(_DOCSTRING_DESCRIPTIONS)
class Result(TypedDict):
    """The outcome of one request, in input order."""

    id: str
    """The request's id (its `id` or `custom_id` in the input)."""
    status: ResultStatus
    """'succeeded' (an answer in `message`) or 'failed' (the reason in `error`)."""
    message: AIMessage | None
    """The `AIMessage` the realtime LangChain call would have returned, with `usage_metadata`."""
    usage: Usage
    """This request's token usage."""
    error: RequestError | None
    """Why the request failed; None when it succeeded."""
    attempts: int
    """How many jobs this request went through (1 unless it was retried)."""
    via: NotRequired[Via]
    """How the result was obtained: 'batch', or at a deadline 'realtime' / 'flex' (the
    fallback sent the request through the chat API, `agent.fallback`)."""
    duplicate_of: NotRequired[str]
    """Set when this request was identical to an earlier one and got its answer (`dedupe`)."""
    tool_calls: NotRequired[list[dict[str, Any]]]
    """With tools or a response schema: the answer's tool calls `{name, args, id, type}`."""
    parsed: NotRequired[Any]
    """With a response schema: what the model's output parser makes of the answer, as realtime
    `.invoke()` returns it (None when it did not parse or the model called a tool instead); a
    rejected answer sets `error` (`refusal`, `output_parsing`; `schema` with `validate_schema`)."""


@with_config(_DOCSTRING_DESCRIPTIONS)
@_describe_channels
class InputState(TypedDict):
    """What a caller sends to start a batch (or nothing, to resume a thread)."""

    requests: NotRequired[list[dict[str, Any]]]
    """Request records: `{"id", "prompt"}`, `{"id", "messages": [...]}` (each with optional
    `"params"`), or OpenAI batch lines `{"custom_id", "method", "url", "body"}`."""
    input_path: NotRequired[str]
    """Instead of `requests`: a JSONL/TXT request file readable by the graph's process, of any
    size (it is streamed, never loaded into state)."""
    embed: NotRequired[list[str | dict[str, Any]] | bool]
    """Embed texts instead of chatting: a list of texts or `{"id", "text"}` records (ids
    `text-1`, `text-2`, ... for plain texts), or `true` with `requests` / `input_path` holding
    such records. Each text gets one vector (`agent.endpoints`); the vectors are kept in the
    store's result pages as float32, never in state (`batch-agent results --format parquet`)."""
    dry_run: NotRequired[bool]
    """Plan only: check the requests and report jobs, requests and bytes per job in `plan`,
    without uploading anything."""
    cancel: NotRequired[bool]
    """Set to true to cancel the thread's provider jobs and collect their partial results."""
    tools: NotRequired[list[dict[str, Any]] | None]
    """Tool definitions for every request (as `bind_tools` takes them, e.g. OpenAI function
    tools `{"type": "function", "function": {"name", "description", "parameters"}}`); answers
    carry `tool_calls`. Part of the request set: changing them is a new set."""
    tool_choice: NotRequired[str | dict[str, Any] | None]
    """`bind_tools`' tool_choice: a tool name, "auto", "any"/"required" or "none"."""
    response_schema: NotRequired[dict[str, Any] | None]
    """JSON schema of the answer (with a top-level "title"), as `with_structured_output` takes
    it; each answer is parsed into `parsed` as `.invoke()` parses it (validated against the
    schema too when the context sets `validate_schema`)."""
    schema_method: NotRequired[str | None]
    """`with_structured_output`'s method ("json_schema", "function_calling", "json_mode");
    empty uses the provider's default."""
    strict: NotRequired[bool | None]
    """`strict` for the tools / schema (OpenAI structured outputs); empty leaves it unset."""
    new_thread: NotRequired[bool]
    """Set by a caller that just made up this thread's id (the CLI and `run_batch` do): the
    thread has no earlier life, so it skips looking for jobs one created (after a lost checkpoint
    database, a thread re-run under its old id adopts them)."""


@with_config(_DOCSTRING_DESCRIPTIONS)
@_describe_channels
class OutputState(TypedDict):
    """What a run returns: progress, and the results once collected."""

    status: NotRequired[ThreadStatus]
    """The thread's status: new, submitted (jobs created, none running yet), running,
    completed, failed, cancelled, or error (see `error`; invoking the thread again resumes
    it)."""
    jobs: NotRequired[Annotated[list[Job], merge_jobs]]
    """One record per provider job: its id, raw and normalised status, counts and cost."""
    counts: NotRequired[Counts]
    """Request counts over all jobs: total, succeeded, failed, pending."""
    results: NotRequired[list[Result]]
    """Results in input order, kept in state only for batches up to `results_in_state`
    requests; every batch's results are also in the store (see `results_store`)."""
    results_store: NotRequired[dict[str, Any] | None]
    """Where the results live in the store: `{"namespace", "pages", "page_size", "count"}`."""
    plan: NotRequired[list[dict[str, Any]]]
    """From a dry run: jobs, requests, bytes, estimated tokens and cost per job. A submitted
    batch keeps the same per job in `jobs` (and the totals in `estimate`), not here: the state is
    written into every checkpoint."""
    usage: NotRequired[Usage]
    """Token usage summed over the collected results."""
    cost: NotRequired[Cost | None]
    """The collected batch's cost at the batch and realtime price, summed over its jobs."""
    estimate: NotRequired[Estimate | None]
    """Estimated input tokens and cost, from planning (a dry run, or before submitting)."""
    error: NotRequired[str | None]
    """What went wrong: the provider error that stopped the last run (status `error`; it
    says whether to fix the cause or just invoke the thread again), or why the jobs failed
    (status `failed`); None otherwise."""
    dedup: NotRequired[Dedup | None]
    """Identical requests sent once (context `dedupe`): count, estimated and actual saving."""
    next_check_at: NotRequired[float | None]
    """On a LangGraph server: when the self-scheduled next poll runs (epoch seconds); None when
    nothing is booked (finished, standalone, or `self_schedule` off)."""
    webhook: NotRequired[dict[str, Any] | None]
    """The completion notice: `{"target" (scheme and host only), "sent_at", "error"}`."""
    deadline_at: NotRequired[float | None]
    """The thread's deadline (epoch seconds), fixed when it planned (`Context.deadline`; a
    duration counts from then); None: no deadline."""
    cost_by_via: NotRequired[dict[str, float | None]]
    """What the results cost by how they were obtained: `{"batch", "flex", "realtime"}` ->
    USD (None: unknown price); realtime at the standard price, flex at the batch price."""
    fallback_report: NotRequired[dict[str, Any] | None]
    """At a deadline with a fallback: `{"via", "requests" (missing ones), "sent", "succeeded",
    "failed", "estimate_usd", "refused"}` (`agent.fallback`)."""


@with_config(_DOCSTRING_DESCRIPTIONS)
@_describe_channels
class State(InputState, OutputState):
    """The full, checkpointed state of one batch thread."""

    request_count: NotRequired[int]
    """Internal: requests in the batch; their ids are in the store in input order (`agent.bulk`)."""
    endpoint: NotRequired[Endpoint]
    """Internal: what the thread's requests call ('chat', 'responses', 'embeddings'), decided
    when the batch was planned; every job records its own too (`Job.endpoint`)."""
    duplicate_count: NotRequired[int]
    """Internal: requests not sent because an identical one was (their pairs are in the store)."""
    system_prompt: NotRequired[str]
    """Internal: the system prompt the batch was planned with (a resumed submit rebuilds the same
    files)."""
    output_spec: NotRequired[dict[str, Any] | None]
    """Internal: the tools / response schema the batch was planned with
    (`agent.structured.OutputSpec`): bodies are rebuilt and answers checked with these, whatever
    later input says."""
    collected_counts: NotRequired[Counts]
    """Internal: counts as of the last collect (the base for progress while follow-up jobs run)."""
    source_fingerprint: NotRequired[str]
    """Internal: cheap identity of the planned source (inline records hash, or file path, size,
    mtime)."""
    request_hash: NotRequired[str]
    """Internal: fingerprint of the submitted request set (recognises a re-sent identical input)."""
    attempt: NotRequired[int]
    """Internal: the current round: 1, then 2+ while failed requests are being retried."""
    cancel_requested: NotRequired[bool]
    """Internal: the user cancelled: no more submissions or retries on this thread."""
    polls: NotRequired[int]
    """Internal: status checks made so far on this thread."""
    retry_later: NotRequired[bool]
    """Internal: with status `error`, the provider stayed unavailable through the retries (a
    served thread books another try); False for errors that need a fix (a key, a quota)."""
    quota_learned: NotRequired[dict[str, dict[str, int]]]
    """Internal: per 'provider/model', the caps the provider's quota refusals taught the thread
    (`agent.quotas.learn`), e.g. `{"openai/gpt-4o-mini": {"tokens": 1800000}}`."""
    fallback_tier: NotRequired[str]
    """Internal: the fallback the batch was planned with ('none', 'realtime', 'flex'), so a
    resumed run without `--fallback` still sends what the deadline left missing."""
    deadline_hit: NotRequired[bool]
    """Internal: the deadline came: unfinished jobs were cancelled, nothing more is submitted."""
    waits_this_run: NotRequired[int]
    """Internal: waits done in the current run (drives the growing poll interval)."""
    waited_seconds: NotRequired[float]
    """Internal: seconds slept in the current run, checked against `max_wait_seconds`."""


def empty_usage() -> Usage:
    """Return zeroed token usage."""
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
