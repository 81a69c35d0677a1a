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
were: no call is sent twice, no item is lost. Each round's pools are recorded before any is
submitted (`agent.batched.records`), for `batch-agent status` and `cancel`. An item whose last
stop was checkpointed without its writes (a kill between the two) runs on from that checkpoint
before the first round, and an item killed before it was resumed with stored answers gets
them before anything new is pooled.

Without waiting (`wait=False`, `batch-agent map --no-wait`) a run submits a round's pools, or
checks them once, and returns while one is in flight; the next run picks the round up where it
is. Repeated until done, it makes the same rounds, jobs and items as one waiting run. A map
cancelled (`batch-agent cancel MAP_ID`) sends nothing more: its waiting items fail, naming the
cancel.
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
from agent.batched.records import USAGE_KEYS, MapRecords, cancel_message, no_progress
from agent.pricing import Cost, Quote, TokenTally, parse_price_override, quote
from agent.requests import InputError
from agent.statuses import ItemStatus, MapStatus
from agent.structured import SPEC_KEYS

logger = logging.getLogger("batch_agent")


@dataclass(frozen=True)
class MapItem:
    """The outcome of one input item.

    Attributes:
        index: The item's position in the input.
        thread_id: The user graph's thread that ran it.
        status: `completed`, `failed`, `waiting` (on batched calls: the map is not done)
            or `interrupted` (`ItemStatus`).
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
    """What one round pooled: calls sent, batch threads (one per model description).

    Attributes:
        calls: The calls pooled (each key once).
        batch_threads: The round's batch threads.
        number: The round's number in the map (counting its earlier runs' rounds).
        done: Whether its answers came back in this run (False: a pool is in flight).
    """

    calls: int
    batch_threads: list[str]
    number: int = 0
    done: bool = True


class MapResults(list[MapItem]):
    """The items' outcomes in input order, plus the map's id, rounds, cost and status."""

    def __init__(
        self,
        items: list[MapItem],
        map_id: str,
        rounds: list[Round],
        cost: Cost | None,
        *,
        status: MapStatus = "done",
        pending: list[str] | None = None,
    ) -> None:
        """Hold the items, the map id (to resume), this run's rounds, the cost and the status."""
        super().__init__(items)
        self.map_id = map_id
        self.rounds = rounds
        self.cost = cost
        """What every batch of the map cost (all its runs), batch and realtime price."""
        self.status: MapStatus = status
        """`done`, `waiting` (pools in flight), `stopped` (`max_rounds`) or `cancelled`."""
        self.pending: list[str] = list(pending or [])
        """The batch threads in flight (`wait=False`): run the map again to collect them."""

    @property
    def done(self) -> bool:
        """Tell whether the map has ended: no item waits on batched calls any more."""
        return self.status in {"done", "cancelled"}


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
    wait: bool = True,
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
        wait: Wait for each round's batches (default). False runs until a round's pools are
            submitted (or checked once) and one is still in flight, then returns: items
            waiting, `.status` `waiting`, `.pending` its batch threads; call again with
            `map_id` (and `inputs=None`) to go on.
        **context: Run-context settings for the batches (`agent.context.Context`), e.g.
            `poll_interval_seconds=1`, `max_attempts=2`, `max_cost=5`.

    Returns:
        One `MapItem` per input, in input order, with `.map_id`, `.rounds`, `.cost`,
        `.status` and `.pending`. Items of a cancelled map that were still waiting are
        `failed`, their error naming the cancel (`MapCancelled: ...`); nothing is resent.

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
    if not wait:
        # Each pool's batch thread runs once and returns: submitted, or checked once.
        context = {**context, "max_wait_seconds": 0}
    with _persistence(db) as (checkpointer, store):
        compiled = _compiled(graph, kill_points.watched(checkpointer), store)
        records = MapRecords(store, map_id)
        if inputs is not None:
            check_inputs(compiled, inputs, source=source, lines=lines)
        items = records.inputs(inputs)
        guard = RealtimeCallGuard(allow=allow_realtime)
        configs = [_config(map_id, index, guard) for index in range(len(items))]
        failures: dict[int, str] = {}
        started = 0
        for index, item in enumerate(items):
            state = compiled.get_state(configs[index])
            if not state.values:
                _advance(compiled, item, configs[index], index, failures)
                started += 1
            elif _stalled(state):
                # Killed between a stop's checkpoint and its writes: run its tasks on.
                _advance(compiled, None, configs[index], index, failures)
        suspended, counts = _suspended(compiled, configs, failures)
        if started < len(items) and records.cancelled() is None:
            # Killed while a round's answers were being delivered: the items not resumed yet
            # get theirs now, so their next calls join the others' in the next round.
            answered = _answered(suspended, records)
            if answered:
                _deliver(compiled, answered, records, configs, failures)
                suspended, counts = _suspended(compiled, configs, failures)
        rounds: list[Round] = []
        pending: list[str] = []
        for _ in range(max_rounds):
            if not suspended:
                break
            if records.cancelled() is not None:
                _fail_cancelled(compiled, configs, suspended, failures, map_id)
                break
            unanswered = _unanswered(suspended, records)
            groups = _groups(unanswered.values())
            threads = [f"{map_id}-batch-{_keys_digest(group)}" for group in groups]
            # Durable before any submit: `status` and `cancel` find the pools after a kill.
            number = records.start_round(len(unanswered), threads)
            records.put_progress(counts, "running")
            pending = _run_round(
                run_batch, groups, threads, number, records, db, context, wait=wait
            )
            rounds.append(Round(len(unanswered), threads, number=number, done=not pending))
            if records.cancelled() is not None:
                # Cancelled while this round's pools ran (`batch-agent cancel` elsewhere).
                records.finish_round(number, "cancelled")
                _fail_cancelled(compiled, configs, suspended, failures, map_id)
                pending = []
                break
            if pending:
                break  # not waiting (`wait=False`): the next run collects them
            records.finish_round(number)
            kill_points.reach("answers")
            _deliver(compiled, suspended, records, configs, failures)
            suspended, counts = _suspended(compiled, configs, failures)
            if on_round is not None:
                on_round(number, len(unanswered), counts["completed"])
        kill_points.reach("output")
        delivered = records.delivered(len(items))
        outcome = [
            _item(compiled, configs[index], index, failures, delivered[index])
            for index in range(len(items))
        ]
        status = _map_status(outcome, pending, records)
        records.put_progress(_tally(outcome), status)
        return MapResults(outcome, map_id, rounds, records.cost(), status=status, pending=pending)


def _answered(suspended: list[_Suspended], records: MapRecords) -> list[_Suspended]:
    """Return the suspended threads all of whose calls have a stored answer."""
    unanswered = _unanswered(suspended, records)
    return [w for w in suspended if not any(c.key in unanswered for _, cs in w.waits for c in cs)]


def _unanswered(suspended: list[_Suspended], records: MapRecords) -> dict[str, Call]:
    """Return the suspended calls that have no stored answer yet, by key (each key once)."""
    calls = {c.key: c for waiting in suspended for _, cs in waiting.waits for c in cs}
    answers = records.answers(calls)
    return {key: call for key, call in calls.items() if answers[key] is None}


def _run_round(
    run_batch: Any,
    groups: list[list[Call]],
    threads: list[str],
    number: int,
    records: MapRecords,
    db: str | os.PathLike[str] | None,
    context: Mapping[str, Any],
    *,
    wait: bool,
) -> list[str]:
    """Run a round's pools, storing each finished pool's answers; return the ones in flight.

    A pool is in flight only when its batch thread was run once without waiting
    (`max_wait_seconds` 0, `wait=False`): the next run of the map finds it by its keys and
    polls it, so nothing is submitted twice.
    """
    pending: list[str] = []
    overrides = parse_price_override(str(context.get("price_override") or ""))
    submitted = records.submitted(number)
    for group, thread_id in zip(groups, threads, strict=True):
        if records.cancelled() is not None:
            break  # cancelled between two pools: the rest are never submitted
        results = _run_pool(
            run_batch, group, thread_id, db, context, wait=wait, submitted=thread_id in submitted
        )
        if not results.done:
            pending.append(thread_id)
            records.mark_submitted(number, thread_id)
            continue
        kill_points.reach("pool")
        prices = quote(group[0].spec["provider"], group[0].spec["model"], overrides=overrides)
        # Durable before any thread moves on: a kill from here on loses nothing.
        records.put_answers(
            {result.id: _priced_answer(result, prices, thread_id) for result in results},
            batch=(thread_id, results.cost),
        )
    return pending


def _deliver(
    compiled: Any,
    suspended: list[_Suspended],
    records: MapRecords,
    configs: list[Any],
    failures: dict[int, str],
) -> None:
    """Resume every suspended thread with its answers, by key; then slim the stored answers."""
    answers = records.answers(c.key for w in suspended for _, calls in w.waits for c in calls)
    # Counted before any thread moves on (counting again after a kill changes nothing).
    records.count_delivered({w.index: [c for _, cs in w.waits for c in cs] for w in suspended})
    for waiting in suspended:
        resume = {
            interrupt_id: {ANSWERS: {c.key: answers[c.key] for c in calls}}
            for interrupt_id, calls in waiting.waits
        }
        _advance(compiled, Command(resume=resume), configs[waiting.index], waiting.index, failures)
    # Every suspended thread has its answers in its checkpoint now: keep only what the
    # items' accounting needs (the batch thread's result pages keep the messages).
    records.slim_answers(answers)


def _fail_cancelled(
    compiled: Any,
    configs: list[Any],
    suspended: list[_Suspended],
    failures: dict[int, str],
    map_id: str,
) -> None:
    """Fail the items a cancelled map leaves waiting (and any it never started), naming the cancel.

    They are not resumed: resuming would send their calls again, or raise a made-up provider
    error in the user's nodes for calls the user chose to stop.
    """
    for waiting in suspended:
        calls = sum(len(calls) for _, calls in waiting.waits)
        failures[waiting.index] = cancel_message(map_id, calls)
    for index, config in enumerate(configs):
        if index not in failures and not compiled.get_state(config).values:
            failures[index] = cancel_message(map_id, 0)


def _map_status(outcome: list[MapItem], pending: list[str], records: MapRecords) -> MapStatus:
    if records.cancelled() is not None:
        return "cancelled"
    if pending:
        return "waiting"
    return "stopped" if any(item.status == "waiting" for item in outcome) else "done"


def _tally(outcome: list[MapItem]) -> dict[str, int]:
    counts = no_progress(len(outcome))
    for item in outcome:
        counts[item.status] += 1
    return counts


def _run_pool(
    run_batch: Any,
    group: list[Call],
    thread_id: str,
    db: str | os.PathLike[str] | None,
    context: Mapping[str, Any],
    *,
    wait: bool = True,
    submitted: bool = False,
) -> Any:
    """Run one pool of calls as a batch thread; return its results (empty while in flight).

    The requests go in as a file, not inline: inline records would be checkpointed with the
    batch thread's input, and the results stay in the store's pages only (`results_in_state`
    0), so a round adds to the checkpoint database what its calls' answers need, once. A pool
    an earlier run left `submitted` and in flight is resumed without input: its thread then
    polls its jobs (the same file sent again to a thread that never polled would only be
    recognised as the same set, and the run would end without checking the jobs).
    """
    spec = dict(group[0].spec)
    # What `.bind(...)` added goes into every request's params, as `run_batch` does inline.
    params = spec.pop("request_params", None) or {}
    spec["request_params"] = {}
    settings = {"results_in_state": 0, **context}
    if submitted:
        # The thread holds its tools and schema since its submit: only the settings go with it.
        for key in SPEC_KEYS:
            spec.pop(key, None)
        return run_batch(None, model=spec, db=db, thread_id=thread_id, wait=wait, **settings)
    with tempfile.TemporaryDirectory(prefix="batch-agent-map-") as folder:
        path = Path(folder) / f"{thread_id}.jsonl"
        with path.open("wb") as fh:
            for call in group:
                record: dict[str, Any] = {"id": call.key, "messages": call.messages}
                if params:
                    record["params"] = params
                fh.write(orjson.dumps(record) + b"\n")
        return run_batch(path, model=spec, db=db, thread_id=thread_id, wait=wait, **settings)


def _priced_answer(result: Any, prices: Quote, batch: str) -> dict[str, Any]:
    """Return a batch result as a call's answer (from batch thread `batch`), with its cost."""
    message = result.message.model_dump() if result.message else None
    tally = TokenTally()
    tally.add({"usage": result.usage, "message": message})
    cost = prices.price(
        tally.input_tokens,
        tally.cached_input_tokens,
        tally.output_tokens,
        tally.cache_write_tokens,
        tally.cache_write_1h_tokens,
    )
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


def _suspended(
    compiled: Any, configs: list[Any], failures: dict[int, str]
) -> tuple[list[_Suspended], dict[str, int]]:
    """Return the threads waiting on batched calls (failed items are not resumed), and counts.

    The counts are the items' by status (`items`, `completed`, `failed`, `waiting`,
    `interrupted`), read from the same states, for the map's recorded progress.
    """
    waiting: list[_Suspended] = []
    counts = no_progress(len(configs))
    for index, config in enumerate(configs):
        if index in failures:
            counts["failed"] += 1
            continue
        state = compiled.get_state(config)
        entry = _Suspended(index)
        for pending in state.interrupts:
            calls = calls_of(pending.value)
            if calls is not None:
                entry.waits.append((pending.id, calls))
        if entry.waits:
            waiting.append(entry)
            counts["waiting"] += 1
        elif any(task.error for task in state.tasks):
            counts["failed"] += 1
        else:
            counts["interrupted" if state.next else "completed"] += 1
    return waiting, counts


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
    compiled: Any,
    config: Any,
    index: int,
    failures: dict[int, str],
    delivered: tuple[int, dict[str, int], Cost | None],
) -> MapItem:
    state = compiled.get_state(config)
    calls, usage, cost = delivered
    values = dict(state.values) if state.values else None
    error = failures.get(index) or next(
        (f"{type(t.error).__name__}: {t.error}" for t in state.tasks if t.error), None
    )
    status: ItemStatus = "completed"
    if error is not None:
        status = "failed"
    elif any(calls_of(pending.value) is not None for pending in state.interrupts):
        status = "waiting"
    elif state.next:
        status = "interrupted"
        error = "the graph waits for an interrupt() of its own (not a batched model call)"
    thread_id = config["configurable"]["thread_id"]
    return MapItem(index, thread_id, status, values, error, calls, usage, cost)


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
