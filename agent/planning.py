"""Plan a request set into provider jobs, and check it, before anything is uploaded.

Planning streams the requests once: it groups them by model (providers run one model per job),
splits each group into jobs by the provider's request-count and file-size limits, builds every
input line (the exact bytes that will be uploaded) into a local spool file per job, and checks
what would make the provider reject or bill a bad job: an unknown model, a request larger than
the model's context window, a single request larger than a whole batch file.

Each job becomes an *intent* with a deterministic `job_key`. Submitting an intent later, in this
process or another, always produces the same key, which is what lets a crashed submit find its job
instead of creating a second one. A spool file only saves rebuilding: a process that does not
have it rebuilds the same bytes from the thread's source.

`plan_batch` is the graph's first step on a new thread: it plans the thread's source (inline
records or an input file, `source_requests`), prices the plan (and what deduplication saves,
`dedup_estimate`), enforces the budget and puts the request ids in the store. Input sent
again to a thread that holds a batch must be the same request set
(`refuse_another_request_set`).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from agent.bulk import ThreadData
from agent.context import Context
from agent.endpoints import CHAT, EMBEDDINGS, Endpoint, job_endpoint
from agent.estimate import JobTokens, TokenCounter, check_budget, price_plan
from agent.first_seen import FirstSeen
from agent.id_spool import IdSpool, close_and_delete
from agent.providers import provider_for_job, resolve_provider
from agent.providers.base import BatchProvider, ProviderLimits, job_chat_model
from agent.providers.params import check_context_params, check_request_params
from agent.quota_budget import configured_budget
from agent.requests import (
    BatchRequest,
    InputError,
    finish_hash,
    iter_file_requests,
    iter_validated,
    iter_with_system_prompt,
    request_set_hash,
    update_hash,
)
from agent.secrets import redact_url
from agent.state import Counts, Dedup, Job, State
from agent.storage_errors import StorageError
from agent.structured import OutputSpec, spec_fingerprint

if TYPE_CHECKING:
    from langgraph.store.base import BaseStore

# A conservative chars-per-token ratio: it underestimates tokens, so it never refuses a request
# the model would accept; it only catches requests that cannot fit.
CHARS_PER_TOKEN = 4
DEFAULT_SPOOL_DIR = Path(".batch-agent") / "spool"


def spool_dir() -> Path:
    """Return the local directory for built input files (`BATCH_AGENT_SPOOL_DIR`).

    Raises:
        StorageError: The directory cannot be created (a read-only or full disk).
    """
    path = Path(os.environ.get("BATCH_AGENT_SPOOL_DIR") or DEFAULT_SPOOL_DIR)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError.spool(exc, path) from None
    return path


def spool_path(job_key: str) -> Path:
    """Return where the built input file of a job is kept until it is uploaded."""
    return spool_dir() / f"{job_key}.jsonl"


# How to turn the model check off, for the message that refuses a model.
CHECK_MODELS_OFF = (
    "turn the check off (CLI --check-models/--no-check-models, run context "
    "check_models=false, BATCH_AGENT_CHECK_MODELS=false)"
)


def thread_endpoint(state: State) -> Endpoint:
    """Return what a thread's requests call: its planned endpoint, else what its input asks.

    An `embed` input embeds; anything else chats.
    """
    planned = state.get("endpoint")
    if planned:
        return job_endpoint({"endpoint": planned})
    return EMBEDDINGS if state.get("embed") else CHAT


def has_source(state: State) -> bool:
    """Tell whether the state holds a request source to plan (records, texts or a file)."""
    embed = state.get("embed")
    return bool(
        state.get("requests") or state.get("input_path") or isinstance(embed, list) and embed
    )


# What an embeddings run takes of the context besides its model: no sampling, no system prompt.
_CHAT_ONLY: dict[str, str] = {
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "top_p": "top_p",
    "system_prompt": "a system prompt",
    # Chat completions or OpenAI's Responses API: embeddings have their own endpoint.
    "endpoint": "endpoint choice",
}


def run_params(context: Context, endpoint: Endpoint) -> dict[str, Any]:
    """Return the run's settings of its model object for `endpoint` (`Job.params`).

    For chat, `context_params`. For embeddings, the embeddings class's settings: the context's
    `model_settings`, plus `dimensions` when set.

    Raises:
        InputError: An embeddings run sets a chat-only field (sampling, a system prompt).
    """
    if endpoint != EMBEDDINGS:
        return context_params(context)
    given = [words for name, words in _CHAT_ONLY.items() if getattr(context, name)]
    if given:
        raise InputError(
            f"an embeddings run takes no {', '.join(given)} (they are chat settings); "
            "remove them, or run the texts as chat requests",
            source="context",
        )
    if not isinstance(context.model_settings, dict):
        raise InputError("model_settings must be a JSON object", source="context")
    params: dict[str, Any] = dict(context.model_settings)
    if context.dimensions is not None:
        if type(context.dimensions) is not int or context.dimensions < 1:
            raise InputError(
                f"dimensions must be a positive integer, not {context.dimensions!r}",
                source="context",
            )
        params["dimensions"] = context.dimensions
    return params


def context_params(context: Context) -> dict[str, Any]:
    """Return the run's settings of its chat model: `model_settings`, then the sampling fields.

    They are what the reference chat model is built with (`chat_model(model, params)`), kept in
    every job record (`Job.params`) so a resumed submit builds the same bytes and collect parses
    as that model does. A sampling field left unset does not erase the same key in
    `model_settings`.

    Raises:
        InputError: `model_settings` is not a JSON object.
    """
    if not isinstance(context.model_settings, dict):
        raise InputError("model_settings must be a JSON object", source="context")
    params: dict[str, Any] = dict(context.model_settings)
    for key, value in (
        ("temperature", context.temperature),
        ("max_tokens", context.max_tokens),
        ("top_p", context.top_p),
    ):
        if value is not None or key not in params:
            params[key] = value
    return params


def effective_limits(provider: BatchProvider, context: Context) -> ProviderLimits:
    """Return the provider's per-job limits, lowered by the context's overrides."""
    limits = provider.limits
    return ProviderLimits(
        max_requests=min(limits.max_requests, context.max_requests_per_job or limits.max_requests),
        max_file_bytes=min(limits.max_file_bytes, context.max_file_bytes or limits.max_file_bytes),
    )


def job_key(thread_id: str, request_hash: str, attempt: int, part: int) -> str:
    """Return the deterministic key of one job of a thread."""
    return hashlib.sha256(f"{thread_id}|{request_hash}|{attempt}|{part}".encode()).hexdigest()[:32]


def _counted() -> IdSpool:
    return IdSpool(None)


@dataclass
class PlannedJob:
    """One job of a plan: its model, requests (ids spooled to a file) and the built input file.

    A plan made with `spool=False` keeps neither file: only the counts, bytes and tokens.
    """

    part: int
    model: str
    ids: IdSpool = field(default_factory=_counted)
    """The job's request ids, in input order (`iter_request_ids`)."""
    input_bytes: int = 0
    path: Path | None = None
    tokens: JobTokens | None = None
    """The job's estimated input tokens and output cap (`agent.estimate`)."""
    _handle: IO[bytes] | None = None

    @property
    def request_count(self) -> int:
        """Return how many requests the job holds."""
        return self.ids.count

    def iter_request_ids(self) -> Iterator[str]:
        """Yield the job's request ids in input order (read back from its spool file)."""
        return iter(self.ids)

    def add(self, request_id: str, line: bytes) -> None:
        """Append one built line (only counted when the plan builds no files)."""
        if self._handle is not None:
            self._handle.write(line)
        self.ids.add(request_id)
        self.input_bytes += len(line)

    def close(self) -> None:
        """Close the spool files (the last buffered write may fail here: a full disk)."""
        handle, self._handle = self._handle, None
        try:
            if handle is not None:
                handle.close()
        finally:
            self.ids.close()


@dataclass
class Plan:
    """A checked request set, split into jobs with their input files built."""

    request_hash: str
    ids: IdSpool
    """Every request id in input order (`iter_request_ids`), duplicates included."""
    jobs: list[PlannedJob]
    duplicates: IdSpool = field(default_factory=_counted)
    """`[request id, id of the earlier request with the same body]` pairs (`iter_duplicates`):
    sent once, answered for both."""
    duplicate_tokens: dict[str, JobTokens] = field(default_factory=dict)
    """Per model, the tokens the duplicates would have cost (for the plan's saving estimate)."""
    chat_model: str = ""
    """The model of the chat model object that built every body (`Job.chat_model`)."""
    endpoint: Endpoint = CHAT
    """What every job's requests call (`Job.endpoint`; for chat, `BatchProvider.choose_endpoint`
    may make it OpenAI's Responses API)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The settings of the model object every job records (`Job.params`): the run's, with what
    pins the endpoint."""

    @property
    def request_count(self) -> int:
        """Return how many requests the set holds, duplicates included."""
        return self.ids.count

    @property
    def duplicate_count(self) -> int:
        """Return how many requests are answered from an identical earlier one."""
        return self.duplicates.count

    def iter_request_ids(self) -> Iterator[str]:
        """Yield every request id in input order (read back from the plan's spool file).

        Raises:
            ValueError: The plan was made with `spool=False` (it kept only counts).
        """
        return iter(self.ids)

    def iter_duplicates(self) -> Iterator[tuple[str, str]]:
        """Yield `(request id, original id)` for every duplicate, in input order."""
        return ((copy_id, original) for copy_id, original in self.duplicates)

    def duplicate_summary(self) -> list[dict[str, Any]]:
        """Return the duplicates per model as plan-like entries (to price what they save)."""
        return [
            {
                "part": -1,
                "model": model,
                "requests": tokens.requests,
                "bytes": 0,
                **tokens.summary(),
            }
            for model, tokens in self.duplicate_tokens.items()
        ]

    def summary(self) -> list[dict[str, Any]]:
        """Return jobs, requests and bytes per job (what `batch-agent plan` shows)."""
        return [
            {
                "part": j.part,
                "model": j.model,
                "requests": j.request_count,
                "bytes": j.input_bytes,
                **(j.tokens.summary() if j.tokens else {}),
            }
            for j in self.jobs
        ]

    def drop_id_spools(self) -> None:
        """Delete the spooled ids and duplicates (once the store holds them); keep input files."""
        self.ids.discard()
        self.duplicates.discard()
        for job in self.jobs:
            job.ids.discard()

    def discard(self) -> None:
        """Delete every spool file (a dry run, or a plan that was refused)."""
        self.drop_id_spools()
        for job in self.jobs:
            close_and_delete(job.close, job.path)


def plan_requests(
    requests: Iterable[BatchRequest],
    *,
    provider: BatchProvider,
    context: Context,
    spec: OutputSpec | None = None,
    exact_tokens: bool = True,
    endpoint: Endpoint = CHAT,
    spool: bool = True,
) -> Plan:
    """Check the request set and split it into jobs, building each job's input file.

    The ids, each job's ids and the duplicates go to spool files, not lists, and the dedupe
    map spills to disk past half a million bodies (`agent.first_seen`), so memory stays
    bounded at 10,000,000 requests. `spool=False` (`batch-agent plan`, dry runs) builds and
    checks every line but keeps nothing: only counts, bytes, tokens and the hash.

    `endpoint` is what the requests call (`agent.endpoints`): embeddings requests are texts,
    each built into the body its provider's LangChain embeddings class sends for it.

    `spec` (the set's tools / response schema) is bound into every body and fed into the
    request-set hash, so it is part of every job key. With `context.dedupe`, a request whose
    provider body equals an earlier one's is not sent: it is listed in `Plan.duplicates` and
    answered with the earlier request's result. `exact_tokens=False` estimates tokens with the
    heuristic even where a tokenizer exists (see `agent.estimate.TokenCounter`).

    Raises:
        StorageError: The spool directory cannot be written (full, read-only).
        InputError: A model is unknown, a request cannot fit its model or a batch file, a
            parameter is outside the provider's documented range, the completion window is
            not accepted, the model refuses the tools / schema, or the installed libraries
            cannot build a line or parse an answer (`BatchProvider.check_ready`). An error about one request
            names its file (or `input` and the record number), line and id. Nothing has been
            uploaded.
    """
    provider.check_completion_window(context.completion_window)
    provider.check_endpoint(endpoint)
    limits = effective_limits(provider, context)
    token_cap = configured_budget(provider.quota_defaults, context).tokens
    params = run_params(context, endpoint)
    embeddings = endpoint == EMBEDDINGS
    rules = provider.param_rules
    if not embeddings:
        check_context_params(params, rules, provider.name)
    directory = spool_dir()
    token = uuid.uuid4().hex[:12]
    # One chat model object builds every body, as one `llm` would in realtime: a request that
    # names its own model sends that model with `llm`'s rules (`llm.invoke(msgs, model=X)`).
    chat_model = run_chat_model(provider, context, endpoint)
    if not embeddings:
        # Chat goes where the chat model's own routing sends it (OpenAI: chat completions or
        # the Responses API), or where the run's choice, pinned in its settings, does.
        endpoint, params = provider.choose_endpoint(chat_model, params, spec, context.endpoint)
    build: Callable[[BatchRequest], bytes] | None = None
    # Per job model: its context window and token counter (the model that runs and bills).
    models: dict[str, tuple[int | None, TokenCounter]] = {}
    first_for_model: dict[str, BatchRequest] = {}
    filling: dict[str, PlannedJob] = {}
    jobs: list[PlannedJob] = []

    def spooled(name: str) -> IdSpool:
        return IdSpool(directory / f"plan-{token}-{name}.jsonl" if spool else None)

    # Opened in the try below, where a spool directory that cannot be written is named.
    ids = duplicates = _counted()
    digest = hashlib.sha256()
    # Body digest -> first request id with that body (16-byte keys), bounded memory at any size.
    first_with_body = FirstSeen() if context.dedupe else None
    duplicate_tokens: dict[str, JobTokens] = {}
    request: BatchRequest | None = None
    # An embedding has no output tokens: its estimate is exact (0), not open-ended.
    output_cap = 0 if embeddings else context.max_tokens
    try:
        ids = spooled("ids")
        duplicates = spooled("duplicates")
        for request in requests:
            update_hash(digest, request)
            ids.add(request.id)
            model = request.model or chat_model
            if build is None:
                # Built and tried once, parser included, so a library that changed under us
                # stops the run here rather than after the batch is paid for.
                build = provider.check_ready(chat_model, params, spec, endpoint)
            if model not in models:
                models[model] = (
                    None if embeddings else context_window(provider, model),
                    TokenCounter(provider.name, model, exact=exact_tokens, framing=not embeddings),
                )
                first_for_model[model] = request
            window, counter = models[model]
            if window is not None:
                check_fits(request, model, window)
            if request.params and embeddings:
                raise InputError(
                    "an embeddings request takes no 'params' (set the model and dimensions "
                    "for the whole run)",
                    source=request.source,
                    line=request.line,
                    request_id=request.id,
                )
            if request.params:  # the context's own were checked once, above
                check_request_params(
                    request.params,
                    rules,
                    provider.name,
                    source=request.source,
                    line=request.line,
                    request_id=request.id,
                )
            line = build(request)
            if len(line) > limits.max_file_bytes:
                raise InputError(
                    f"request is {len(line):,} bytes, larger than {provider.name}'s {limits.max_file_bytes:,}-byte batch file limit",
                    source="input",
                    request_id=request.id,
                )
            if first_with_body is not None:
                body_key = _body_key(line, request.id, model)
                if body_key is not None:
                    original = first_with_body.setdefault(body_key, request.id)
                    if original != request.id:
                        duplicates.add((request.id, original))
                        if model not in duplicate_tokens:
                            duplicate_tokens[model] = JobTokens(counter, output_cap)
                        duplicate_tokens[model].add(request)
                        continue
            job = filling.get(model)
            tokens = counter.count(request)
            if (
                job is None
                or job.request_count >= limits.max_requests
                or job.input_bytes + len(line) > limits.max_file_bytes
                or (
                    # A job over the in-flight token quota would be refused even alone.
                    token_cap is not None
                    and job.tokens is not None
                    and job.tokens.input_tokens + tokens > token_cap
                )
            ):
                if job is not None:
                    job.close()
                job = PlannedJob(
                    part=len(jobs),
                    model=model,
                    ids=spooled(f"{len(jobs)}-ids"),
                    path=directory / f"plan-{token}-{len(jobs)}.jsonl" if spool else None,
                    tokens=JobTokens(counter, output_cap),
                )
                if job.path is not None:
                    job._handle = job.path.open("wb")
                filling[model] = job
                jobs.append(job)
            job.add(request.id, line)
            assert job.tokens is not None
            job.tokens.add(request, tokens)
        for job in jobs:
            job.close()
        ids.close()
        duplicates.close()
        # Last, once every line was checked here: the only check that asks the provider.
        for model, first in first_for_model.items():
            request = first
            check_model(provider, model, first, context)
    except BaseException as exc:
        Plan("", ids, jobs, duplicates).discard()
        if isinstance(exc, InputError) and request is not None:
            # The checks above (and the line builders) know the request, not where it was read.
            located = exc.located_at(request)
            if located is not exc:
                raise located from None
        if isinstance(exc, OSError) and (
            exc.filename is None or Path(exc.filename).parent == directory
        ):
            # A write to the spool (a full disk's ENOSPC names no file): say which directory.
            raise StorageError.spool(exc, directory) from None
        raise
    finally:
        if first_with_body is not None:
            first_with_body.close()
    finish_hash(digest, spec)
    return Plan(
        request_hash=digest.hexdigest(),
        ids=ids,
        jobs=jobs,
        duplicates=duplicates,
        duplicate_tokens=duplicate_tokens,
        chat_model=chat_model,
        endpoint=endpoint,
        params=params,
    )


def run_chat_model(provider: BatchProvider, context: Context, endpoint: Endpoint = CHAT) -> str:
    """Return the model of the run's model object: the context's, else the provider's default.

    Raises:
        InputError: An embeddings run on a provider without embeddings (naming the endpoint).
    """
    if endpoint == EMBEDDINGS:
        provider.check_endpoint(endpoint)
        return context.model or provider.default_embedding_model
    return context.model or provider.default_model


def _body_key(line: bytes, request_id: str, model: str) -> bytes | None:
    """Return a digest of a built line without its request id: equal for identical bodies.

    Every provider's line starts with its id, `{"custom_id":<id>,` (Gemini: `{"key":<id>,`); a
    line that does not (a future format) is simply never deduplicated. The request's `model`
    is part of the digest, since a provider that names the model per job (Gemini) leaves it out
    of the line: only requests for the same model can match.
    """
    encoded = orjson.dumps(request_id)
    for id_field in _ID_FIELDS:
        prefix = id_field + encoded
        if line.startswith(prefix):
            digest = hashlib.blake2b(model.encode(), digest_size=16)
            digest.update(b"\0")
            digest.update(memoryview(line)[len(prefix) :])
            return digest.digest()
    return None


# How a built line starts, before its request id.
_ID_FIELDS = (b'{"custom_id":', b'{"key":')


def intents_for(plan: Plan, provider: BatchProvider, context: Context, thread_id: str) -> list[Job]:
    """Turn a plan into job intents and move each spool file to its job key's name."""
    intents = []
    for planned in plan.jobs:
        key = job_key(thread_id, plan.request_hash, 1, planned.part)
        if planned.path is not None:
            planned.path.replace(spool_path(key))
            planned.path = spool_path(key)
        intent = new_intent(
            provider,
            key=key,
            attempt=1,
            model=planned.model,
            params=plan.params,
            request_count=planned.request_count,
            chat_model=plan.chat_model,
            endpoint=plan.endpoint,
        )
        intent["input_bytes"] = planned.input_bytes
        intent["input_tokens"] = planned.tokens.input_tokens if planned.tokens else 0
        intents.append(intent)
    return intents


def retry_intents(
    jobs: list[Job],
    to_retry: dict[str, list[str]],
    data: ThreadData,
    request_hash: str,
    attempt: int,
) -> list[Job]:
    """Return the follow-up intents of round `attempt`: one per job with requests to retry.

    Each carries the failed requests of one earlier job (`retry_of`), with its model and
    settings; their ids are put in the store under the new job key.
    """
    by_key = {job["job_key"]: job for job in jobs}
    follow_ups = []
    for part, (source, ids) in enumerate(to_retry.items()):
        key = job_key(data.thread_id, request_hash, attempt, part)
        data.put_ids(ids, "jobs", key)
        origin = by_key[source]
        follow_up = new_intent(
            provider_for_job(origin),
            key=key,
            attempt=attempt,
            model=origin["model"],
            params=origin["params"],
            request_count=len(ids),
            retry_of=source,
            chat_model=job_chat_model(origin),
            endpoint=job_endpoint(origin),
        )
        # Its share of the source job's estimate: what it holds of a token quota (`agent.quotas`).
        share = origin.get("input_tokens", 0) * len(ids) // max(origin["request_count"], 1)
        follow_up["input_tokens"] = share
        follow_ups.append(follow_up)
    return follow_ups


def new_intent(
    provider: BatchProvider,
    *,
    key: str,
    attempt: int,
    model: str,
    params: dict[str, Any],
    request_count: int,
    retry_of: str | None = None,
    chat_model: str | None = None,
    endpoint: Endpoint = CHAT,
) -> Job:
    """Return a job record for a job that is about to be submitted.

    `chat_model` is the model of the chat model object that builds its bodies and parses its
    answers (`Job.chat_model`); None means `model` itself. `endpoint` is what its requests call
    (`Job.endpoint`; a retry keeps its job's).
    """
    job = Job(
        job_key=key,
        attempt=attempt,
        provider=provider.name,
        job_id=None,
        model=model,
        params=params,
        request_count=request_count,
        input_bytes=0,
        retry_of=retry_of,
        intent_at=time.time(),
        created_at=None,
        input_file_id=None,
        emulated=provider.emulated,
        # Never the password of an authenticating endpoint: `provider_for_job` asks the run for it.
        base_url=redact_url(provider.base_url),
        provider_status="",
        status="intent",
        counts=Counts(total=request_count, succeeded=0, failed=0, pending=request_count),
        output_file_id=None,
        error_file_id=None,
        errors=[],
        terminal_since=None,
    )
    # Written only when they say something: a job record is written into every checkpoint
    # (absent, the chat model is `model`, the organization the SDK's default, the endpoint chat).
    if chat_model and chat_model != model:
        job["chat_model"] = chat_model
    if provider.organization:
        job["organization"] = provider.organization
    if endpoint != CHAT:
        job["endpoint"] = endpoint
    return job


def context_window(provider: BatchProvider, model: str) -> int | None:
    """Return the model's context window from LangChain's model profile (None: unknown)."""
    profile = provider.model_profile(model)
    window = profile.get("max_input_tokens") if profile else None
    return int(window) if window else None


def check_model(
    provider: BatchProvider, model: str, request: BatchRequest, context: Context
) -> None:
    """With `check_models`, refuse a model the provider does not serve (`request`: its first).

    A model LangChain's profiles list passes. Any other is not refused for that alone (models
    newer than the installed profile data are served all the same): the provider is asked
    (`BatchProvider.model_served`; the emulator serves every name without `no-such-model` in
    it). Only when it cannot be asked (no model lookup, or the lookup failed) is the model
    refused as before, fine-tuned `ft:` names excepted.

    Raises:
        InputError: The provider does not serve the model, or cannot be asked and the profile
            does not know it; the message names the setting that turns the check off.
    """
    if not context.check_models or provider.model_profile(model) is not None:
        # A model the profiles list is served: asking would only add a call to every plan.
        return
    served = provider.model_served(model)
    if served is False:
        problem = (
            f"unknown model {model!r} for {provider.name}: the provider does not serve it "
            f"(model lookup: not found); {CHECK_MODELS_OFF} for a model it serves unlisted"
        )
    elif served is None and not model.startswith("ft:"):
        problem = (
            f"unknown model {model!r} for {provider.name}: the provider could not be asked and "
            f"LangChain's model profiles do not list it; {CHECK_MODELS_OFF} for new, "
            "fine-tuned or self-hosted models"
        )
    else:
        return
    raise InputError(problem, source="input", request_id=request.id)


def check_fits(request: BatchRequest, model: str, window: int) -> None:
    """Refuse a request that cannot fit the model's context window."""
    estimate = _text_length(request.messages) // CHARS_PER_TOKEN
    if estimate > window:
        raise InputError(
            f"request is larger than {model}'s context window (at least {estimate:,} tokens > {window:,})",
            source="input",
            request_id=request.id,
        )


def write_lines(path: Path, lines: Iterator[bytes]) -> int:
    """Write lines to `path` atomically; return the byte count."""
    tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:8]}")
    size = 0
    with tmp.open("wb") as fh:
        for line in lines:
            fh.write(line if line.endswith(b"\n") else line + b"\n")
            size += len(line) + (0 if line.endswith(b"\n") else 1)
    tmp.replace(path)
    return size


def _text_length(messages: Iterable[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(part.get("text", "")) for part in content if isinstance(part, dict))
    return total


def plan_batch(
    state: State, ctx: Context, store: BaseStore | None, thread_id: str
) -> dict[str, Any]:
    """Stream the source once: check it, split it into jobs, build their files, record intents.

    Args:
        state: The new thread's state (its `requests` or `input_path`, output spec, dry run).
        ctx: The run's settings (provider, model, limits, budget).
        store: The graph's store, for the request ids of the thread and of each job.
        thread_id: The thread, which every job key derives from.

    Returns:
        The state update: the plan and its estimate, and (unless a dry run) the job intents.

    Raises:
        InputError: A request is invalid or too large, or the estimate is over `max_cost`;
            nothing was uploaded.
    """
    provider = resolve_provider(ctx)
    spec = OutputSpec.from_values(state)
    endpoint = thread_endpoint(state)
    if endpoint == EMBEDDINGS and spec is not None:
        raise InputError("an embeddings run takes no tools or response schema", source="input")
    plan = plan_requests(
        source_requests(state, ctx.system_prompt),
        provider=provider,
        context=ctx,
        spec=spec,
        # Exact token counts where the budget or a plan needs them; else the cheap heuristic.
        exact_tokens=bool(state.get("dry_run")) or ctx.max_cost is not None,
        endpoint=endpoint,
        # A dry run builds nothing to keep: counts, tokens and cost only.
        spool=not state.get("dry_run"),
    )
    try:
        summary, estimate = price_plan(plan.summary(), provider.name, ctx.price_override)
        dedup = dedup_estimate(plan, provider.name, ctx)
        if not state.get("dry_run"):
            check_budget(estimate, ctx.max_cost)  # before anything is uploaded
    except InputError:
        plan.discard()
        raise
    if state.get("dry_run"):
        plan.discard()
        return {
            "plan": summary,
            "estimate": estimate,
            "dedup": dedup,
            "requests": [],
            "input_path": "",
            "dry_run": False,
            "status": "new",
            "error": None,
        }
    intents = intents_for(plan, provider, ctx, thread_id)
    data = ThreadData(store, thread_id)
    try:
        # Streamed from the plan's spool files into store pages: no list of every id.
        data.put_ids(plan.iter_request_ids(), "request_ids")
        for planned, intent in zip(plan.jobs, intents, strict=True):
            data.put_ids(planned.iter_request_ids(), "jobs", intent["job_key"])
        data.put_duplicates(plan.iter_duplicates())
    finally:
        # The input files stay for submit; the ids live in the store now (or are re-planned).
        plan.drop_id_spools()
    # Every request is pending, duplicates too (answered at collect, from their originals).
    total = sum(intent["request_count"] for intent in intents) + plan.duplicate_count
    counts = Counts(total=total, succeeded=0, failed=0, pending=total)
    return {
        "request_count": plan.request_count,
        # The plan's: chat may have become OpenAI's Responses API (`choose_endpoint`).
        "endpoint": plan.endpoint,
        "duplicate_count": plan.duplicate_count,
        "dedup": dedup,
        "request_hash": plan.request_hash,
        "source_fingerprint": _source_fingerprint(state),
        "system_prompt": ctx.system_prompt,
        "output_spec": spec.to_state() if spec else None,
        "jobs": intents,
        "estimate": estimate,
        "attempt": 1,
        "status": "new",
        "counts": counts,
        "error": None,
    }


def dedup_estimate(plan: Plan, provider: str, ctx: Context) -> Dedup | None:
    """Price what the plan's duplicates would have cost: the estimated saving of sending each once."""
    if not plan.duplicate_count:
        return None
    _, saved = price_plan(plan.duplicate_summary(), provider, ctx.price_override)
    return Dedup(
        requests=plan.duplicate_count,
        estimated_batch_usd=saved["batch_usd"],
        saved_batch_usd=None,
        saved_realtime_usd=None,
    )


def _source_fingerprint(state: State) -> str:
    """Identify the source cheaply: the same inline records, or the same unchanged file.

    The planned source stays in state until every job exists; this tells "still the planned
    input" from "input sent again" without re-reading a large file on every submit step.
    """
    records = _embed_records(state.get("embed")) or state.get("requests") or []
    if records:
        return hashlib.sha256(orjson.dumps(records, option=orjson.OPT_SORT_KEYS)).hexdigest()
    path = Path(str(state.get("input_path")))
    stat = path.stat() if path.is_file() else None
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}" if stat else str(path)


def source_requests(state: State, system_prompt: str) -> Iterator[BatchRequest]:
    """Stream the thread's requests from inline records, texts to embed, or the input file."""
    records = _embed_records(state.get("embed")) or state.get("requests") or []
    if records:
        requests = iter_validated(enumerate(records, start=1), source="input")
    else:
        requests = iter_file_requests(str(state.get("input_path")))
    return iter_with_system_prompt(requests, system_prompt)


def _embed_records(embed: Any) -> list[Any]:
    """Return the records of an `embed` list: plain texts become `{"id": "text-N", "text"}`."""
    if not isinstance(embed, list):
        return []
    return [
        {"id": f"text-{n}", "text": item} if isinstance(item, str) else item
        for n, item in enumerate(embed, start=1)
    ]


def planned_spec(state: State) -> OutputSpec | None:
    """Return the tools / response schema the thread's batch was planned with."""
    return OutputSpec.from_state(state.get("output_spec"))


def refuse_another_request_set(state: State, ctx: Context, thread_id: str) -> None:
    """Raise unless the input sent to a thread that holds a batch is the batch's request set.

    Cheap when it is the planned input (same inline records, or the same unchanged file);
    otherwise the input is read once and its fingerprint compared.

    Raises:
        InputError: The input is another request set (requests, tools or response schema differ),
            naming both sizes and how to start a new thread. Nothing was sent anywhere.
    """
    spec = OutputSpec.from_values(state)
    planned = planned_spec(state)
    embedding = state.get("endpoint") == EMBEDDINGS
    if embedding != bool(state.get("embed")):
        held = "texts to embed" if embedding else "chat requests"
        raise InputError(
            f"thread {thread_id} already holds a batch of {held}; this input is "
            f"{'chat requests' if embedding else 'texts to embed'}. A thread runs one request "
            "set: send this input on a new thread; nothing was sent",
            source="input",
        )
    if _source_fingerprint(state) == state.get("source_fingerprint") and spec_fingerprint(
        spec
    ) == spec_fingerprint(planned):
        return
    count = 0

    def counted() -> Iterator[BatchRequest]:
        nonlocal count
        for request in source_requests(state, state.get("system_prompt", ctx.system_prompt)):
            count += 1
            yield request

    fingerprint = request_set_hash(counted(), spec)
    held = str(state.get("request_hash", ""))
    if fingerprint == held:
        return
    raise InputError(
        f"thread {thread_id} already holds a batch of {_requests(state.get('request_count', 0))} "
        f"(request set {held[:12]}); this input is a different request set, of "
        f"{_requests(count)} (request set {fingerprint[:12]}): requests, tools or response "
        "schema differ. A thread runs one request set: send this input on a new thread (run it "
        "without --thread, or with a new --thread ID); nothing was sent",
        source="input",
    )


def _requests(count: int) -> str:
    return f"{count:,} request{'' if count == 1 else 's'}"
