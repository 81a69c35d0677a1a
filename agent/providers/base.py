"""The small interface every batch provider implements, and what they share.

A provider builds each request's batch input line (`line_builder`, tried with its answer parser
by `check_ready` while planning), uploads the input and creates the job (`upload`, `create`,
with their lookup twins `find_file`, `find_job`), reports its status (`status`), streams
per-request outcomes (`results`) and cancels (`cancel`).
OpenAI and Mistral share the output-line shape `{custom_id, response: {status_code, body}, error}`,
so the line parsing lives here; building bodies and parsing bodies into `AIMessage`s is delegated
to the matching LangChain chat model, which is what keeps batch requests and results identical to
realtime `.invoke()` calls. Every provider's results loop reads each line through `read_outcome`,
so an answer realtime would raise for, or a line of any odd shape, fails its own request only.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast

import httpx2
import orjson
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, convert_to_messages
from langchain_core.outputs import ChatResult
from langchain_core.utils.utils import LC_ID_PREFIX

from agent.batched.calls import BatchCallError, as_batch_call_error, failure_text
from agent.endpoints import CHAT, EMBEDDINGS, RESPONSES, Endpoint, job_endpoint, unsupported
from agent.error_text import exception_text
from agent.providers.errors import (
    ProviderError,
    QuotaExceededError,
    TransientProviderError,
    provider_call,
)
from agent.providers.params import ParamRules
from agent.quota_budget import Budget
from agent.requests import BatchRequest, InputError
from agent.secrets import API_KEY_ENV, key_problem, key_variable, redact
from agent.state import Counts, Job, RequestError, Usage
from agent.statuses import JobStatus
from agent.structured import CHECKED_CODES

if TYPE_CHECKING:
    from agent.structured import OutputSpec

logger = logging.getLogger("batch_agent")

# Metadata key carrying the deterministic job key, used to find a job whose create response was lost.
JOB_KEY_METADATA = "batch_agent_job_key"
# Metadata key carrying the thread id (first 500 characters), to find all jobs of a thread at once.
THREAD_METADATA = "batch_agent_thread"
# How far before a create was sent we look for the job it made (clock skew between us and the
# provider, and the time the create call took).
RECONCILE_LOOKBACK_SECONDS = 3600.0
# How far back a thread with no record of its own (a new worker, a lost database) looks for the
# jobs an earlier life of it created (`thread_jobs`): results stay readable for about 30 days, but
# a re-run after a lost database comes within days.
ADOPTION_LOOKBACK_SECONDS = 7 * 86400.0
# Every listing loop stops after this many items, whatever the provider's paging says.
MAX_LISTED = 10_000
# SDK-level retries of 429/5xx/timeouts/connection errors (exponential backoff with jitter).
SDK_MAX_RETRIES = 5
# A file delete gets one more try after a passing failure, not five: a file left behind only
# takes storage, and a run that has its results stored should not wait half a minute for it.
DELETE_RETRIES = 1
# What a delete of a file that is already gone answers: the file is deleted all the same.
GONE_STATUS = frozenset({404})
# What a server answers for an endpoint it does not have (an OpenAI-compatible server without
# the optional file or batch listings).
MISSING_ENDPOINT_STATUS = frozenset({404, 405, 501})
NO_FILE_LISTING = "each input file is uploaded without looking for an earlier upload of it"
NO_BATCH_LISTING = (
    "jobs are only known from the create journal (a thread that lost its database cannot adopt "
    "the jobs it created; a create whose answer is lost stops the run rather than be resent)"
)
# The id of the request `check_ready` builds a line for (never sent).
READY_PROBE_ID = "batch-agent-ready-probe"
# A job note for a provider whose final status does not say "cancelled" (Anthropic: `ended`).
CANCELLED_NOTE = "ended after a cancel request"


@dataclass(frozen=True)
class ProviderLimits:
    """What one job may hold at this provider."""

    max_requests: int
    max_file_bytes: int


@dataclass(frozen=True)
class CreatedJob:
    """A job the provider accepted (or that a lookup found)."""

    job_id: str
    created_at: float
    input_file_id: str
    verified: bool = True
    """False when a lookup could not prove the job is ours (Anthropic, before the batch ends):
    adopted for now, its identity is checked once its results exist (`job_owner`)."""


@dataclass(frozen=True)
class JobUpdate:
    """What one status check learned about a job."""

    provider_status: str
    status: JobStatus
    counts: Counts
    output_file_id: str | None
    error_file_id: str | None
    errors: list[str]
    cancelled: bool = False
    """The job ended because it was cancelled (by us or by someone at the provider)."""
    retryable: bool = False
    """A job that failed as a whole for a passing reason (a quota): its requests may be retried."""
    quota_refused: bool = False
    """The provider refused the whole job for a cap on what is in flight (OpenAI's enqueued
    tokens, `token_limit_exceeded`): none of its requests ran, and the same job is re-queued
    (`agent.quotas`) rather than failed."""


class RequestOutcome(NamedTuple):
    """One request's result as read from the provider's output or error file.

    A named tuple rather than a frozen dataclass: one is made per request, several times faster.
    `message` and `error` may both be set: the answer was produced (and billed), but realtime
    `.invoke()` raises for it (`read_outcome`). `usage` is what the provider billed for an answer
    no message could be built from (None otherwise: the message's `usage_metadata` says it).
    """

    custom_id: str
    message: AIMessage | None
    error: RequestError | None
    retryable: bool = False
    usage: Usage | None = None
    vector: bytes | None = None
    """For an embeddings job: the text's one vector as little-endian float32 bytes, equal to
    what the provider's LangChain embeddings class returns for it (chunks already combined)."""


class LineParser(Protocol):
    """Parses one output/error file line into `(custom_id, message, error, retryable)`."""

    def parse_line(
        self, raw: bytes | str, job_id: str
    ) -> tuple[str, AIMessage | None, RequestError | None, bool]:
        """Parse `raw`; `job_id` prefixes the message key.

        Raises whatever the realtime parse of that answer raises (`read_outcome` turns it into
        the request's failure).
        """
        ...

    def billed_usage(self, line: Any) -> Usage | None:
        """Return the token usage the provider billed for a decoded line, if it is readable."""
        ...

    def check_reference(self) -> None:
        """Parse probe answers through the reference path, raising whatever it raises.

        The fast path's own self-check only disables itself when the reference fails; this
        makes such a failure an error, asked for before anything is uploaded (`check_ready`).
        """
        ...


class VectorParser(Protocol):
    """Parses one line of an embeddings job's output/error file into its request's outcome."""

    def parse_line(self, raw: bytes | str, job_id: str) -> RequestOutcome:
        """Parse `raw` into an outcome whose `vector` is set when the text was embedded.

        `usage` is the tokens billed (`input_tokens`; `output_tokens` 0). Raises whatever the
        LangChain class's own reading of that answer raises (`read_vector_outcome` turns it into
        the request's failure).
        """
        ...

    def check_reference(self) -> None:
        """Parse a probe answer through the reference path, raising whatever it raises."""
        ...


# Error code of an answer realtime `.invoke()` raises for before any output parser runs: LangChain
# (or, for a response format, the OpenAI SDK's `parse`) cannot turn it into an AIMessage.
INVALID_RESPONSE = "invalid_response"


class UnusableAnswer(Exception):  # noqa: N818 (it carries an answer, it is not an error kind)
    """Raised by a parser where realtime raises `cause`, but a message could still be built.

    Example: OpenAI's `chat.completions.parse` raises `LengthFinishReasonError` for an answer cut
    at `max_tokens`, and `.invoke()` with it; the plain message is still worth keeping.
    """

    def __init__(self, cause: BaseException, message: AIMessage | None) -> None:
        """Keep the exception realtime raises and the message built without it."""
        super().__init__(str(cause))
        self.cause = cause
        self.message = message


def read_outcome(parser: LineParser, raw: bytes, job_id: str) -> RequestOutcome:
    """Parse one result line into its request's outcome, whatever the line holds.

    The one place where an odd line is contained, around every provider's `parse_line`: a
    line whose answer realtime `.invoke()` would raise for becomes that request's failure with
    code `invalid_response` and the exception's type and text (not retried: the same prompt
    would get the same answer), keeping the billed usage and any message that could be built.
    A message is also checked to survive storage (JSON, then rebuilt as an `AIMessage`, as every
    reader of the results does); messages the fast paths assembled from decoded JSON always do.
    A line whose `custom_id` is not a string cannot be matched to a request (custom_id "").
    """
    try:
        custom_id, message, error, retryable = parser.parse_line(raw, job_id)
        if message is not None and not _fast_message(message):
            message = _storable(message)
        return RequestOutcome(custom_id, message, error, retryable)
    except Exception as exc:  # noqa: BLE001 (any odd line fails its own request only)
        cause = exc.cause if isinstance(exc, UnusableAnswer) else exc
        kept = exc.message if isinstance(exc, UnusableAnswer) else None
        line = _loose_json(raw)
        if kept is not None:
            try:
                kept = _storable(kept)
            except Exception:  # noqa: BLE001 (then it is not kept)
                kept = None
        return RequestOutcome(
            _line_id(line),
            kept,
            RequestError(code=INVALID_RESPONSE, message=exception_text(cause)),
            False,
            None if kept is not None else _billed(parser, line),
        )


def read_vector_outcome(parser: VectorParser, raw: bytes, job_id: str) -> RequestOutcome:
    """Parse one embeddings result line, containing an odd line to its own request.

    The twin of `read_outcome` for vectors: a line the parser cannot read fails its request with
    `invalid_response` (not retried), keeping the request id when the line names one.
    """
    try:
        return parser.parse_line(raw, job_id)
    except Exception as exc:  # noqa: BLE001 (any odd line fails its own request only)
        return RequestOutcome(
            _line_id(_loose_json(raw)),
            None,
            RequestError(code=INVALID_RESPONSE, message=exception_text(exc)),
            False,
        )


def _line_id(line: Any) -> str:
    """Return the request id an odd result line still names ("" when it names none).

    Result lines name their request `custom_id`, or `key` (Gemini).
    """
    found = (line.get("custom_id") or line.get("key")) if isinstance(line, dict) else None
    return found if isinstance(found, str) else ""


def _fast_message(message: AIMessage) -> bool:
    """Tell whether a fast parser assembled `message` (plain JSON values, int token counts)."""
    return type(message.__pydantic_extra__) is FastExtra


def _storable(message: AIMessage) -> AIMessage:
    """Return `message` if it survives being stored and read back, else raise.

    Realtime hands the caller the object; a batch stores it as JSON and rebuilds it, so values
    JSON cannot hold (integers beyond 64 bits, lone surrogates) or token details pydantic would
    refuse on the way back in must fail here, for this request alone, not in every later reader.
    """
    dumped = orjson.dumps(message.model_dump(), default=str)
    AIMessage(**orjson.loads(dumped))
    usage = message.usage_metadata
    if usage is not None:
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            if type(usage.get(key)) is not int:
                raise TypeError(f"usage_metadata[{key!r}] is {usage.get(key)!r}, not an integer")
    return message


def _loose_json(raw: bytes | str) -> Any:
    """Decode a line as far as `json` can (None if it cannot), to salvage its custom_id."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return json.loads(raw)
        except ValueError:
            return None


def _billed(parser: LineParser, line: Any) -> Usage | None:
    try:
        return parser.billed_usage(line)
    except Exception:  # noqa: BLE001 (usage is a courtesy here: unreadable means unknown)
        return None


def token_usage(input_tokens: Any, output_tokens: Any, total_tokens: Any = None) -> Usage | None:
    """Return a `Usage` of integer counts (None unless both counts are non-negative ints)."""
    if type(input_tokens) is not int or type(output_tokens) is not int:
        return None
    if input_tokens < 0 or output_tokens < 0:
        return None
    if type(total_tokens) is not int or total_tokens < 0:
        total_tokens = input_tokens + output_tokens
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=total_tokens)


def chat_completion_usage(
    line: Any, input_key: str = "prompt_tokens", output_key: str = "completion_tokens"
) -> Usage | None:
    """Return the billed usage of an OpenAI / Mistral output line (`response.body.usage`).

    The token counts are named `prompt_tokens` / `completion_tokens` in a chat completion;
    a Responses-API body names them `input_tokens` / `output_tokens`.
    """
    if not isinstance(line, dict):
        return None
    response = line.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return None
    return token_usage(usage.get(input_key), usage.get(output_key), usage.get("total_tokens"))


class BatchProvider(ABC):
    """Interface of a batch provider: build lines, upload/create (submit), status, results, cancel.

    Submission is split in two calls, each with a lookup twin, so neither a crash between any
    two steps nor an answer lost on the way ever creates a second job: `find_file` finds an
    upload by its deterministic name, `find_job` finds the job a create made by the job's
    identity at the provider (the job key in its metadata, or in the custom ids of its requests
    for a provider without job metadata), and `thread_jobs` finds every job of a thread at once
    (a thread that lost its own records). The graph sends `upload` and `create` through
    `send_once`, which looks before it ever resends. A provider that takes requests inline
    (Anthropic) returns the built file's path from `upload`, and `create` streams it.
    """

    name: str
    """Protocol name stored in `Job.provider` ('openai', 'mistral', 'anthropic', 'gemini')."""
    default_model: str
    default_embedding_model: str = ""
    """The embeddings model of a run that names none ('' for a provider without embeddings)."""
    limits: ProviderLimits
    param_rules: ParamRules = MappingProxyType({})
    """The provider's documented numeric parameter ranges (`agent.providers.params`)."""

    organization: str = ""
    """The organization jobs are created in ('' for the SDK's default; OpenAI only)."""
    http_by_code: Mapping[str, int] = MappingProxyType({})
    """The HTTP status realtime meets for the provider's own result error codes, where the
    shared reading (`error_status`) does not know them."""

    def __init__(self, *, emulated: bool, base_url: str) -> None:
        """Remember where jobs go; subclasses build their SDK client from these."""
        self.emulated = emulated
        self.base_url = base_url

    @classmethod
    def realtime_exception(
        cls, error: Mapping[str, Any], *, key: str, model: str = "", batch: str = ""
    ) -> BatchCallError:
        """Return what a batched call that failed with `error` raises in its node.

        The exception the provider's chat model raises in realtime for that kind of failure
        (`realtime_error`, for the HTTP status the result's code stands for), made a
        `BatchCallError` too; a `BatchCallError` alone where realtime meets no HTTP error.

        Args:
            error: The call's stored error (`{"code", "message"}`).
            key: The call's key.
            model: The model the call asked (a realtime message may name it).

        Returns:
            The exception to raise in the node.
            batch: The batch-graph thread that ran the call.
        """
        code = str(error.get("code") or "error")
        message = str(error.get("message") or code)
        status = error_status(code, cls.http_by_code)
        raised = None
        if status is not None:
            raised = cls.realtime_error(status, code, failure_text(code, message, batch), model)
        if raised is None:
            return BatchCallError(code, message, key, batch)
        return as_batch_call_error(raised, code=code, key=key, batch=batch)

    @classmethod
    def realtime_error(cls, status: int, code: str, text: str, model: str) -> Exception | None:
        """Return the exception the chat model's realtime call raises for an HTTP error.

        Each provider builds it in its `realtime_errors` module, on a synthetic response.

        Args:
            status: The response's HTTP status.
            code: The error code its body carries.
            text: The error message its body carries.
            model: The model called.

        Returns:
            The exception, or None where the provider does not say (`BatchCallError` alone).
        """
        return None

    def sdk_endpoint(
        self,
        emulator_prefix: str,
        http_client: httpx2.Client | None,
        default_client: Callable[[], httpx2.Client] | None = None,
    ) -> tuple[str | None, str, httpx2.Client | None]:
        """Return `(base URL, API key, HTTP client)` for this provider's SDK client.

        The in-process emulator gets a placeholder key and an HTTP client wired to it; anything
        else gets `base_url` (None: the SDK's default) and the key from the environment, read
        here and kept only inside the SDK client. Given `default_client`, a real endpoint gets
        one HTTP client per process built by it (see `shared_http_client`).

        Raises:
            ProviderError: The key holds a stray character (a trailing
                carriage return, a space); the message names the variable, never the key.
        """
        if self.emulated:
            from agent.emulator import IN_PROCESS_BASE_URL, emulator_http_client

            return (
                f"{IN_PROCESS_BASE_URL}{emulator_prefix}",
                "emulator",
                http_client or emulator_http_client(),
            )
        # The first of the provider's key variables that is set, in its SDK's own order.
        key_env = key_variable(self.name) or API_KEY_ENV[self.name][0]
        key = os.environ.get(key_env)
        problem = key_problem(key_env, key) if key else None
        if problem is not None:
            # Refused here: httpx would refuse the header, and the SDK retry that as a network
            # error for half a minute before the run gave up with "Connection error".
            raise ProviderError(problem)
        if http_client is None and default_client is not None:
            http_client = shared_http_client(key_env, default_client)
        return self.base_url or None, key or "no-key-set", http_client

    endpoints: frozenset[Endpoint] = frozenset({CHAT})
    """The endpoints this provider batches (`agent.endpoints`); `check_endpoint` refuses others."""

    def check_endpoint(self, endpoint: Endpoint) -> None:
        """Raise `InputError` unless this provider batches `endpoint` (before anything is sent)."""
        if endpoint not in self.endpoints:
            raise InputError(
                f"{unsupported(self.name, endpoint)} (it batches: {', '.join(sorted(self.endpoints))})",
                source=self.name,
            )

    def choose_endpoint(
        self,
        model: str,
        params: dict[str, Any],
        spec: OutputSpec | None,
        requested: str = "",
    ) -> tuple[Endpoint, dict[str, Any]]:
        """Return the endpoint of a run's jobs, and the model settings its jobs record.

        Args:
            model: The model of the run's chat model object.
            params: The run's settings of that model (`agent.planning.context_params`).
            spec: The request set's tools / response schema, if any.
            requested: The run's choice (`Context.endpoint`); '' leaves it to the model
                object (here: chat). A provider whose chat model has its own switch (OpenAI's
                `use_responses_api`) sets it in the returned settings, so every job rebuilds
                the same lines and parses as that model does.

        Raises:
            InputError: The endpoint is not chat or responses, or not one this provider batches.
        """
        endpoint = requested or CHAT
        if endpoint not in (CHAT, RESPONSES):
            # Embeddings are asked for by the input (`{"embed": ...}`), not the run's setting.
            raise InputError(
                f"endpoint {endpoint!r} is not one a chat run can choose: '' (what the model "
                "object says), 'chat' or 'responses' (embeddings: an 'embed' input, "
                "batch-agent embed)",
                source="context",
            )
        self.check_endpoint(endpoint)  # type: ignore[arg-type]
        return endpoint, params  # type: ignore[return-value]

    def embedding_line_builder(
        self, model: str, params: dict[str, Any]
    ) -> Callable[[BatchRequest], bytes]:
        """Return a function turning one text request into its embeddings input line.

        The body is what the provider's LangChain embeddings class, built from `model` and
        `params` (its settings: dimensions, chunking, task type, ...), sends for that one text
        in `embed_documents`. The text is `agent.requests.request_text(request)`.
        """
        raise InputError(unsupported(self.name, EMBEDDINGS), source=self.name)

    def vector_parser(self, model: str, params: Mapping[str, Any]) -> VectorParser:
        """Return the parser of this provider's embeddings result lines (`VectorParser`)."""
        raise InputError(unsupported(self.name, EMBEDDINGS), source=self.name)

    supports_output_spec: bool = False
    """True when `line_builder` and `message_parser` take a third argument, the request set's
    tools / response schema (`agent.structured.OutputSpec`), and `chat_model` is implemented.
    Call them through `line_builder_for` / `results`, which pass a spec only when there is one."""

    @abstractmethod
    def line_builder(self, model: str, params: dict[str, Any]) -> Callable[[BatchRequest], bytes]:
        """Return a function turning one request for `model` into its JSONL input line.

        Args:
            model: The model of the run's chat model object; a request naming its own `model`
                sends that one with this model's rules, as `llm.invoke(msgs, model=X)` does.
            params: Model parameters from the run context (per-request params win).
        """

    def chat_model(self, model: str, params: dict[str, Any]) -> BaseChatModel:
        """Return the LangChain chat model whose realtime calls this provider's lines reproduce."""
        raise NotImplementedError(f"{self.name} has no chat model for tools or response schemas")

    realtime_fallback: bool = False
    """True when `realtime_line` can send a batch input line through the chat API instead (a
    deadline's fallback, `agent.fallback`)."""
    flex_tier: bool = False
    """True when `realtime_line(..., flex=True)` can send it at a flex tier (the batch price)."""

    def realtime_line(
        self, job: Job, raw: bytes, *, flex: bool = False, spec: OutputSpec | None = None
    ) -> RequestOutcome:
        """Send one of `job`'s input lines through the provider's chat API, outside the batch.

        The call is the one the job's chat model makes for that request in realtime (the line's
        body was built by it), and its answer is parsed exactly as the batch's result lines are
        (`read_outcome` on a result line holding it), so the stored result has the same format.

        Args:
            job: The job the line belongs to (its model, settings and endpoint).
            raw: The input line, as the job's input file holds it.
            flex: Send it at the flex tier (`flex_tier` providers only).
            spec: The request set's tools / response schema, if any (for parsing).

        Returns:
            The request's outcome: an answer, or the error a non-passing failure (a 400) gave.

        Raises:
            TransientProviderError: A rate limit (429, flex capacity) or a server fault
                outlasted the SDK's retries; the caller backs off and tries again.
            InputError: The provider cannot send lines in realtime, or not at the flex tier,
                or the job is an embeddings job (they have no fallback).
        """
        if not self.realtime_fallback:
            raise InputError(
                f"the {self.name} provider cannot send batch lines in realtime (no deadline fallback)",
                source=self.name,
            )
        if flex and not self.flex_tier:
            raise InputError(f"{self.name} has no flex tier (fallback 'flex')", source=self.name)
        if job_endpoint(job) == EMBEDDINGS:
            raise InputError("an embeddings job has no deadline fallback", source=self.name)
        parser = cast(
            LineParser,
            parser_for(self, job_chat_model(job), job["params"], spec, job_endpoint(job)),
        )
        return self.send_realtime(job, raw, parser, flex=flex)

    def send_realtime(
        self, job: Job, raw: bytes, parser: LineParser, *, flex: bool
    ) -> RequestOutcome:
        """Send one checked input line in realtime (`realtime_fallback` providers implement it).

        Args:
            job: The job the line belongs to (`job_id`, else `job_key`, names the outcome).
            raw: The input line.
            parser: The job's parser of result lines, which reads the answer.
            flex: Send it at the flex tier (only asked of `flex_tier` providers).
        """
        raise NotImplementedError(f"{self.name} cannot send batch lines in realtime")

    def lacks_listing(self, exc: ProviderError, listing: str, fallback: str) -> bool:
        """Tell whether `exc` says the server has no such listing; if so, warn once what is done.

        File and batch listings are optional on OpenAI-compatible servers (a 404, 405 or 501);
        without them, lookups fall back to what needs none (see each caller).

        Args:
            exc: The error a listing call raised.
            listing: What was listed ("files", "batches").
            fallback: What is done instead, for the warning.
        """
        if exc.status_code not in MISSING_ENDPOINT_STATUS:
            return False
        where = (self.name, self.base_url, listing)
        with _warned_lock:
            first = where not in _warned_listings
            _warned_listings.add(where)
        if first:
            logger.warning(
                "%s at %s does not list %s (HTTP %s): %s",
                self.name,
                self.base_url or "its default endpoint",
                listing,
                exc.status_code,
                fallback,
            )
        return True

    def find_listed_file(
        self,
        listing: Callable[[], Iterable[_Item]],
        *,
        ident: Callable[[_Item], str],
        created_at: Callable[[_Item], float],
        matches: Callable[[_Item], bool],
        since: float,
    ) -> str | None:
        """Return the id of the first file `listing` yields (newest first) that `matches`.

        The `find_file` of providers that upload: the listing is read back to `since` (less
        `RECONCILE_LOOKBACK_SECONDS`) within `bounded_listing`'s bounds. A server without a
        file listing finds nothing: the file is uploaded (again), which costs storage, never
        a second job.

        Args:
            listing: Starts the listing call(s) (called inside the provider-error wrapper).
            ident: A listed file's id.
            created_at: A listed file's creation time (provider clock, epoch seconds).
            matches: Whether a listed file is the upload looked for.
            since: When the upload was sent.
        """
        try:
            with provider_call(self.name, "list files"):
                for item in bounded_listing(
                    listing(),
                    ident=ident,
                    created_at=created_at,
                    floor=since - RECONCILE_LOOKBACK_SECONDS,
                ):
                    if matches(item):
                        return ident(item)
        except ProviderError as exc:
            if not self.lacks_listing(exc, "files", NO_FILE_LISTING):
                raise
        return None

    def find_listed_job(
        self, job: Job, listing: str, lookup: Callable[[], dict[str, CreatedJob]]
    ) -> CreatedJob | None:
        """Return `job`'s entry in `lookup()` (`{job key: job}` from a listing), if any.

        The `find_job` of providers whose jobs carry the key in metadata. A server without
        the listing cannot say whether the lost create made a job: that is
        `lost_create_unresolvable`, never a blind resend.

        Args:
            job: The intent looked for.
            listing: What is listed ("batches", "batch jobs"), for the warning.
            lookup: Lists the jobs, keyed by job key.
        """
        try:
            return lookup().get(job["job_key"])
        except ProviderError as exc:
            if self.lacks_listing(exc, listing, NO_BATCH_LISTING):
                raise lost_create_unresolvable(self, job, exc) from None
            raise

    def listed_thread_jobs(
        self, listing: str, lookup: Callable[[], dict[str, CreatedJob]]
    ) -> dict[str, CreatedJob]:
        """Return `lookup()` (`{job key: job}` from a listing), or nothing without a listing.

        The `thread_jobs` of providers whose jobs carry the key in metadata: a server without
        the listing has no earlier jobs to offer, and the thread submits as a fresh one.

        Args:
            listing: What is listed ("batches", "batch jobs"), for the warning.
            lookup: Lists the jobs, keyed by job key.
        """
        try:
            return lookup()
        except ProviderError as exc:
            if self.lacks_listing(exc, listing, NO_BATCH_LISTING):
                return {}
            raise

    def check_ready(
        self,
        model: str,
        params: dict[str, Any],
        spec: OutputSpec | None = None,
        endpoint: Endpoint = CHAT,
    ) -> Callable[[BatchRequest], bytes]:
        """Build a job's line builder and answer parser and try both, before anything is paid for.

        Both call private methods of the LangChain chat model and the SDK
        (`_get_request_payload`, `_create_chat_result`, `_format_output`, ...; the list is
        `tests/unit_tests/test_private_api_contract.py`). A release that renamed one would
        otherwise surface only at collect, once the batch had run and been billed, failing
        every answer. Planning calls this once per run, before any upload.

        Args:
            model: The model of the run's chat model object.
            params: The run's settings of that model (`Job.params`).
            spec: The request set's tools / response schema, if any.

        Returns:
            The line builder (`line_builder_for`), to build the job's lines with.

        Raises:
            InputError: The chat model refuses the settings or the spec, or the installed
                LangChain / SDK versions cannot build a line or parse an answer (naming the
                exception); nothing has been uploaded.
        """
        try:
            build = line_builder_for(self, model, params, spec, endpoint)
            try:
                build(BatchRequest(READY_PROBE_ID, [{"role": "user", "content": "ping"}], {}))
            except InputError:
                pass  # a refusal of every request of the run: the first one is refused by its id
            parser_for(self, model, params, spec, endpoint).check_reference()
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 (whatever a changed library raises)
            raise InputError(
                f"the installed libraries cannot build {self.name} batch lines or parse their "
                f"answers as realtime does ({exception_text(exc)}); nothing was uploaded: "
                "install the versions pyproject.toml names",
                source=self.name,
            ) from exc
        return build

    def model_served(self, model: str) -> bool | None:
        """Ask the provider whether it serves `model`.

        The in-process emulator (no key) is answered by its own rule without a call, so that a
        plan or a refused input still makes no provider call at all; the emulator over HTTP
        answers `GET /models/{id}` by the same rule (`agent.emulator.model_routes`).

        Returns:
            True when it does, False when the lookup answers 404, None when nothing is known:
            the server has no model lookup, or the lookup failed (a key, the network), which
            the calls that follow will report if it persists.
        """
        if self.emulated:
            from agent.emulator.model_routes import emulator_serves

            return emulator_serves(model)
        try:
            with provider_call(self.name, f"look up model {model!r}"):
                self.retrieve_model(model)
        except ProviderError as exc:
            if exc.status_code == 404:
                return False
            logger.info("%s: could not look up model %r: %s", self.name, model, exc)
            return None
        return True

    @abstractmethod
    def retrieve_model(self, model: str) -> None:
        """Retrieve `model` through the SDK (`client.models.retrieve`); raise what it raises."""

    def model_profile(self, model: str) -> dict[str, Any] | None:
        """Return LangChain's profile of `model` (context window, ...), None if unknown.

        Read from the provider's `chat_model`, so a provider without one knows no profile.
        """
        try:
            llm = self.chat_model(model, {})
        except NotImplementedError:
            return None
        profile = llm.profile
        return dict(profile) if profile else None

    fixed_completion_window: str | None = None
    """The one completion window the provider's batches have (Anthropic's and Gemini's '24h'),
    or None when a run may choose it (`check_completion_window`)."""

    def check_completion_window(self, completion_window: str) -> None:
        """Raise `InputError` if the provider cannot take this completion window.

        By default only a provider with a `fixed_completion_window` refuses one: any other.

        Args:
            completion_window: The run's window (`context.completion_window`).

        Raises:
            InputError: The window is not the provider's fixed one.
        """
        fixed = self.fixed_completion_window
        if fixed is not None and completion_window.strip() != fixed:
            raise InputError(
                f"{self.name} batches have a fixed {fixed} window; completion_window "
                f"{completion_window!r} cannot be honoured (use {fixed!r})",
                source="context",
            )

    @abstractmethod
    def upload(self, path: Path, file_name: str) -> str:
        """Upload the batch input file at `path` as `file_name` (streamed); return the file id."""

    @abstractmethod
    def find_file(self, file_name: str, size: int, since: float) -> str | None:
        """Return the id of an earlier complete upload named `file_name` of `size` bytes."""

    @abstractmethod
    def create(
        self,
        input_file_id: str,
        *,
        model: str,
        completion_window: str,
        metadata: dict[str, str],
        endpoint: Endpoint = CHAT,
    ) -> CreatedJob:
        """Create the batch job from an uploaded file, for `endpoint`'s requests."""

    def find_job(self, job: Job, *, sent_at: float, claimed: Collection[str]) -> CreatedJob | None:
        """Return the job a create for the intent `job` made, if one exists (its answer was lost).

        By default the intent's job key is looked for in the listing `scan_jobs` pages (newest
        first); a listing that names no input file (Gemini's) leaves the intent's own. A
        provider with a filtered lookup (Mistral) or no job metadata (Anthropic) overrides this.

        Args:
            job: The intent (no `job_id` yet); its `job_key` is the identity to look for.
            sent_at: When that create was sent (this machine's clock); providers look back from
                there by `RECONCILE_LOOKBACK_SECONDS` (clock skew, a slow call).
            claimed: Job ids already taken (by this thread or another one in the same store);
                never adopt one of them.

        Returns:
            The job found, or None when there is none.
        """
        since = sent_at - RECONCILE_LOOKBACK_SECONDS
        found = self.find_listed_job(
            job, "batches", lambda: self.scan_jobs({job["job_key"]}, since, claimed)
        )
        if found is None or found.input_file_id:
            return found
        return replace(found, input_file_id=job["input_file_id"] or "")

    def thread_jobs(
        self, thread_id: str, intents: list[Job], *, since: float, claimed: Collection[str]
    ) -> dict[str, CreatedJob]:
        """Return `{job key: job}` for the jobs of `intents` that already exist at the provider.

        Called once, before a thread with no records of its own submits anything: after a lost
        checkpoint database an earlier life of the thread may have created them. One pass over
        the provider's listing (or one filtered query), never one lookup per intent. By default
        that pass is `scan_jobs` for all the intents' job keys (nothing without a listing).

        Args:
            thread_id: The thread (its jobs carry it where the provider keeps metadata).
            intents: The thread's intents not yet submitted.
            since: Only jobs created after this time (provider clock, epoch seconds).
            claimed: Job ids already taken; never adopt one of them.

        Returns:
            The jobs found, keyed by job key.
        """
        keys = {intent["job_key"] for intent in intents}
        return self.listed_thread_jobs("batches", lambda: self.scan_jobs(keys, since, claimed))

    def scan_jobs(
        self, keys: set[str], since: float, claimed: Collection[str]
    ) -> dict[str, CreatedJob]:
        """Page through the provider's batches newest first back to `since`, matching job keys.

        What the default `find_job` and `thread_jobs` look through; a provider that overrides
        both needs none. A client-side scan: it stops once every key is found, at `since`, or
        at the listing bounds.

        Args:
            keys: The job keys looked for.
            since: Only jobs created after this time (provider clock, epoch seconds).
            claimed: Job ids already taken; never adopt one of them.

        Returns:
            `{job key: job}` of the keys found.

        Raises:
            ProviderError: The listing failed (`find_listed_job` reads a missing listing).
        """
        raise NotImplementedError(f"{self.name} finds its jobs without a listing scan")

    quota_defaults: Budget = Budget()
    """What the provider lets be in flight at once, as documented (`agent.quotas`): the
    context's `max_enqueued_tokens` / `max_pending_requests` / `max_concurrent_jobs` /
    `max_stored_bytes` lower it, and the provider's refusals teach the thread the rest."""

    keeps_input: bool = True
    """True when the provider keeps a copy of each job's input that `input_lines` reads back (to
    resubmit failed requests). False (Anthropic: requests inline, no copy kept): the graph keeps
    the job's input lines in the store instead."""

    def id_matcher(self, job: Job, ids: Sequence[str]) -> Callable[[str], str | None]:
        """Return what maps a result line's custom id to the request id it answers (None: a stray).

        By default the custom id is the request's own id; a provider that sends other custom ids
        (Anthropic: the job's identity plus a position) maps them back here.
        """
        wanted = set(ids)
        return lambda custom_id: custom_id if custom_id in wanted else None

    def job_owner(self, job: Job) -> str | None:
        """Return the job key that an adopted job's requests carry (None: not readable yet).

        Only asked for a job adopted without proof (`CreatedJob.verified` False), once it is
        terminal. Providers that look jobs up by their metadata only adopt proven ones.
        """
        return job["job_key"]

    @abstractmethod
    def status(self, job: Job) -> JobUpdate:
        """Check the job's status once."""

    @abstractmethod
    def file_lines(self, file_id: str) -> Iterator[bytes]:
        """Stream the non-blank lines of a provider file (downloaded as a stream)."""

    @abstractmethod
    def message_parser(self, model: str, *, params: Mapping[str, Any] | None = None) -> LineParser:
        """Return the parity-exact parser of this provider's output lines for `model`.

        `params` are the job's settings of that chat model (`Job.params`): some change the
        parsed message (`output_version`).
        """

    def results(self, job: Job, spec: OutputSpec | None = None) -> Iterator[RequestOutcome]:
        """Stream the outcome of every request the provider returned for `job`.

        The output file comes first, then the error file; lines are parsed one at a time.
        `spec` is the request set's tools / response schema, which some providers' realtime
        parsing depends on (OpenAI parses answers to a response format differently).
        """
        endpoint = job_endpoint(job)
        parser = parser_for(self, job_chat_model(job), job["params"], spec, endpoint)
        read = read_vector_outcome if endpoint == EMBEDDINGS else read_outcome
        job_id = str(job["job_id"])
        for file_id in (job["output_file_id"], job["error_file_id"]):
            if file_id:
                for raw in self.file_lines(file_id):
                    yield read(parser, raw, job_id)  # type: ignore[arg-type]

    def input_lines(self, job: Job) -> Iterator[tuple[str, bytes]]:
        """Stream `(custom_id, raw line)` from the job's input file (to resubmit some of them)."""
        for raw in self.file_lines(str(job["input_file_id"])):
            yield self.line_id(raw), raw

    def line_id(self, raw: bytes) -> str:
        """Return the request id of one of this provider's built input lines.

        Lines carry it as `custom_id` by default; Gemini's lines name it `key`.
        """
        return str(orjson.loads(raw)["custom_id"])

    @abstractmethod
    def cancel(self, job: Job) -> JobUpdate:
        """Ask the provider to cancel the job."""

    expired_statuses: frozenset[str] = frozenset()
    """Raw statuses of a job that ran out of time (see `unanswered_code`)."""

    def unanswered_code(self, job: Job) -> str | None:
        """Return the error code of a request the ended `job` wrote no line for, if known.

        A job that expired gives OpenAI's `batch_expired` (retried in a follow-up job), for
        every provider alike; None leaves the graph's `no_result`.
        """
        return EXPIRED_CODE if job["provider_status"] in self.expired_statuses else None

    stores_files: bool = False
    """True when the provider keeps our files (the uploaded input, the output and error files)
    in a storage with a quota, which `delete_file` frees. Anthropic keeps none: its
    `input_file_id` is a local path."""

    def delete_file(self, file_id: str) -> None:
        """Delete one of our files at the provider (only called when `stores_files` is True).

        Raises:
            ProviderError: The provider refused or failed the delete (404: already gone).
        """
        raise NotImplementedError(f"{self.name} stores no files of ours")

    def delete_files(self, job: Job, *, keep_input: bool = False) -> list[str]:
        """Delete the files of a job whose results are stored: input, output and error file.

        Args:
            job: The job record (its file ids).
            keep_input: Keep the input file (a follow-up job still reads requests from it).

        Returns:
            One message per file that could not be deleted (empty when all were). A failed
            delete never raises: it only leaves a file in the provider's storage.
        """
        if not self.stores_files:
            return []
        ids = [job["output_file_id"], job["error_file_id"]]
        if not keep_input:
            ids.insert(0, job["input_file_id"])
        problems: list[str] = []
        for file_id in dict.fromkeys(i for i in ids if i):
            try:
                self.delete_file(file_id)
            except ProviderError as exc:
                if exc.status_code not in GONE_STATUS:  # a file already gone is deleted
                    problems.append(exception_text(exc))
            except Exception as exc:  # noqa: BLE001 (a file left behind never fails a run)
                problems.append(redact(exception_text(exc)))
        return problems


# Answers that say the provider did nothing (rate limited, overloaded): safe to send again.
REFUSED_STATUS = frozenset({429, 529})
_T = TypeVar("_T")
_Item = TypeVar("_Item")


def lost_create_unresolvable(
    provider: BatchProvider, job: Job, exc: ProviderError
) -> ProviderError:
    """Return the error that stops a lost create's lookup on a server without a batch listing.

    The create was sent, its answer never came, and only a listing could tell whether it made
    a job: sending it again could pay for the batch twice, so nothing is sent again.
    """
    return ProviderError(
        f"{provider.name}: a create for job key {job['job_key']} was sent but its answer was "
        f"lost, and the server has no batch listing (HTTP {exc.status_code}) to tell whether it "
        "made the job; nothing was sent again, so no batch is paid for twice. If the server "
        f"shows no batch with metadata {JOB_KEY_METADATA}={job['job_key']}, send the requests "
        "on a new thread",
        status_code=exc.status_code,
    )


def send_once(
    send: Callable[[], _T],
    find: Callable[[], _T | None],
    *,
    attempts: int = SDK_MAX_RETRIES + 1,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Make a call that must not take effect twice (a batch create, an upload), retrying safely.

    The SDKs' own retries resend a call whatever went wrong, which for a create whose answer was
    lost (a proxy's 502 or 504 after the provider accepted it, a connection dropped once the
    request was out, a timeout) makes a second paid job. So these calls go out with the SDK's
    retries off, and here a refusal (429, 529: the provider did nothing) is simply sent again
    after a pause, while any other transient failure first asks `find` whether the call took
    effect, and uses what it found. Permanent errors (4xx) are raised at once, and so is a refusal
    for a cap on what is in flight (`QuotaExceededError`: nothing was made, the planner waits),
    unless an earlier attempt's fate is unknown: that attempt may be what filled the cap, so
    `find` is asked first, and a job it made is never hidden behind the refusal.

    Args:
        send: Makes the call once; raises `ProviderError` (wrapped by `provider_call`).
        find: Looks up what a call that reached the provider made; None when there is nothing.
        attempts: Sends at most this many times.
        sleep: Waits between attempts (injectable for tests).

    Raises:
        ProviderError: The last failure, when every attempt failed and nothing was found.
    """
    unsure = False  # whether an earlier attempt may have taken effect
    for attempt in range(attempts):
        try:
            return send()
        except QuotaExceededError:
            found = find() if unsure else None
            if found is not None:
                return found
            raise
        except TransientProviderError as exc:
            if attempt == attempts - 1:
                raise
            backoff = min(0.5 * 2**attempt, 8.0) * random.uniform(0.75, 1.0)
            # A lookup comes after the pause: a job that was just made may take a moment to list.
            sleep(exc.retry_after if exc.retry_after is not None else backoff)
            if exc.status_code not in REFUSED_STATUS:
                unsure = True
                found = find()
                if found is not None:
                    return found
    raise AssertionError("unreachable: the last attempt returns or raises")


def bounded_listing(
    items: Iterable[_Item],
    *,
    ident: Callable[[_Item], str],
    created_at: Callable[[_Item], float],
    floor: float,
    limit: int = MAX_LISTED,
) -> Iterator[_Item]:
    """Yield a newest-first listing until it gets older than `floor`, repeats itself or runs long.

    Providers' list endpoints page by cursors or page numbers; one that ignores the cursor (or a
    proxy that caches a page) would serve the same page forever, and a loop waiting for a short
    page would never end. Every listing loop goes through this: it stops at the first item seen
    before, at the first item created before `floor`, and after `limit` items.
    """
    seen: set[str] = set()
    for count, item in enumerate(items):
        key = ident(item)
        if count >= limit or key in seen or created_at(item) < floor:
            return
        seen.add(key)
        yield item


# The (provider, endpoint, listing) triples already warned about (`lacks_listing`).
_warned_listings: set[tuple[str, str, str]] = set()
_warned_lock = threading.Lock()
_shared_clients: dict[str, Any] = {}
_shared_clients_lock = threading.Lock()
_ClientT = TypeVar("_ClientT", httpx2.Client, httpx2.AsyncClient)


def shared_http_client(name: str, factory: Callable[[], _ClientT]) -> _ClientT:
    """Return the process's one HTTP client for `name`, building it with `factory` once.

    A graph run rebuilds its provider at every step (submit, each poll, collect), and every new
    HTTP client loads the system CA bundle (about 45 ms) and opens new connections. One client per
    SDK keeps connections alive between polls. It carries no key: the SDKs send theirs per request.
    """
    with _shared_clients_lock:
        client = _shared_clients.get(name)
        if client is None or client.is_closed:
            client = _shared_clients[name] = factory()
        return client  # type: ignore[no-any-return]


class FastExtra(dict[str, Any]):
    """The (empty) extras of a message the fast parsers assembled: marks it for `message_dump`."""


def message_dump(message: AIMessage) -> dict[str, Any]:
    """Return `message.model_dump()`, without pydantic for a message the fast parsers assembled.

    Their state is plain JSON values in field order, which is what `model_dump` returns (the
    parser self-check and the property tests compare both); skipping pydantic's serializer saves
    about 8 µs per result. Any other message, or one given extra attributes since, goes through
    `model_dump`.
    """
    extra = message.__pydantic_extra__
    if type(extra) is FastExtra and not extra and type(message) is AIMessage:
        return dict(message.__dict__)
    return message.model_dump()


def line_builder_for(
    provider: BatchProvider,
    model: str,
    params: dict[str, Any],
    spec: OutputSpec | None,
    endpoint: Endpoint = CHAT,
) -> Callable[[BatchRequest], bytes]:
    """Return `provider.line_builder(model, params)`, with the request set's spec if it has one.

    An embeddings job's lines come from `provider.embedding_line_builder` instead.

    Raises:
        InputError: The request set has tools or a response schema the provider cannot take,
            or the provider does not batch `endpoint`.
    """
    provider.check_endpoint(endpoint)
    if endpoint == EMBEDDINGS:
        return provider.embedding_line_builder(model, params)
    if spec is None:
        return provider.line_builder(model, params)
    _check_spec_support(provider)
    return provider.line_builder(model, params, spec)  # type: ignore[call-arg]


def parser_for(
    provider: BatchProvider,
    model: str,
    params: Mapping[str, Any],
    spec: OutputSpec | None,
    endpoint: Endpoint = CHAT,
) -> LineParser | VectorParser:
    """Return `provider.message_parser(model, params=params)`, with the set's spec if it has one.

    An embeddings job's lines are read by `provider.vector_parser` instead.

    Raises:
        InputError: The request set has tools or a response schema the provider cannot take,
            or the provider does not batch `endpoint`.
    """
    provider.check_endpoint(endpoint)
    if endpoint == EMBEDDINGS:
        return provider.vector_parser(model, params)
    if spec is None:
        return provider.message_parser(model, params=params)
    _check_spec_support(provider)
    return provider.message_parser(model, spec=spec, params=params)  # type: ignore[call-arg]


def job_chat_model(job: Job) -> str:
    """Return the model of the chat model object that builds `job`'s lines and parses its answers.

    It is the run's model, also for requests that named their own `model` (realtime
    `llm.invoke(messages, model=X)` builds and parses with `llm`'s rules and only sends X); a
    job recorded before `Job.chat_model` existed was built by its own model.
    """
    return job.get("chat_model") or job["model"]


def job_line_builder(
    provider: BatchProvider, job: Job, spec: OutputSpec | None
) -> Callable[[BatchRequest], bytes]:
    """Return the line builder that built `job`'s input (to rebuild the very same bytes)."""
    return line_builder_for(provider, job_chat_model(job), job["params"], spec, job_endpoint(job))


def _check_spec_support(provider: BatchProvider) -> None:
    if not provider.supports_output_spec:
        raise InputError(
            f"the {provider.name} provider does not support tools or a response schema yet",
            source="input",
        )


def nonblank_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a downloaded byte stream into its non-blank lines (without line endings).

    JSONL lines end at a newline byte only. The SDKs' `iter_lines` split text wherever `str.splitlines`
    does, U+2028, U+2029 and NEL included, and those may stand unescaped inside a JSON string:
    an answer holding one came out as two broken lines. Splitting the raw chunks also saves a
    decode and an encode per result line.
    """
    rest = b""
    for chunk in chunks:
        lines = (rest + chunk if rest else chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.strip():
                yield line.rstrip(b"\r")
    if rest.strip():
        yield rest.rstrip(b"\r")


def jsonl_line(line: dict[str, Any]) -> bytes:
    """Serialise one batch line (compact UTF-8 JSON and a newline)."""
    return orjson.dumps(line) + b"\n"


def lc_messages(request: BatchRequest) -> list[Any]:
    """Convert a request's message dicts into LangChain messages."""
    return convert_to_messages(request.messages)


def finish_message(model: BaseChatModel, result: ChatResult, message_key: str) -> AIMessage:
    """Apply the post-processing `BaseChatModel.invoke()` does to a freshly parsed result.

    `invoke()` merges `llm_output` and `generation_info` into `response_metadata` and gives the
    message an `lc_run-` id derived from its run id. We derive that id from the job and request
    instead, so results are stable across re-reads.
    """
    generation = result.generations[0]
    message = generation.message
    if not isinstance(message, AIMessage):
        raise ProviderError(f"provider returned a {type(message).__name__}, expected an AIMessage")
    if model.output_version == "v1":
        from langchain_core.language_models.chat_models import _update_message_content_to_blocks

        message = _update_message_content_to_blocks(message, "v1")
    if message.id is None:
        message.id = f"{LC_ID_PREFIX}-{uuid.uuid5(uuid.NAMESPACE_URL, message_key)}-0"
    metadata = {**(generation.generation_info or {}), **message.response_metadata}
    if len(result.generations) == 1 and result.llm_output is not None:
        metadata = {**result.llm_output, **metadata}
    message.response_metadata = metadata
    return message


def parse_output_line(
    raw: bytes | str,
) -> tuple[str, dict[str, Any] | None, RequestError | None, bool]:
    """Split one OpenAI/Mistral output or error line into (custom_id, body, error, retryable).

    A line fails when `error` is set *or* `response.status_code >= 400` (per-request HTTP errors
    carry `error: null` and the error inside the body, a known pitfall). Error bodies come as
    OpenAI's `{"error": {...}}` or Mistral's flat `{"message", "type", "code"}`.
    """
    line = json.loads(raw)
    custom_id = line.get("custom_id")
    # A custom_id that is not a string matches no request (never str(None) == "None").
    custom_id = custom_id if isinstance(custom_id, str) else ""
    response = line.get("response") or {}
    error = line.get("error")
    status_code = int(response.get("status_code") or 0)
    body = response.get("body")
    if error:
        if isinstance(error, dict):
            code = str(error.get("code") or error.get("type") or "error")
            return (
                custom_id,
                None,
                RequestError(code=code, message=str(error.get("message") or error)),
                is_retryable(code, status_code),
            )
        return (
            custom_id,
            None,
            RequestError(code="error", message=str(error)),
            is_retryable("error", status_code),
        )
    if status_code >= 400 or not isinstance(body, dict):
        inner = (
            body.get("error")
            if isinstance(body, dict) and isinstance(body.get("error"), dict)
            else body
        )
        if isinstance(inner, dict) and (
            inner.get("message") or inner.get("code") or inner.get("type")
        ):
            code = str(inner.get("code") or inner.get("type") or f"http_{status_code}")
            message = str(inner.get("message") or json.dumps(inner))
        else:
            code, message = f"http_{status_code}", json.dumps(body)
        return (
            custom_id,
            None,
            RequestError(code=code, message=message),
            is_retryable(code, status_code),
        )
    return custom_id, body, None, False


# The code of a request its expired batch never ran (OpenAI writes it; the others' alike).
EXPIRED_CODE = "batch_expired"
# Request-level error codes worth a follow-up job: the request itself was fine.
RETRYABLE_CODES = frozenset(
    {
        EXPIRED_CODE,
        "rate_limit_exceeded",
        "rate_limit_error",
        "server_error",
        "internal_error",
        "api_error",
        "overloaded_error",
        "service_unavailable",
        "timeout",
        "timeout_error",
        "request_timeout",
        "no_result",
    }
)


def is_retryable(code: str, status_code: int = 0) -> bool:
    """Tell whether a failed request may succeed if sent again (rate, server, expiry, timeout)."""
    return (
        code in RETRYABLE_CODES
        or status_code == 429
        or status_code >= 500
        or code.startswith(("http_429", "http_5"))
    )


# Codes of a rate limit: realtime meets a 429.
RATE_LIMIT_CODES = frozenset({"rate_limit_exceeded", "rate_limit_error"})
# Codes of a request the provider never ran (expired, cancelled, lost, its batch failed): the
# provider could not serve it, which realtime meets as a 503.
NOT_RUN_CODES = frozenset({EXPIRED_CODE, "no_result", "batch_failed", "service_unavailable"})
# Codes of a server-side failure: realtime meets a 500 (a timeout: the gateway's 504).
SERVER_CODES = frozenset({"server_error", "internal_error", "api_error"})
TIMEOUT_CODES = frozenset({"timeout", "timeout_error", "request_timeout"})
# Codes with no HTTP error behind them: realtime raises something else (or nothing).
NO_STATUS_CODES = CHECKED_CODES | {INVALID_RESPONSE, "bad_result_line", "unknown_result"}

_HTTP_CODE = re.compile(r"http_([1-5]\d\d)")


def error_status(code: str, own: Mapping[str, int]) -> int | None:
    """Return the HTTP status realtime meets for a failure with result code `code`.

    Args:
        code: The result's error code.
        own: The provider's own codes and their statuses (`BatchProvider.http_by_code`),
            looked at first.

    Returns:
        The status: `http_NNN` is NNN, a rate limit 429, a request never run 503, a server
        failure 500 (a timeout 504), any other code a request error, 400; None for a failure
        with no HTTP error behind it (`NO_STATUS_CODES`).
    """
    if code in own:
        return own[code]
    if code in NO_STATUS_CODES:
        return None
    matched = _HTTP_CODE.fullmatch(code)
    if matched:
        return int(matched.group(1))
    if code in RATE_LIMIT_CODES:
        return 429
    if code in NOT_RUN_CODES:
        return 503
    if code in TIMEOUT_CODES:
        return 504
    if code in SERVER_CODES:
        return 500
    return 400


def job_counts(total: int, succeeded: int, failed: int) -> Counts:
    """Return a status check's `Counts`: what is neither answered nor failed is pending.

    Never negative: a provider may count a request both ways while a job settles.
    """
    return Counts(
        total=total, succeeded=succeeded, failed=failed, pending=max(total - succeeded - failed, 0)
    )


def normalise_status(raw: str, known: dict[str, JobStatus], errors: list[str]) -> JobStatus:
    """Map a raw provider status; an unknown one is kept raw, treated as terminal and reported."""
    if raw in known:
        return known[raw]
    errors.append(
        f"unknown provider status {raw!r}: treated as terminal, results collected as they are"
    )
    return "done"
