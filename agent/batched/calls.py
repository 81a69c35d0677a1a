"""What a suspended model call records, and what it is resumed with.

A batched call suspends its node with `interrupt({CALLS: [call, ...]})`: each call is its key,
the batch description of the chat model as bound for that call (`agent.model_spec`), and its
messages in OpenAI's dict form (what a request record takes). The bridge resumes the node with
`{ANSWERS: {key: answer}}`, matched by key, never by position. An answer is the stored result of
that request in the batch graph: its message (an `AIMessage` dumped) or its error, and the
batch-graph thread that ran it. A failed call raises `BatchCallError`, as the exception realtime
raises for that failure where there is one (`as_batch_call_error`).

The key is deterministic: the thread, the task's checkpoint namespace, the call's position among
the batched calls of that task's execution, and a hash of the spec and messages. A node re-run
on resume makes the same calls in the same order, so each finds its answer.
"""

from __future__ import annotations

import contextvars
import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

CALLS = "batch_agent_calls"
"""Key of the interrupt value that lists a task's suspended calls."""
ANSWERS = "batch_agent_answers"
"""Key of the resume value that maps call keys to answers."""
MAP_MARKER = "batch_agent_map"
"""`configurable` key that says a run is under batch-agent: batched models suspend."""

# Position of the next batched call per task namespace, within one execution of the task:
# LangGraph runs each task in a copy of the context, so every execution counts from zero.
_POSITIONS: contextvars.ContextVar[Mapping[str, int] | None] = contextvars.ContextVar(
    "batch_agent_call_positions", default=None
)


class BatchCallError(RuntimeError):
    """A batched model call failed (after batch-agent's retries of retryable failures).

    Raised in the calling node when it resumes, where the realtime call would have raised, so
    the graph's own error handling (retry policies, fallbacks) sees it. For a failure realtime
    meets as an HTTP error (a rate limit, a server error, a rejected request) the exception
    raised is the one the chat model's realtime `.invoke()` raises, made a `BatchCallError` too
    (`as_batch_call_error`): an `except` of the SDK's rate-limit class and `except BatchCallError`
    both catch a rate limit. Each provider says what that exception is
    (`BatchProvider.realtime_exception`).

    Attributes:
        code: The result's error code (`rate_limit_exceeded`, `batch_expired`, ...). Where the
            realtime exception has a `code` of its own (an SDK's HTTP status) that one stays;
            the message names the result's code either way.
        key: The call's key.
        batch: The batch-graph thread that ran the call ('' when unknown).
    """

    code: str
    key: str
    batch: str

    def __init__(self, code: str, message: str, key: str, batch: str = "") -> None:
        """Record the error of call `key`."""
        super().__init__(failure_text(code, message, batch))
        self.code = code
        self.key = key
        self.batch = batch


def failure_text(code: str, message: str, batch: str = "") -> str:
    """Return the words of a failed batched call: its batch, its result's code and message."""
    where = f" in batch {batch}" if batch else ""
    return f"batched model call failed{where} ({code}): {message}"


# Realtime exception class -> its subclass that is a `BatchCallError` too (built once each).
_BOTH: dict[type[BaseException], type[BatchCallError]] = {}
_BOTH_LOCK = threading.Lock()


def realtime_error_class(realtime: type[BaseException]) -> type[BatchCallError]:
    """Return the subclass of both `realtime` and `BatchCallError` (one per realtime class).

    It is named as `realtime` is, so a traceback or an item's error reads as realtime's would.
    """
    if issubclass(realtime, BatchCallError):
        return realtime
    with _BOTH_LOCK:
        both = _BOTH.get(realtime)
        if both is None:
            both = type(
                realtime.__name__,
                (realtime, BatchCallError),
                {
                    "__module__": __name__,
                    "__qualname__": realtime.__qualname__,
                    "__doc__": (
                        f"A failed batched call, raised as realtime raises "
                        f"`{realtime.__module__}.{realtime.__qualname__}` (a `BatchCallError` too)."
                    ),
                },
            )
            _BOTH[realtime] = both
        return both


def as_batch_call_error(
    raised: BaseException, *, code: str, key: str, batch: str = ""
) -> BatchCallError:
    """Return `raised`, the exception realtime raises for a failure, made a `BatchCallError` too.

    The exception keeps everything realtime's carries (its message, response, body, cause):
    only its class becomes `realtime_error_class(type(raised))`, which adds no state.
    """
    raised.__class__ = realtime_error_class(type(raised))
    assert isinstance(raised, BatchCallError)
    if "code" not in vars(raised):
        raised.code = code
    raised.key = key
    raised.batch = batch
    return raised


class UnbatchedModelError(RuntimeError):
    """A node of a mapped graph called a chat model that is not `batched(...)`.

    That call would go out in realtime, at full price, once per item: the map stops instead,
    unless realtime calls are allowed (`map_graph(..., allow_realtime=True)`).
    """


@dataclass(frozen=True)
class Call:
    """One suspended model call."""

    key: str
    spec: dict[str, Any]
    messages: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """Return the call as plain JSON (it is checkpointed in the interrupt)."""
        return {"key": self.key, "spec": self.spec, "messages": self.messages}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Call:
        """Read a call back from an interrupt value."""
        return cls(
            key=str(value["key"]), spec=dict(value["spec"]), messages=list(value["messages"])
        )

    def group(self) -> bytes:
        """Return what pools calls into one batch: the same spec (provider, model, bindings)."""
        return orjson.dumps(self.spec, option=orjson.OPT_SORT_KEYS)


def next_position(namespace: str) -> int:
    """Return the position of the next batched call of the running task execution."""
    positions = _POSITIONS.get() or {}
    position = positions.get(namespace, 0)
    # A new mapping, never a mutation: a nested task's context copy must not count upwards.
    _POSITIONS.set({**positions, namespace: position + 1})
    return position


def call_key(
    thread_id: str, namespace: str, position: int, spec: Mapping[str, Any], messages: Any
) -> str:
    """Return the deterministic key of a call (64 characters at most: a request id)."""
    digest = hashlib.sha256()
    for part in (thread_id, namespace, str(position)):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(orjson.dumps({"spec": spec, "messages": messages}, option=orjson.OPT_SORT_KEYS))
    return f"call-{digest.hexdigest()[:40]}"


def calls_of(value: Any) -> list[Call] | None:
    """Return the calls an interrupt value suspends on, or None if it is not a batched call's."""
    if isinstance(value, Mapping) and CALLS in value:
        return [Call.from_json(call) for call in value[CALLS]]
    return None


def answer(
    message: Mapping[str, Any] | None, error: Mapping[str, Any] | None, batch: str = ""
) -> dict[str, Any]:
    """Return the answer to a call: the stored result's message dump or its error, and its batch."""
    return {
        "message": dict(message) if message else None,
        "error": dict(error) if error else None,
        "batch": batch,
    }
