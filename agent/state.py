"""Input, full and output state of the batch graph.

The state is deliberately small and JSON-like. The request records arrive in `requests` and are
cleared by `submit` once they are uploaded: SqliteSaver writes the whole state into every
checkpoint, so keeping thousands of prompts there would re-write them on every poll.
"""

from __future__ import annotations

from typing import Any, NotRequired

from langchain_core.messages import AIMessage
from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic needs this TypedDict on Python < 3.12

from agent.pricing import Cost
from agent.statuses import JobStatus, ResultStatus, ThreadStatus

# Attribute docstrings become JSON-schema descriptions, which Studio shows next to each field.
_DOCSTRING_DESCRIPTIONS = ConfigDict(use_attribute_docstrings=True)


@with_config(_DOCSTRING_DESCRIPTIONS)
class Estimate(TypedDict):
    """Estimated tokens and cost of a planned batch (or one planned job), before submitting."""

    requests: int
    input_tokens: int
    tokens_by: str
    """How input tokens were counted: 'tokenizer o200k_base' or the documented heuristic."""
    max_output_tokens: int | None
    """Output at every request's `max_tokens` cap; None when some request has no cap."""
    batch_usd: float | None
    """Estimated cost at the batch price (input, plus output at the cap when known); None: unknown price."""
    realtime_usd: float | None
    """The same tokens at the realtime price; None: unknown price."""
    saving_usd: float | None
    source: str
    note: str | None
    """What the estimate leaves out, or why a price is unknown."""


@with_config(_DOCSTRING_DESCRIPTIONS)
class Counts(TypedDict):
    """Request counts, summed over a thread's jobs."""

    total: int
    succeeded: int
    failed: int
    pending: int


@with_config(_DOCSTRING_DESCRIPTIONS)
class Usage(TypedDict):
    """Token usage totals."""

    input_tokens: int
    output_tokens: int
    total_tokens: int


@with_config(_DOCSTRING_DESCRIPTIONS)
class RequestError(TypedDict):
    """Why one request failed."""

    code: str
    message: str


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
    """Protocol used: 'openai', 'mistral' or 'anthropic'."""
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
    `llm`'s rules. Absent in records written before it existed: then `model`."""
    request_count: int
    """Requests in this job; their ids are in the store (`agent.bulk`), not in state."""
    input_bytes: int
    retry_of: str | None
    """For a follow-up job, the `job_key` of the job whose failed requests it resubmits."""
    intent_at: float
    created_at: float | None
    input_file_id: str | None
    emulated: bool
    """True when the job lives in the in-process offline emulator (synthetic answers)."""
    base_url: str
    """The endpoint the job was created on ('' for the provider's default or the emulator)."""
    organization: NotRequired[str]
    """The OpenAI organization the job was created in ('' or absent: the SDK's default)."""
    provider_status: str
    """The provider's raw status string, kept as-is."""
    status: JobStatus
    counts: Counts
    output_file_id: str | None
    error_file_id: str | None
    errors: list[str]
    """Batch-level errors and notes (validation failures, an unknown status, missing output)."""
    terminal_since: float | None
    cancelled: NotRequired[bool]
    """True once the job ended because it was cancelled (or was cancelled before it was sent)."""
    retryable: NotRequired[bool]
    """True for a job that failed as a whole for a passing reason: its requests are retried."""
    """When the job was first seen terminal without output files (some providers lag)."""
    cost: NotRequired[Cost]
    """Tokens of the collected results and their batch and realtime cost (`agent.pricing`)."""
    unverified: NotRequired[bool]
    """True for a job adopted without proof that it is this intent's (a provider whose jobs
    carry no metadata, while the batch still runs); checked once it ends, released if not ours."""


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
    status: ResultStatus
    message: AIMessage | None
    """The `AIMessage` the realtime LangChain call would have returned, with `usage_metadata`."""
    usage: Usage
    error: RequestError | None
    attempts: int
    """How many jobs this request went through (1 unless it was retried)."""
    duplicate_of: NotRequired[str]
    """Set when this request was identical to an earlier one and got its answer (`dedupe`)."""
    tool_calls: NotRequired[list[dict[str, Any]]]
    """With tools or a response schema: the answer's tool calls `{name, args, id, type}`."""
    parsed: NotRequired[Any]
    """With a response schema: what the model's output parser makes of the answer, as realtime
    `.invoke()` returns it (None when it did not parse or the model called a tool instead); a
    rejected answer sets `error` (`refusal`, `output_parsing`; `schema` with `validate_schema`)."""


@with_config(_DOCSTRING_DESCRIPTIONS)
class InputState(TypedDict):
    """What a caller sends to start a batch (or nothing, to resume a thread)."""

    requests: NotRequired[list[dict[str, Any]]]
    """Request records: `{"id", "prompt"}`, `{"id", "messages": [...]}` (each with optional
    `"params"`), or OpenAI batch lines `{"custom_id", "method", "url", "body"}`."""
    input_path: NotRequired[str]
    """Instead of `requests`: a JSONL/TXT request file readable by the graph's process, of any
    size (it is streamed, never loaded into state)."""
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
class OutputState(TypedDict):
    """What a run returns: progress, and the results once collected."""

    status: NotRequired[ThreadStatus]
    jobs: NotRequired[list[Job]]
    counts: NotRequired[Counts]
    results: NotRequired[list[Result]]
    """Results in input order, kept in state only for batches up to `results_in_state`
    requests; every batch's results are also in the store (see `results_store`)."""
    results_store: NotRequired[dict[str, Any] | None]
    """Where the results live in the store: `{"namespace", "pages", "page_size", "count"}`."""
    plan: NotRequired[list[dict[str, Any]]]
    """Jobs, requests and bytes per job (from a dry run, or of the submitted batch)."""
    usage: NotRequired[Usage]
    cost: NotRequired[Cost | None]
    """The collected batch's cost at the batch and realtime price, summed over its jobs."""
    estimate: NotRequired[Estimate | None]
    """Estimated input tokens and cost, from planning (a dry run, or before submitting)."""
    error: NotRequired[str | None]
    dedup: NotRequired[Dedup | None]
    """Identical requests sent once (context `dedupe`): count, estimated and actual saving."""
    next_check_at: NotRequired[float | None]
    """On a LangGraph server: when the self-scheduled next poll runs (epoch seconds); None when
    nothing is booked (finished, standalone, or `self_schedule` off)."""
    webhook: NotRequired[dict[str, Any] | None]
    """The completion notice: `{"target" (scheme and host only), "sent_at", "error"}`."""


@with_config(_DOCSTRING_DESCRIPTIONS)
class State(InputState, OutputState):
    """The full, checkpointed state of one batch thread."""

    request_count: NotRequired[int]
    """Requests in the batch; their ids are in the store in input order (`agent.bulk`)."""
    duplicate_count: NotRequired[int]
    """Requests not sent because an identical one was (their pairs are in the store)."""
    system_prompt: NotRequired[str]
    """The system prompt the batch was planned with (a resumed submit rebuilds the same files)."""
    output_spec: NotRequired[dict[str, Any] | None]
    """The tools / response schema the batch was planned with (`agent.structured.OutputSpec`):
    bodies are rebuilt and answers checked with these, whatever later input says."""
    collected_counts: NotRequired[Counts]
    """Counts as of the last collect (the base for progress while follow-up jobs run)."""
    source_fingerprint: NotRequired[str]
    """Cheap identity of the planned source (inline records hash, or file path, size, mtime)."""
    request_hash: NotRequired[str]
    """Fingerprint of the submitted request set, to recognise a re-sent identical input."""
    attempt: NotRequired[int]
    """The current round: 1, then 2+ while failed requests are being retried."""
    cancel_requested: NotRequired[bool]
    """The user cancelled: no more submissions or retries on this thread."""
    polls: NotRequired[int]
    """Status checks made so far on this thread."""
    retry_later: NotRequired[bool]
    """With status `error`: the provider stayed unavailable through the retries (a served thread
    books another try); False for errors that need a fix (a key, a quota)."""
    waits_this_run: NotRequired[int]
    """Waits done in the current run (drives the growing poll interval)."""
    waited_seconds: NotRequired[float]
    """Seconds slept in the current run, checked against `max_wait_seconds`."""


def empty_usage() -> Usage:
    """Return zeroed token usage."""
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
