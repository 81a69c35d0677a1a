"""The small interface every batch provider implements, and what they share.

A provider turns validated requests into its batch input (`prepare`), creates the job (`submit`),
reports its status (`status`), streams per-request outcomes (`results`) and cancels (`cancel`).
OpenAI and Mistral share the output-line shape `{custom_id, response: {status_code, body}, error}`,
so the line parsing lives here; building bodies and parsing bodies into `AIMessage`s is delegated
to the matching LangChain chat model, which is what keeps batch requests and results identical to
realtime `.invoke()` calls.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import httpx2
import orjson
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, convert_to_messages
from langchain_core.outputs import ChatResult
from langchain_core.utils.utils import LC_ID_PREFIX

from agent.providers.errors import ProviderError
from agent.requests import BatchRequest, InputError
from agent.state import Counts, Job, JobStatus, RequestError

if TYPE_CHECKING:
    from agent.structured import OutputSpec

# Metadata key carrying the deterministic job key, used to find a job whose create response was lost.
JOB_KEY_METADATA = "batch_agent_job_key"
# How far before an intent we look when reconciling (clock skew, a re-planned intent).
RECONCILE_LOOKBACK_SECONDS = 3600.0
# SDK-level retries of 429/5xx/timeouts/connection errors (exponential backoff with jitter).
SDK_MAX_RETRIES = 5
# A job note for a provider whose final status does not say "cancelled" (Anthropic: `ended`).
CANCELLED_NOTE = "ended after a cancel request"


@dataclass(frozen=True)
class PreparedBatch:
    """A provider-ready batch input for one job (one model)."""

    model: str
    request_ids: list[str]
    jsonl: bytes
    """The JSONL file content, one request per line, in input order."""


@dataclass(frozen=True)
class ProviderLimits:
    """What one job may hold at this provider."""

    max_requests: int
    max_file_bytes: int


@dataclass(frozen=True)
class CreatedJob:
    """A job the provider accepted (or that reconciliation found)."""

    job_id: str
    created_at: float
    input_file_id: str


@dataclass(frozen=True)
class CreateAttempt:
    """A create the graph sent for an intent, as recorded in the store (`journals_creates`)."""

    sent_at: float
    """When the create call started (this machine's clock)."""
    job_id: str | None
    """The job id the create returned; None if no answer was recorded (lost or still pending)."""


@dataclass(frozen=True)
class JobUpdate:
    """What one status check learned about a job."""

    provider_status: str
    status: JobStatus
    counts: Counts
    output_file_id: str | None
    error_file_id: str | None
    errors: list[str]


class RequestOutcome(NamedTuple):
    """One request's result as read from the provider's output or error file.

    A named tuple rather than a frozen dataclass: one is made per request, several times faster.
    """

    custom_id: str
    message: AIMessage | None
    error: RequestError | None
    retryable: bool = False


class LineParser(Protocol):
    """Parses one output/error file line into `(custom_id, message, error, retryable)`."""

    def parse_line(
        self, raw: bytes | str, job_id: str
    ) -> tuple[str, AIMessage | None, RequestError | None, bool]:
        """Parse `raw`; `job_id` prefixes the message key."""
        ...


class BatchProvider(ABC):
    """Interface of a batch provider: prepare, upload/create (submit), status, results, cancel.

    Submission is split in two calls, each with a lookup twin, so a crash between any two steps
    never creates a second job: `find_file` finds an upload by its deterministic name and
    `find_job` finds a job by the job key stored in its metadata (`reconcile` wraps it; a
    provider without job metadata overrides `reconcile` and works from the create journal).
    A provider that takes requests inline (Anthropic) keeps the file locally in `upload` and
    returns its path as the file id, which `create` streams.
    """

    name: str
    """Protocol name stored in `Job.provider` ('openai', 'mistral', 'anthropic')."""
    default_model: str
    limits: ProviderLimits

    organization: str = ""
    """The organization jobs are created in ('' for the SDK's default; OpenAI only)."""

    def __init__(self, *, emulated: bool, base_url: str) -> None:
        """Remember where jobs go; subclasses build their SDK client from these."""
        self.emulated = emulated
        self.base_url = base_url

    def sdk_endpoint(
        self,
        emulator_prefix: str,
        key_env: str,
        http_client: httpx2.Client | None,
        default_client: Callable[[], httpx2.Client] | None = None,
    ) -> tuple[str | None, str, httpx2.Client | None]:
        """Return `(base URL, API key, HTTP client)` for this provider's SDK client.

        The in-process emulator gets a placeholder key and an HTTP client wired to it; anything
        else gets `base_url` (None: the SDK's default) and the key from the environment, read
        here and kept only inside the SDK client. Given `default_client`, a real endpoint gets
        one HTTP client per process built by it (see `shared_http_client`).
        """
        if self.emulated:
            from agent.emulator import IN_PROCESS_BASE_URL, emulator_http_client

            return (
                f"{IN_PROCESS_BASE_URL}{emulator_prefix}",
                "emulator",
                http_client or emulator_http_client(),
            )
        if http_client is None and default_client is not None:
            http_client = shared_http_client(key_env, default_client)
        return self.base_url or None, os.environ.get(key_env) or "no-key-set", http_client

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

    def prepare(
        self,
        requests: list[BatchRequest],
        model: str,
        params: dict[str, Any],
        spec: OutputSpec | None = None,
    ) -> PreparedBatch:
        """Build the whole batch input for `requests` in memory (small batches, tests)."""
        build = line_builder_for(self, model, params, spec)
        jsonl = b"".join(build(r) for r in requests)
        return PreparedBatch(model=model, request_ids=[r.id for r in requests], jsonl=jsonl)

    def model_profile(self, model: str) -> dict[str, Any] | None:
        """Return LangChain's profile of `model` (context window, ...), None if unknown."""
        return None

    def check_completion_window(self, completion_window: str) -> None:  # noqa: B027 (optional hook)
        """Raise `InputError` if the provider cannot take this completion window."""

    @abstractmethod
    def upload(self, path: Path, file_name: str) -> str:
        """Upload the batch input file at `path` as `file_name` (streamed); return the file id."""

    @abstractmethod
    def find_file(self, file_name: str, size: int, since: float) -> str | None:
        """Return the id of an earlier complete upload named `file_name` of `size` bytes."""

    @abstractmethod
    def create(
        self, input_file_id: str, *, model: str, completion_window: str, metadata: dict[str, str]
    ) -> CreatedJob:
        """Create the batch job from an uploaded file."""

    @abstractmethod
    def find_job(self, job_key: str, since: float) -> CreatedJob | None:
        """Return the job created with `job_key` in its metadata, if the provider has one."""

    journals_creates: bool = False
    """True for a provider whose jobs carry no metadata (Anthropic): the graph then records in
    the store that a create was sent (before the call) and the job id it returned (right after),
    and hands that record to `reconcile`, which cannot look the job key up at the provider."""

    def reconcile(
        self,
        job: Job,
        *,
        claimed: Collection[str],
        attempt: CreateAttempt | None,
        request_ids: Callable[[], list[str]],
    ) -> CreatedJob | None:
        """Return the provider job this intent already created (its create answer was lost).

        Args:
            job: The intent (no `job_id` yet).
            claimed: Job ids the thread already holds; never adopt one of them twice.
            attempt: The store's record of a create sent for this intent (only with
                `journals_creates`), None when none was sent.
            request_ids: Returns the intent's request ids, in order (read only if needed).

        The default looks the job key up in the jobs' metadata (`find_job`).
        """
        return self.find_job(job["job_key"], job["intent_at"])

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
        if spec is None:
            parser = self.message_parser(job_chat_model(job), params=job["params"])
        else:
            _check_spec_support(self)
            parser = self.message_parser(
                job_chat_model(job),
                spec=spec,  # type: ignore[call-arg]
                params=job["params"],
            )
        for file_id in (job["output_file_id"], job["error_file_id"]):
            if file_id:
                for raw in self.file_lines(file_id):
                    yield RequestOutcome(*parser.parse_line(raw, str(job["job_id"])))

    def input_lines(self, job: Job) -> Iterator[tuple[str, bytes]]:
        """Stream `(custom_id, raw line)` from the job's input file (to resubmit some of them)."""
        for raw in self.file_lines(str(job["input_file_id"])):
            yield str(orjson.loads(raw)["custom_id"]), raw

    @abstractmethod
    def cancel(self, job: Job) -> JobUpdate:
        """Ask the provider to cancel the job."""


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
    provider: BatchProvider, model: str, params: dict[str, Any], spec: OutputSpec | None
) -> Callable[[BatchRequest], bytes]:
    """Return `provider.line_builder(model, params)`, with the request set's spec if it has one.

    Raises:
        InputError: The request set has tools or a response schema the provider cannot take.
    """
    if spec is None:
        return provider.line_builder(model, params)
    _check_spec_support(provider)
    return provider.line_builder(model, params, spec)  # type: ignore[call-arg]


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
    return line_builder_for(provider, job_chat_model(job), job["params"], spec)


def _check_spec_support(provider: BatchProvider) -> None:
    if not provider.supports_output_spec:
        raise InputError(
            f"the {provider.name} provider does not support tools or a response schema yet",
            source="input",
        )


def to_jsonl(lines: Iterable[dict[str, Any]]) -> bytes:
    """Serialise batch lines as compact JSONL."""
    return b"".join(jsonl_line(line) for line in lines)


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
    custom_id = str(line.get("custom_id"))
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


# Request-level error codes worth a follow-up job: the request itself was fine.
RETRYABLE_CODES = frozenset(
    {
        "batch_expired",
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


def normalise_status(raw: str, known: dict[str, JobStatus], errors: list[str]) -> JobStatus:
    """Map a raw provider status; an unknown one is kept raw, treated as terminal and reported."""
    if raw in known:
        return known[raw]
    errors.append(
        f"unknown provider status {raw!r}: treated as terminal, results collected as they are"
    )
    return "done"
