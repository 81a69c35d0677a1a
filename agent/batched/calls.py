"""What a suspended model call records, and what it is resumed with.

A batched call suspends its node with `interrupt({CALLS: [call, ...]})`: each call is its key,
the batch description of the chat model as bound for that call (`agent.model_spec`), and its
messages in OpenAI's dict form (what a request record takes). The bridge resumes the node with
`{ANSWERS: {key: answer}}`, matched by key, never by position. An answer is the stored result of
that request in the batch graph: its message (an `AIMessage` dumped) or its error.

The key is deterministic: the thread, the task's checkpoint namespace, the call's position among
the batched calls of that task's execution, and a hash of the spec and messages. A node re-run
on resume makes the same calls in the same order, so each finds its answer.
"""

from __future__ import annotations

import contextvars
import hashlib
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
    the graph's own error handling (retry policies, fallbacks) sees it.

    Attributes:
        code: The result's error code (`rate_limit_exceeded`, `batch_expired`, `refusal`, ...).
        key: The call's key.
    """

    def __init__(self, code: str, message: str, key: str) -> None:
        """Record the error of call `key`."""
        super().__init__(f"batched model call failed ({code}): {message}")
        self.code = code
        self.key = key


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


def answer(message: Mapping[str, Any] | None, error: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the answer to a call: the stored result's message dump or its error."""
    return {"message": dict(message) if message else None, "error": dict(error) if error else None}
