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
were: no call is sent twice, no item is lost. An item whose last stop was checkpointed without
its writes (a kill between the two) runs on from that checkpoint before the first round.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from langchain_core.callbacks import BaseCallbackHandler
from langgraph.types import Command

from agent.batched import kill_points
from agent.batched.calls import (
    ANSWERS,
    MAP_MARKER,
    Call,
    UnbatchedModelError,
    answer,
    calls_of,
)
from agent.pricing import Cost, Quote, TokenTally, parse_price_override, quote, total_cost
from agent.requests import InputError
from agent.statuses import ItemStatus

logger = logging.getLogger("batch_agent")

ROOT = "batch_agent_map"
"""Store namespace root of the maps' own records (answers, items)."""
USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")
"""The token counts an answer keeps for its item's usage."""


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
        cost: What they cost at the batch price, and what they would have cost in realtime
            (`agent.pricing.Cost`; None when the item made no call). A call identical to
            another item's was sent once; each item is still charged its own answer here.
    """

    index: int
    thread_id: str
    status: ItemStatus
    state: dict[str, Any] | None
    error: str | None
    calls: int
    usage: dict[str, int]
    cost: Cost | None = None


@dataclass
class Round:
    """What one round pooled: calls sent, batch threads (one per model description)."""

    calls: int
    batch_threads: list[str]


class MapResults(list[MapItem]):
    """The items' outcomes in input order, plus the map's id, rounds and cost."""

    def __init__(
        self, items: list[MapItem], map_id: str, rounds: list[Round], cost: Cost | None
    ) -> None:
        """Hold the items, the map id (to resume), this run's rounds and the map's cost."""
        super().__init__(items)
        self.map_id = map_id
        self.rounds = rounds
        self.cost = cost
        """What every batch of the map cost (all its runs), batch and realtime price."""


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
    source: str = "input",
    lines: Sequence[int] | None = None,
    allow_realtime: bool = False,
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
        source: What to name the inputs by in errors (a file name; default `input`).
        lines: The inputs' line numbers in `source` (default: their positions, from 1).
        allow_realtime: Let nodes call chat models that are not `batched(...)` (in realtime, at
            full price); by default such a call stops the map with `UnbatchedModelError`.
        **context: Run-context settings for the batches (`agent.context.Context`), e.g.
            `poll_interval_seconds=1`, `max_attempts=2`, `max_cost=5`.

    Returns:
        One `MapItem` per input, in input order, with `.map_id` and `.rounds`.

    Raises:
        agent.requests.InputError: An input the graph's input schema rejects (before any
            item runs or anything is sent).
        UnbatchedModelError: A node called a chat model that is not batched (unless
            `allow_realtime`): raised as soon as one does, before its round is sent.
    """
    from agent.api import run_batch

    if inputs is None and map_id is None:
        raise ValueError("give inputs to map, or map_id to resume")
    map_id = map_id or f"map-{uuid.uuid4().hex[:12]}"
    with _persistence(db) as (checkpointer, store):
        compiled = _compiled(graph, kill_points.watched(checkpointer), store)
        records = _MapRecords(store, map_id)
        if inputs is not None:
            check_inputs(compiled, inputs, source=source, lines=lines)
        items = records.inputs(inputs)
        guard = RealtimeCallGuard(allow=allow_realtime)
        configs = [_config(map_id, index, guard) for index in range(len(items))]
        failures: dict[int, str] = {}
        for index, item in enumerate(items):
            state = compiled.get_state(configs[index])
            if not state.values:
                _advance(compiled, item, configs[index], index, failures)
            elif _stalled(state):
                # Killed between a stop's checkpoint and its writes: run its tasks on.
                _advance(compiled, None, configs[index], index, failures)
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
                results = _run_pool(run_batch, group, thread_id, db, context)
                kill_points.reach("pool")
                # Durable before any thread moves on: a kill from here on loses nothing.
                prices = quote(
                    group[0].spec["provider"],
                    group[0].spec["model"],
                    overrides=parse_price_override(str(context.get("price_override") or "")),
                )
                records.put_answers(
                    {result.id: _priced_answer(result, prices, thread_id) for result in results},
                    batch=(thread_id, results.cost),
                )
            rounds.append(Round(calls=len(unanswered), batch_threads=batch_threads))
            kill_points.reach("answers")
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
            # Every suspended thread has its answers in its checkpoint now: keep only what the
            # items' accounting needs (the batch thread's result pages keep the messages).
            records.slim_answers(
                [c.key for waiting in suspended for _, calls in waiting.waits for c in calls]
            )
            if on_round is not None:
                done = sum(1 for c in configs if not compiled.get_state(c).next)
                on_round(number + 1, len(unanswered), done)
        kill_points.reach("output")
        return MapResults(
            [
                _item(compiled, configs[index], index, failures, records)
                for index in range(len(items))
            ],
            map_id,
            rounds,
            records.cost(),
        )


def _run_pool(
    run_batch: Any,
    group: list[Call],
    thread_id: str,
    db: str | os.PathLike[str] | None,
    context: Mapping[str, Any],
) -> Any:
    """Run one pool of calls as a batch thread; return its results.

    The requests go in as a file, not inline: inline records would be checkpointed with the
    batch thread's input, and the results stay in the store's pages only (`results_in_state`
    0), so a round adds to the checkpoint database what its calls' answers need, once.
    """
    spec = dict(group[0].spec)
    # What `.bind(...)` added goes into every request's params, as `run_batch` does inline.
    params = spec.pop("request_params", None) or {}
    spec["request_params"] = {}
    with tempfile.TemporaryDirectory(prefix="batch-agent-map-") as folder:
        path = Path(folder) / f"{thread_id}.jsonl"
        with path.open("wb") as fh:
            for call in group:
                record: dict[str, Any] = {"id": call.key, "messages": call.messages}
                if params:
                    record["params"] = params
                fh.write(orjson.dumps(record) + b"\n")
        return run_batch(
            path,
            model=spec,
            db=db,
            thread_id=thread_id,
            **{"results_in_state": 0, **context},
        )


def _priced_answer(result: Any, prices: Quote, batch: str) -> dict[str, Any]:
    """Return a batch result as a call's answer (from batch thread `batch`), with its cost."""
    message = result.message.model_dump() if result.message else None
    tally = TokenTally()
    tally.add({"usage": result.usage, "message": message})
    cost = prices.price(tally.input_tokens, tally.cached_input_tokens, tally.output_tokens)
    meta = (message or {}).get("usage_metadata") or {}
    usage = {name: int(meta.get(name) or 0) for name in USAGE_KEYS}
    return {**answer(message, result.error, batch), "cost": cost, "usage": usage}


def check_inputs(
    compiled: Any,
    inputs: Sequence[Mapping[str, Any]],
    *,
    source: str = "input",
    lines: Sequence[int] | None = None,
) -> None:
    """Refuse, naming the line, an input the graph's input schema rejects or has no key for.

    What LangGraph itself would refuse when the item runs: a Pydantic input schema validates
    the item (a TypedDict one validates nothing: its values reach the nodes as given). And a
    key the schema does not have, which LangGraph drops silently: an item whose `text`
    arrived as `txt` would run on nothing.

    Raises:
        InputError: The first input that does not fit.
    """
    from pydantic import BaseModel, ValidationError

    schema = getattr(getattr(compiled, "builder", None), "input_schema", None)
    known = _input_keys(schema)
    validated = isinstance(schema, type) and issubclass(schema, BaseModel)
    for index, item in enumerate(inputs):
        line = lines[index] if lines is not None else index + 1
        if not isinstance(item, Mapping):
            raise InputError("an item's input must be an object", source=source, line=line)
        unknown = sorted(set(item) - known) if known else []
        if unknown:
            raise InputError(
                f"the graph's input has no {', '.join(map(repr, unknown))} (it takes "
                f"{', '.join(sorted(known))})",
                source=source,
                line=line,
            )
        if not validated:
            continue
        try:
            schema.model_validate(dict(item))  # type: ignore[union-attr]
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InputError(
                f"the graph's input schema rejects the item: {where or 'input'}: {first['msg']}",
                source=source,
                line=line,
            ) from None


def _input_keys(schema: Any) -> set[str]:
    """Return the keys of an input schema (a Pydantic model's fields, a TypedDict's hints)."""
    import typing

    from pydantic import BaseModel

    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return set(schema.model_fields)
    try:
        return set(typing.get_type_hints(schema)) if schema is not None else set()
    except Exception:  # noqa: BLE001 (an unresolvable annotation: no key check)
        return set()


class RealtimeCallGuard(BaseCallbackHandler):
    """Stops a mapped graph's node that calls a chat model which is not `batched(...)`.

    Every chat model call of the user's graph reports its start to the run's callbacks; a
    batched model's `_llm_type` starts with `batched-` (its wrapped model is called without
    callbacks). Anything else would be a realtime call per item.
    """

    raise_error = True  # an exception here stops the node (callbacks' errors are logged else)

    def __init__(self, *, allow: bool) -> None:
        """Stop unbatched calls, or (with `allow`) let them run and warn once."""
        self.allow = allow
        self.warned = False

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, **kwargs: Any) -> None:
        """Check a chat model call."""
        self._check(serialized, kwargs)

    def on_llm_start(self, serialized: dict[str, Any], prompts: Any, **kwargs: Any) -> None:
        """Check a (completion) LLM call."""
        self._check(serialized, kwargs)

    def _check(self, serialized: dict[str, Any] | None, kwargs: dict[str, Any]) -> None:
        params = kwargs.get("invocation_params") or {}
        if str(params.get("_type", "")).startswith("batched-"):
            return
        name = str((serialized or {}).get("name") or params.get("_type") or "a model")
        node = (kwargs.get("metadata") or {}).get("langgraph_node", "?")
        message = (
            f"node {node!r} calls {name} directly: that call goes out in realtime, at full "
            "price, once per item. Wrap the model with agent.batched.batched(...), or allow "
            "realtime calls (map_graph(..., allow_realtime=True), batch-agent map --allow-realtime)"
        )
        if not self.allow:
            raise UnbatchedModelError(message)
        if not self.warned:
            self.warned = True
            logger.warning("%s: allowed", message)


def _config(map_id: str, index: int, guard: RealtimeCallGuard) -> dict[str, Any]:
    return {
        "configurable": {"thread_id": f"{map_id}-item-{index}", MAP_MARKER: map_id},
        "callbacks": [guard],
    }


def _advance(compiled: Any, value: Any, config: Any, index: int, failures: dict[int, str]) -> None:
    """Run one thread until it ends or suspends; a node's exception fails that item only.

    An unbatched model call is the graph's mistake, not the item's: it stops the map.
    """
    kill_points.reach("invoke")
    try:
        # Checkpointed when the run stops (an interrupt, the end): a kill mid-run re-runs the
        # item's nodes from its last stop, whose answered calls are answered from the store.
        compiled.invoke(value, config, durability="exit")
    except UnbatchedModelError:
        raise
    except Exception as exc:  # noqa: BLE001 (the user's node raised: this item fails)
        failures[index] = f"{type(exc).__name__}: {exc}"


def _stalled(state: Any) -> bool:
    """Tell whether a thread has tasks to run but nothing that stops them: no interrupt, no error.

    What a kill leaves when it lands after a run's stop was checkpointed and before the stop's
    writes were (`durability="exit"` saves them one after the other): the interrupt that held
    the item's calls is lost with them. None of those calls was pooled (a round pools the
    calls of the interrupts on record only), so running the tasks on makes them again, for
    the next round.
    """
    return bool(state.next) and not state.interrupts and not any(t.error for t in state.tasks)


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
    calls, usage, cost = records.delivered(index)
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
    thread_id = config["configurable"]["thread_id"]
    return MapItem(index, thread_id, status, values, error, calls, usage, cost)


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

    def put_answers(
        self, answers: Mapping[str, dict[str, Any]], *, batch: tuple[str, Any] | None = None
    ) -> None:
        """Store answers by call key, and the cost of the batch thread they came from."""
        from langgraph.store.base import PutOp

        namespace = (ROOT, self.map_id, "answers")
        ops = [PutOp(namespace, key, value) for key, value in answers.items()]
        if batch is not None:
            thread_id, cost = batch
            ops.append(PutOp((ROOT, self.map_id, "batches"), thread_id, {"cost": cost}))
        if ops:
            self.store.batch(ops)

    def cost(self) -> Cost | None:
        """Return what the map's batch threads cost so far (each counted once)."""
        found = self.store.search((ROOT, self.map_id, "batches"), limit=10_000)
        return total_cost(item.value["cost"] for item in found if item.value.get("cost"))

    def slim_answers(self, keys: list[str]) -> None:
        """Drop the messages of delivered answers, keeping their error, usage and cost."""
        from langgraph.store.base import PutOp

        namespace = (ROOT, self.map_id, "answers")
        ops = []
        for key in keys:
            found = self.answer(key)
            if found is not None and found.get("message") is not None:
                ops.append(PutOp(namespace, key, {**found, "message": None, "delivered": True}))
        for start in range(0, len(ops), 500):
            self.store.batch(ops[start : start + 500])

    def count_delivered(self, index: int, calls: list[Call]) -> None:
        """Remember which calls item `index` was answered (its calls and tokens)."""
        namespace = (ROOT, self.map_id, "items")
        item = self.store.get(namespace, str(index))
        keys = list(item.value["keys"]) if item is not None else []
        keys.extend(c.key for c in calls if c.key not in keys)
        self.store.put(namespace, str(index), {"keys": keys})

    def delivered(self, index: int) -> tuple[int, dict[str, int], Cost | None]:
        """Return how many calls item `index` made, their token usage and their cost."""
        item = self.store.get((ROOT, self.map_id, "items"), str(index))
        keys = list(item.value["keys"]) if item is not None else []
        usage = dict.fromkeys(USAGE_KEYS, 0)
        costs: list[Cost] = []
        for key in keys:
            found = self.answer(key) or {}
            for name in usage:
                usage[name] += int((found.get("usage") or {}).get(name) or 0)
            if found.get("cost"):
                costs.append(found["cost"])
        return len(keys), usage, total_cost(costs)


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
    from agent.persistence import open_persistence, resolve_db, sqlite_checkpointer

    with open_persistence(os.fspath(db)) as persistence:
        path = resolve_db(os.fspath(db))
        if not isinstance(path, Path):  # PostgreSQL
            yield persistence.checkpointer, persistence.store
            return
        # The items' checkpoints skip the disk flush of each commit: one database, one WAL
        # file, so the next flushed commit of the store (answers, the slimming after a round's
        # resumes) or of a batch thread (job ids) flushes them too, in order. What a power loss
        # can take is a step an item re-runs, its calls answered from the store.
        with sqlite_checkpointer(path, replayable=True) as items:
            yield items, persistence.store


# The in-memory pair of `db=None` maps, shared so a map can be resumed in the same process.
_MEMORY: dict[str, tuple[Any, Any]] = {}
