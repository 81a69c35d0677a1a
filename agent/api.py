"""`run_batch`: the batch graph from Python, for notebooks and scripts.

    from agent import run_batch
    results = run_batch(["Classify: my invoice is wrong", "Say hello"], model="gpt-4o-mini")
    results[0].message  # the AIMessage `.invoke()` would have returned, with usage_metadata

It runs the very graph the CLI runs (submit, poll, collect), compiled with a checkpointer and a
store: in memory by default (a module-wide pair, so a thread can be resumed by id for as long as
the Python process lives), or on `db` (a SQLite file or a `postgresql://` URL, as the CLI's
`--db`), where a thread survives the process and `batch-agent status/results THREAD --db ...`
sees it too. `model=` also takes a `ChatOpenAI` / `ChatMistralAI`, possibly wrapped by
`bind_tools` / `with_structured_output`; it is turned into the graph's context and input by
`agent.model_spec`, so the batch sends what that runnable would send in realtime.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.context import Context
from agent.drive import drive_until_done
from agent.statuses import TERMINAL_THREAD_STATUSES, ResultStatus

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.store.base import BaseStore

_CONTEXT_FIELDS = frozenset(f.name for f in dataclasses.fields(Context))
# The in-memory checkpointer and store of `db=None` runs, shared so a thread can be resumed.
_MEMORY: tuple[BaseCheckpointSaver[Any], BaseStore] | None = None


class BatchError(RuntimeError):
    """A run of the batch stopped on a provider error (bad key, quota, outage).

    Everything already stored is kept: call `run_batch(None, thread_id=err.thread_id, db=...)`
    once the cause is fixed, and it resumes where it stopped.
    """

    def __init__(self, message: str, thread_id: str) -> None:
        """Record the message and the thread to resume."""
        super().__init__(f"{message} [thread {thread_id}]")
        self.thread_id = thread_id


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one request.

    Attributes:
        id: The request's id (given, or its position in the input as a string).
        status: `succeeded` or `failed`.
        message: The `AIMessage` the realtime call would have returned (with `usage_metadata`
            and `response_metadata`), or None when the request failed.
        error: `{"code", "message"}` when the request failed: the provider's error, an answer
            realtime `.invoke()` raises for (`invalid_response`, or from the output parser
            `refusal` / `output_parsing`, the message naming the exception), or with
            `validate_schema=True` one that breaks the schema (`schema`); else None.
        usage: `{"input_tokens", "output_tokens", "total_tokens"}`.
        attempts: How many jobs the request went through (more than 1 after a retry).
        via: How the result was obtained: `batch`, or at a deadline (`deadline=`,
            `fallback=`) `realtime` / `flex` (`agent.fallback`).
        parsed: With a response schema, the parsed answer: JSON, or with
            `model=llm.with_structured_output(Schema)` exactly what that runnable's `.invoke()`
            returns (a `Schema` instance for a Pydantic class, partial JSON, None, or with
            `include_raw=True` the `{"raw", "parsed", "parsing_error"}` dict).
    """

    id: str
    status: ResultStatus
    message: AIMessage | None
    error: dict[str, str] | None
    usage: dict[str, int]
    attempts: int = 1
    parsed: Any = None
    via: str = "batch"

    @property
    def ok(self) -> bool:
        """Tell whether the request succeeded."""
        return self.status == "succeeded"

    @property
    def content(self) -> str:
        """Return the answer's text ('' for a failed request)."""
        return self.message.text if self.message is not None else ""


class ThreadSummary:
    """A batch thread's id, status and totals, as a run returns them beside its results."""

    def __init__(self, thread_id: str, values: Mapping[str, Any]) -> None:
        """Read the summary from the thread's state values."""
        self.thread_id: str = thread_id
        self.status: str = str(values.get("status", "new"))
        self.counts: dict[str, int] = dict(values.get("counts") or {})
        self.usage: dict[str, int] = dict(values.get("usage") or {})
        self.cost: dict[str, Any] | None = values.get("cost")
        # With a deadline's fallback: USD by how the results were obtained (`batch`, ...).
        self.cost_by_via: dict[str, float | None] | None = values.get("cost_by_via")
        self.jobs: list[dict[str, Any]] = list(values.get("jobs") or [])

    @property
    def done(self) -> bool:
        """Tell whether the batch reached a final status (results collected)."""
        return self.status in TERMINAL_THREAD_STATUSES


class BatchResults(list[BatchResult], ThreadSummary):
    """The results of a batch in input order, plus the thread's id, status and totals.

    Empty while the batch is still running (`wait=False`): call `run_batch` again with
    `thread_id=results.thread_id` to check again.
    """

    def __init__(
        self, results: Iterator[BatchResult] | list[BatchResult], thread_id: str, values: dict
    ) -> None:
        """Hold `results` and the thread state's summary."""
        list.__init__(self, results)
        ThreadSummary.__init__(self, thread_id, values)
        if self:
            # The results are the truth: the model's own output parser (a Pydantic class, an
            # `include_raw=True` dict) may judge answers unlike the graph's JSON one.
            succeeded = sum(1 for result in self if result.ok)
            self.counts.update(succeeded=succeeded, failed=len(self) - succeeded)


@dataclass
class _Prepared:
    graph_input: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    # The model's realtime output (`with_structured_output`), applied to each answer.
    output: Callable[[AIMessage], tuple[AIMessage, Any]] | None = None


def run_batch(
    requests: Sequence[Any] | os.PathLike[str] | None,
    *,
    model: Any = None,
    provider: str | None = None,
    system_prompt: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: str | dict[str, Any] | None = None,
    response_schema: dict[str, Any] | None = None,
    db: str | os.PathLike[str] | None = None,
    thread_id: str | None = None,
    wait: bool = True,
    **context: Any,
) -> BatchResults:
    """Run requests through a provider batch API; return one result per request, in order.

    Args:
        requests: A list whose items are each a prompt (str), a request record (a dict, as
            in a JSONL input line: `{"id", "prompt"|"messages", "params"}` or an OpenAI batch
            line), or a conversation (a list of LangChain messages or `{"role", "content"}`
            dicts); or a `pathlib.Path` to a JSONL/TXT request file (streamed, any size); or
            None to resume `thread_id`. Items without an id get their position ("0", "1", ...).
        model: A model name, or a `ChatOpenAI` / `ChatMistralAI` / `ChatAnthropic` /
            `ChatGoogleGenerativeAI` (optionally wrapped by `bind_tools` / `with_structured_output` / `bind`), whose
            provider, settings, endpoint (`base_url`, organization), tools and schema are then
            used (`agent.model_spec`; a setting a batch cannot reproduce is refused by name).
            None uses the provider's default model. A spec (the mapping `spec_from_chat_model`
            returns) is taken as it is.
        provider: `openai`, `mistral`, `anthropic`, `gemini`, `emulator` or `auto` (default:
            the first provider whose API key is set, else the offline emulator).
        system_prompt: System message for requests without one.
        temperature: Sampling temperature.
        max_tokens: Output cap per request.
        tools: Tool definitions for every request (as `bind_tools` takes them).
        tool_choice: `bind_tools`' tool_choice.
        response_schema: JSON schema of the answer (parsed into `BatchResult.parsed`).
        db: A SQLite file or `postgresql://` URL to keep the thread in; None keeps it in
            memory for the life of the process.
        thread_id: The thread to submit on or resume (default: a new one).
        wait: Poll until the batch is done (with the context's growing pauses). False submits
            (or checks once) and returns at once; the results are empty until it is done.
        **context: Any other run-context field (`agent.context.Context`), e.g.
            `poll_interval_seconds=1`, `max_attempts=1`, `base_url=...`, `max_cost=5`, or
            `validate_schema=True` to also fail answers that break the response schema (off by
            default: results are what realtime `.invoke()` returns).

    Returns:
        The results, with `.thread_id`, `.status`, `.counts`, `.usage` and `.cost`.

    Raises:
        agent.requests.InputError: A request is invalid (nothing is uploaded).
        BatchError: A provider call failed for good; resume the thread later.
        TypeError, ValueError: Bad arguments (an unknown context field, an unusable model).
    """
    unknown = sorted(set(context) - _CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"run_batch() got unknown setting(s): {', '.join(unknown)}")
    if requests is None and thread_id is None:
        raise ValueError("give requests to submit, or thread_id to resume")
    prepared = _Prepared(graph_input=_graph_input(requests))
    prepared.context.update(
        {
            "provider": provider,
            "system_prompt": system_prompt,
            "temperature": temperature,
            "max_tokens": max_tokens,
            **context,
        }
    )
    for key, value in (
        ("tools", tools),
        ("tool_choice", tool_choice),
        ("response_schema", response_schema),
    ):
        if value is not None:
            prepared.graph_input[key] = value
    _apply_model(prepared, model)
    settings = run_settings(prepared.context)

    with open_graph(db) as graph:
        thread_id, values = drive_thread(
            graph,
            thread_id,
            settings,
            prepared.graph_input,
            resume=requests is None,
            wait=wait,
            where=db,
        )
        if values.get("status") not in TERMINAL_THREAD_STATUSES:
            return BatchResults([], thread_id, values)
        return BatchResults(
            _read_results(graph, thread_id, values, prepared.output), thread_id, values
        )


def run_settings(fields: Mapping[str, Any]) -> Context:
    """Return the run context of the fields given (None: not given, the default applies).

    Raises:
        TypeError: A field is not a context field (`agent.context.Context`).
    """
    unknown = sorted(set(fields) - _CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
    return Context(**{k: v for k, v in fields.items() if v is not None})


def drive_thread(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    thread_id: str | None,
    settings: Context,
    graph_input: dict[str, Any],
    *,
    resume: bool,
    wait: bool,
    where: str | os.PathLike[str] | None,
) -> tuple[str, dict[str, Any]]:
    """Submit `graph_input` on a new thread (or `thread_id`), or resume it; with `wait`, finish it.

    The one drive of `run_batch` and `run_batch_embeddings`. With `resume` (no new input) the
    thread must exist (`where` names the database in the error).

    Returns:
        The thread's id and its values.

    Raises:
        ValueError: There is nothing to resume.
        BatchError: A provider call failed for good; resume the thread later.
    """
    if thread_id is None and not resume:
        graph_input = {**graph_input, "new_thread": True}  # a made-up id: no earlier life
    thread_id = thread_id or str(uuid.uuid4())
    config: Any = {"configurable": {"thread_id": thread_id}}
    if resume and not graph.get_state(config).values:
        raise ValueError(f"no batch thread {thread_id!r} in {'memory' if where is None else where}")
    values = advance_thread(graph, config, settings, graph_input)
    if wait:
        values = drive_until_done(
            lambda: advance_thread(graph, config, settings, {}),
            values,
            settings.next_poll_interval,
        )
    return thread_id, values


def served_batch_arguments(
    records: Sequence[Mapping[str, Any]], model: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the served batch graph's input and run context for `records` sent with `model`.

    What `run_batch` would pass its graph, for a client that starts the served `batch` graph
    itself (`agent.batched.served`, the bridge of batched calls on a LangGraph server).

    Args:
        records: Request records (`{"id", "messages"}`), sent inline.
        model: A model spec (`agent.model_spec.spec_from_chat_model`).

    Returns:
        The graph input (requests, tools, schema) and the run context (provider, model,
        settings; unset fields left out).
    """
    prepared = _Prepared(graph_input=_graph_input(list(records)))
    _apply_model(prepared, model)
    return prepared.graph_input, {k: v for k, v in prepared.context.items() if v is not None}


def _graph_input(requests: Sequence[Any] | os.PathLike[str] | None) -> dict[str, Any]:
    """Turn `run_batch`'s `requests` into the graph's input (`requests` or `input_path`)."""
    if requests is None:
        return {}
    if isinstance(requests, os.PathLike):
        path = Path(requests)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: request file not found")
        return {"input_path": str(path.resolve())}
    if isinstance(requests, str | bytes):
        raise TypeError(
            "requests must be a list (of prompts, records or conversations) or a pathlib.Path "
            "to a request file, not a single string"
        )
    records = [_record(item, index) for index, item in enumerate(requests)]
    return {"requests": records}


def _record(item: Any, index: int) -> dict[str, Any]:
    """Turn one `requests` item into a graph input record."""
    if isinstance(item, str):
        return {"id": str(index), "prompt": item}
    if isinstance(item, Mapping):
        record = dict(item)
        if "id" not in record and "custom_id" not in record:
            record["id"] = str(index)
        return record
    if isinstance(item, Sequence):
        from langchain_core.messages import convert_to_openai_messages

        messages = convert_to_openai_messages(list(item))
        return {"id": str(index), "messages": messages}
    raise TypeError(
        f"request {index}: expected a prompt, a record dict or a list of messages, "
        f"got {type(item).__name__}"
    )


def _apply_model(prepared: _Prepared, model: Any) -> None:
    """Put a model name, or a chat model's spec (`agent.model_spec`), into context and input.

    `model` may also be such a spec already (a mapping, as `spec_from_chat_model` returns it):
    the batched calls of a user's graph (`agent.batched`) arrive that way.
    """
    if model is None or isinstance(model, str):
        prepared.context["model"] = model
        return
    if isinstance(model, Mapping):
        spec = dict(model)
    else:
        from agent.model_spec import realtime_output, spec_from_chat_model

        spec = spec_from_chat_model(model)
        prepared.output = realtime_output(model)
    given = prepared.context.get("provider")
    if given not in (None, "auto", spec["provider"]):
        raise ValueError(f"provider={given!r} does not match the model's ({spec['provider']!r})")
    prepared.context["provider"] = spec["provider"]
    prepared.context["model"] = spec["model"]
    for key, value in spec["params"].items():
        if prepared.context.get(key) is None:
            prepared.context[key] = value
    # The model's own settings; any given by keyword win, as temperature= does above.
    given_settings = prepared.context.get("model_settings") or {}
    prepared.context["model_settings"] = {**spec["settings"], **given_settings}
    for key in ("base_url", "organization"):
        # The batch goes where the model's realtime calls go: same endpoint, same organization.
        if key in spec:
            given = prepared.context.get(key)
            if given and given != spec[key]:
                raise ValueError(f"{key}= does not match the model's own {key}")
            prepared.context[key] = spec[key]
    from agent.structured import SPEC_KEYS

    for key in SPEC_KEYS:
        if key in spec and key not in prepared.graph_input:
            prepared.graph_input[key] = spec[key]
    extra = spec["request_params"]
    if extra and "requests" in prepared.graph_input:
        # The model's own request parameters apply to every request; a record's own win.
        prepared.graph_input["requests"] = [
            _with_params(record, extra) for record in prepared.graph_input["requests"]
        ]
    elif extra:
        raise ValueError(
            f"this model sets per-request parameters ({', '.join(sorted(extra))}), which a "
            "request file cannot take on: pass the requests as a list"
        )


def _with_params(record: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    if "custom_id" in record:
        return {**record, "body": {**extra, **(record.get("body") or {})}}
    return {**record, "params": {**extra, **(record.get("params") or {})}}


@contextmanager
def open_graph(
    db: str | os.PathLike[str] | None,
) -> Iterator[CompiledStateGraph[Any, Any, Any, Any]]:
    """Compile the batch graph on the in-memory pair, or on `db` with its thread lock.

    The one way `run_batch` and `run_batch_embeddings` open it (`db` as the CLI's `--db`).
    """
    from agent.graph import build_graph
    from agent.persistence import open_batch_graph

    if db is None:
        checkpointer, store = _memory()
        yield build_graph().compile(checkpointer=checkpointer, store=store, name="batch")
        return
    with open_batch_graph(os.fspath(db)) as graph:
        yield graph


def _memory() -> tuple[BaseCheckpointSaver[Any], BaseStore]:
    global _MEMORY
    if _MEMORY is None:
        from langgraph.checkpoint.memory import InMemorySaver
        from langgraph.store.memory import InMemoryStore

        _MEMORY = (InMemorySaver(), InMemoryStore())
    return _MEMORY


def advance_thread(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    config: Any,
    settings: Context,
    graph_input: dict[str, Any],
) -> dict[str, Any]:
    """Run the thread once (holding its lock) and return its state."""
    from agent.persistence import active_thread_lock

    thread_id = str(config["configurable"]["thread_id"])
    with active_thread_lock(thread_id):
        graph.invoke(graph_input, config, context=settings, durability="sync")
        values = dict(graph.get_state(config).values)
    if values.get("status") == "error":
        raise BatchError(str(values.get("error")), thread_id)
    return values


def _read_results(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    thread_id: str,
    values: dict[str, Any],
    output: Callable[[AIMessage], tuple[AIMessage, Any]] | None = None,
) -> Iterator[BatchResult]:
    """Yield the thread's results from the store, page by page, as `BatchResult`s.

    With `output` (`agent.model_spec.realtime_output` of a structured-output model), an answer
    the graph parsed (succeeded, or failed by the JSON parser: `refusal`, `output_parsing`) gets
    the `message` and `parsed` `.invoke()` would give, e.g. a Pydantic instance instead of the
    stored JSON, or the `include_raw=True` dict; where `.invoke()` would raise, the result is
    failed with the exception's type and text (`refusal` for a refusal, else `output_parsing`),
    its message kept. An answer `.invoke()` raises for before its parser (`invalid_response`),
    or that the run's own schema validation failed (`schema`), keeps the graph's error.
    """
    from langchain_core.messages import AIMessage

    from agent.bulk import ThreadData
    from agent.structured import PARSER_CODES, answer_error

    count = int(values.get("request_count") or 0)
    for stored in ThreadData(graph.store, thread_id).iter_results(count):
        message = AIMessage(**stored["message"]) if stored.get("message") else None
        status, error, parsed = stored["status"], stored.get("error"), stored.get("parsed")
        parser_stage = status == "succeeded" or (error or {}).get("code") in PARSER_CODES
        if output is not None and message is not None and parser_stage:
            try:
                message, parsed = output(message)
                status, error = "succeeded", None
            except Exception as exc:  # noqa: BLE001 (any parser error fails this answer only)
                status, parsed, error = "failed", None, dict(answer_error(exc))
        yield BatchResult(
            id=stored["id"],
            status=status,
            message=message,
            error=error,
            usage=stored["usage"],
            attempts=stored.get("attempts", 1),
            parsed=parsed,
            via=stored.get("via", "batch"),
        )
