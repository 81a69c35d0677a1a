"""`map_graph`: run a user's LangGraph graph over a dataset, its batched model calls pooled per round.

Each input item is one thread of the user's graph (`<map id>-item-<index>`). A round:

1. every thread runs until it ends or suspends on batched calls (`agent.batched.model`);
2. the calls of all suspended threads that have no answer yet are pooled, one batch-graph thread
   per model description (`agent.batched.calls.Call.group`), and run through `run_batch`
   (splitting, dedup, budget, retries, crash-safe submits, cost: the machinery of `run`);
3. every answer is written to the store under its call key before any thread is resumed, and
   each suspended thread is resumed with `Command(resume=...)` carrying its answers by key.

Everything a round needs is durable: the threads' checkpoints hold the pending calls, the store
holds the answers, and a pool's batch thread is named by the keys it holds. A map killed at any
moment and run again finds answered calls answered and pooled calls' batch threads where they
were: no call is sent twice, no item is lost.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from langgraph.types import Command

from agent.batched.calls import ANSWERS, MAP_MARKER, Call, answer, calls_of
from agent.statuses import ItemStatus

ROOT = "batch_agent_map"
"""Store namespace root of the maps' own records (answers, items)."""


@dataclass(frozen=True)
class MapItem:
    """The outcome of one input item.

    Attributes:
        index: The item's position in the input.
        thread_id: The user graph's thread that ran it.
        status: `completed`, `failed` or `interrupted` (`ItemStatus`).
        state: The thread's final state values (None if it never started).
        error: What went wrong, for a failed or interrupted item.
        calls: How many batched model calls the item made.
        usage: Their token usage (`input_tokens`, `output_tokens`, `total_tokens`).
    """

    index: int
    thread_id: str
    status: ItemStatus
    state: dict[str, Any] | None
    error: str | None
    calls: int
    usage: dict[str, int]


@dataclass
class Round:
    """What one round pooled: calls sent, batch threads (one per model description)."""

    calls: int
    batch_threads: list[str]


class MapResults(list[MapItem]):
    """The items' outcomes in input order, plus the map's id and rounds."""

    def __init__(self, items: list[MapItem], map_id: str, rounds: list[Round]) -> None:
        """Hold the items, the map id (to resume) and this run's rounds."""
        super().__init__(items)
        self.map_id = map_id
        self.rounds = rounds


@dataclass
class _Suspended:
    index: int
    waits: list[tuple[str, list[Call]]] = field(default_factory=list)
    """(interrupt id, its calls) per suspended task."""


def map_graph(
    graph: Any,
    inputs: Sequence[Mapping[str, Any]] | None,
    *,
    map_id: str | None = None,
    db: str | os.PathLike[str] | None = None,
    max_rounds: int = 1000,
    on_round: Callable[[int, int, int], None] | None = None,
    **context: Any,
) -> MapResults:
    """Run `graph` once per input item, its batched model calls pooled into batch jobs per round.

    Args:
        graph: The user's graph: a `StateGraph` builder or a compiled graph (recompiled here on
            batch-agent's checkpointer; its nodes call `batched(...)` models).
        inputs: One input per item (a thread of the graph), or None to resume `map_id`.
        map_id: The map to start or resume (default: a new one).
        db: A SQLite file or `postgresql://` URL for the threads, answers and batches; None
            keeps everything in memory for the life of the process.
        max_rounds: Stop after this many rounds (a graph that never ends).
        on_round: Called as `on_round(round, calls, items_done)` after each round's pooling.
        **context: Run-context settings for the batches (`agent.context.Context`), e.g.
            `poll_interval_seconds=1`, `max_attempts=2`, `max_cost=5`.

    Returns:
        One `MapItem` per input, in input order, with `.map_id` and `.rounds`.
    """
    from agent.api import run_batch

    if inputs is None and map_id is None:
        raise ValueError("give inputs to map, or map_id to resume")
    map_id = map_id or f"map-{uuid.uuid4().hex[:12]}"
    with _persistence(db) as (checkpointer, store):
        compiled = _compiled(graph, checkpointer, store)
        records = _MapRecords(store, map_id)
        items = records.inputs(inputs)
        configs = [_config(map_id, index) for index in range(len(items))]
        failures: dict[int, str] = {}
        for index, item in enumerate(items):
            if not compiled.get_state(configs[index]).values and index not in failures:
                _advance(compiled, item, configs[index], index, failures)
        rounds: list[Round] = []
        for number in range(max_rounds):
            suspended = _suspended(compiled, configs, failures)
            if not suspended:
                break
            unanswered: dict[str, Call] = {}
            for waiting in suspended:
                for _, calls in waiting.waits:
                    for call in calls:
                        if call.key not in unanswered and records.answer(call.key) is None:
                            unanswered[call.key] = call
            batch_threads: list[str] = []
            for group in _groups(unanswered.values()):
                thread_id = f"{map_id}-batch-{_keys_digest(group)}"
                batch_threads.append(thread_id)
                results = run_batch(
                    [{"id": call.key, "messages": call.messages} for call in group],
                    model=group[0].spec,
                    db=db,
                    thread_id=thread_id,
                    **context,
                )
                # Durable before any thread moves on: a kill from here on loses nothing.
                records.put_answers(
                    {
                        result.id: answer(
                            result.message.model_dump() if result.message else None,
                            result.error,
                            thread_id,
                        )
                        for result in results
                    }
                )
            rounds.append(Round(calls=len(unanswered), batch_threads=batch_threads))
            for waiting in suspended:
                resume = {
                    interrupt_id: {ANSWERS: {c.key: records.answer(c.key) for c in calls}}
                    for interrupt_id, calls in waiting.waits
                }
                records.count_delivered(waiting.index, [c for _, cs in waiting.waits for c in cs])
                _advance(
                    compiled,
                    Command(resume=resume),
                    configs[waiting.index],
                    waiting.index,
                    failures,
                )
            if on_round is not None:
                done = sum(1 for c in configs if not compiled.get_state(c).next)
                on_round(number + 1, len(unanswered), done)
        return MapResults(
            [
                _item(compiled, configs[index], index, failures, records)
                for index in range(len(items))
            ],
            map_id,
            rounds,
        )


def _config(map_id: str, index: int) -> dict[str, Any]:
    return {"configurable": {"thread_id": f"{map_id}-item-{index}", MAP_MARKER: map_id}}


def _advance(compiled: Any, value: Any, config: Any, index: int, failures: dict[int, str]) -> None:
    """Run one thread until it ends or suspends; a node's exception fails that item only."""
    try:
        compiled.invoke(value, config)
    except Exception as exc:  # noqa: BLE001 (the user's node raised: this item fails)
        failures[index] = f"{type(exc).__name__}: {exc}"


def _suspended(compiled: Any, configs: list[Any], failures: dict[int, str]) -> list[_Suspended]:
    """Return the threads waiting on batched calls (failed items are not resumed)."""
    waiting: list[_Suspended] = []
    for index, config in enumerate(configs):
        if index in failures:
            continue
        state = compiled.get_state(config)
        entry = _Suspended(index)
        for pending in state.interrupts:
            calls = calls_of(pending.value)
            if calls is not None:
                entry.waits.append((pending.id, calls))
        if entry.waits:
            waiting.append(entry)
    return waiting


def _groups(calls: Iterator[Call] | Any) -> list[list[Call]]:
    """Pool calls by model description, each pool in key order (a stable batch thread)."""
    groups: dict[bytes, list[Call]] = {}
    for call in calls:
        groups.setdefault(call.group(), []).append(call)
    return [sorted(group, key=lambda c: c.key) for _, group in sorted(groups.items())]


def _keys_digest(group: list[Call]) -> str:
    digest = hashlib.sha256()
    for call in group:
        digest.update(call.key.encode())
    return digest.hexdigest()[:16]


def _item(
    compiled: Any, config: Any, index: int, failures: dict[int, str], records: _MapRecords
) -> MapItem:
    state = compiled.get_state(config)
    calls, usage = records.delivered(index)
    values = dict(state.values) if state.values else None
    error = failures.get(index) or next(
        (f"{type(t.error).__name__}: {t.error}" for t in state.tasks if t.error), None
    )
    status: ItemStatus = "completed"
    if error is not None:
        status = "failed"
    elif state.next:
        status = "interrupted"
        error = "the graph waits for an interrupt() of its own (not a batched model call)"
    return MapItem(index, config["configurable"]["thread_id"], status, values, error, calls, usage)


class _MapRecords:
    """A map's durable records in the store: its inputs, the answers by call key, per-item usage."""

    def __init__(self, store: Any, map_id: str) -> None:
        self.store = store
        self.map_id = map_id

    def inputs(self, inputs: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
        """Record the map's inputs on first run; return them (resuming: the recorded ones)."""
        namespace = (ROOT, self.map_id)
        item = self.store.get(namespace, "inputs")
        if item is not None:
            recorded = list(item.value["items"])
            if inputs is not None and [dict(i) for i in inputs] != recorded:
                raise ValueError(f"map {self.map_id} was started with other inputs")
            return recorded
        if inputs is None:
            raise ValueError(f"no map {self.map_id!r} to resume")
        items = [dict(i) for i in inputs]
        self.store.put(namespace, "inputs", {"items": items})
        return items

    def answer(self, key: str) -> dict[str, Any] | None:
        """Return the stored answer of call `key`, if any."""
        item = self.store.get((ROOT, self.map_id, "answers"), key)
        return dict(item.value) if item is not None else None

    def put_answers(self, answers: Mapping[str, dict[str, Any]]) -> None:
        """Store answers by call key (one batch write)."""
        from langgraph.store.base import PutOp

        namespace = (ROOT, self.map_id, "answers")
        ops = [PutOp(namespace, key, value) for key, value in answers.items()]
        if ops:
            self.store.batch(ops)

    def count_delivered(self, index: int, calls: list[Call]) -> None:
        """Remember which calls item `index` was answered (its calls and tokens)."""
        namespace = (ROOT, self.map_id, "items")
        item = self.store.get(namespace, str(index))
        keys = list(item.value["keys"]) if item is not None else []
        keys.extend(c.key for c in calls if c.key not in keys)
        self.store.put(namespace, str(index), {"keys": keys})

    def delivered(self, index: int) -> tuple[int, dict[str, int]]:
        """Return how many calls item `index` made and their token usage."""
        item = self.store.get((ROOT, self.map_id, "items"), str(index))
        keys = list(item.value["keys"]) if item is not None else []
        usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        for key in keys:
            found = self.answer(key) or {}
            meta = (found.get("message") or {}).get("usage_metadata") or {}
            for name in usage:
                usage[name] += int(meta.get(name) or 0)
        return len(keys), usage


def _compiled(graph: Any, checkpointer: Any, store: Any) -> Any:
    """Compile the user's graph (or its builder) on batch-agent's checkpointer and store."""
    from langgraph.graph import StateGraph

    builder = graph if isinstance(graph, StateGraph) else getattr(graph, "builder", None)
    if not isinstance(builder, StateGraph):
        raise TypeError(
            f"map_graph() needs a StateGraph or a compiled graph, got {type(graph).__name__}"
        )
    return builder.compile(checkpointer=checkpointer, store=store)


@contextmanager
def _persistence(db: str | os.PathLike[str] | None) -> Iterator[tuple[Any, Any]]:
    if db is None:
        from langgraph.checkpoint.memory import InMemorySaver
        from langgraph.store.memory import InMemoryStore

        yield _MEMORY.setdefault("pair", (InMemorySaver(), InMemoryStore()))
        return
    from agent.persistence import open_persistence

    with open_persistence(os.fspath(db)) as persistence:
        yield persistence.checkpointer, persistence.store


# The in-memory pair of `db=None` maps, shared so a map can be resumed in the same process.
_MEMORY: dict[str, tuple[Any, Any]] = {}
