"""Served mode: batched calls of a user's graph on a LangGraph server, pooled by the bridge.

When the server also runs batch-agent's bridge (the graph `batch_bridge`, `graphs/bridge.py`, is
listed in the server's `langgraph.json`: `langgraph dev` and LangGraph Server name their graphs
in the environment variable `LANGSERVE_GRAPHS`), a batched model's call in any served thread
suspends exactly as under `map_graph` (`agent.batched.calls`), and records itself first, durably,
in the server's store (`CALLS_NAMESPACE`, key: the call key): its spec, messages, the caller's
thread and assistant, and when it was recorded. No client needs to wait for the thread.

The bridge (`bridge_pass`, run every second by the server's start-up hook, `agent.serving`):

1. pools the waiting calls per model description once they stop coming: a pool is flushed when
   no call joined it for `BATCH_AGENT_BRIDGE_FLUSH_SECONDS` (default 2), or at the latest
   `BATCH_AGENT_BRIDGE_MAX_FLUSH_SECONDS` (default 30) after its first call (`due_pools`);
2. writes the pool (its keys, its batch thread) to the store *before* it creates the batch
   thread, whose id is derived from the pooled keys (`pool_thread_id`): a call in a pool is never
   pooled again, and a pass retried after a crash finds the same thread;
3. starts one thread of the served `batch` graph per pool, which submits the job and waits with
   its own self-scheduled polls (`agent.scheduling`);
4. once a pool's batch thread has finished, writes every call's answer to the store
   (`ANSWERS_NAMESPACE`), then resumes each caller thread whose pending interrupts are all
   answered, with `Command(resume={interrupt_id: {ANSWERS: ...}})`, matched by key.

Every step is read from the store on each pass, so a server killed at any point and restarted
goes on where it was. `BATCH_AGENT_BRIDGE_CONTEXT` (a JSON object of `agent.context.Context`
settings, e.g. `{"poll_interval_seconds": 10}`) is passed to every batch thread.

One bridge per deployment: the passes of one server process never overlap (a lock), but two
replicas of a LangGraph Server would each run their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from agent.batched.calls import ANSWERS, Call, answer, calls_of
from agent.statuses import TERMINAL_THREAD_STATUSES

if TYPE_CHECKING:
    from langgraph.store.base import BaseStore
    from langgraph_sdk.client import LangGraphClient

logger = logging.getLogger("batch_agent")

BRIDGE_GRAPH = "batch_bridge"
"""The graph id that, listed in the server's graphs, turns served mode on."""
BATCH_GRAPH = "batch"
"""The served batch graph each pool runs as one thread of (`graphs/batch.py`)."""
CALLS_NAMESPACE = ("batch_agent_bridge", "calls")
"""Store namespace of the recorded calls: key = call key."""
POOLS_NAMESPACE = ("batch_agent_bridge", "pools")
"""Store namespace of the pools: key = the pool's batch thread id."""
ANSWERS_NAMESPACE = ("batch_agent_bridge", "answers")
"""Store namespace of the answers: key = call key."""
FLUSH_ENV = "BATCH_AGENT_BRIDGE_FLUSH_SECONDS"
MAX_FLUSH_ENV = "BATCH_AGENT_BRIDGE_MAX_FLUSH_SECONDS"
CONTEXT_ENV = "BATCH_AGENT_BRIDGE_CONTEXT"

WAITING, POOLED, ANSWERED, DELIVERED = "waiting", "pooled", "answered", "delivered"
"""A call record's states, in order."""
_PAGE = 500
T = TypeVar("T")
_PASS_LOCK = asyncio.Lock()


def bridge_deployed(env: Mapping[str, str] | None = None) -> bool:
    """Tell whether this server's graphs include `batch_bridge` (`LANGSERVE_GRAPHS`)."""
    env = os.environ if env is None else env
    try:
        graphs = json.loads(env.get("LANGSERVE_GRAPHS") or "{}")
    except ValueError:
        return False
    return isinstance(graphs, dict) and BRIDGE_GRAPH in graphs


def served_mode() -> bool:
    """Tell whether batched calls here suspend for the served bridge.

    True inside a run on a LangGraph server (`langgraph dev` included) whose graphs include
    `batch_bridge`.
    """
    return bridge_deployed() and server_assistant() is not None


def server_assistant() -> tuple[str, str] | None:
    """Return the assistant and graph of the current server run (None outside a server run)."""
    try:
        from langgraph.runtime import get_runtime

        server = get_runtime().server_info
    except Exception:  # not inside a graph run: a plain call
        return None
    return (str(server.assistant_id), str(server.graph_id)) if server is not None else None


def record_calls(
    store: BaseStore | None,
    calls: Iterable[Call],
    thread_id: str,
    assistant: tuple[str, str],
    now: Callable[[], float] = time.time,
) -> None:
    """Record suspended calls for the bridge, each once: a node re-run on resume re-makes them.

    Called on the server's event loop (a sync `.invoke()` in an `async def` node), where a
    blocking store call would stall the loop, the records are written by a task that runs as
    soon as the node has suspended.

    Args:
        store: The run's store (the server's).
        calls: The calls the node suspends on.
        thread_id: The caller's thread.
        assistant: The caller's assistant and graph ids (`server_assistant`).
        now: The clock (epoch seconds).

    Raises:
        RuntimeError: The run has no store.
    """
    if store is None:
        raise RuntimeError("batch-agent's served bridge needs the server's store")
    records = [
        {
            **call.to_json(),
            "thread_id": thread_id,
            "assistant_id": assistant[0],
            "graph_id": assistant[1],
            "recorded_at": now(),
            "state": WAITING,
        }
        for call in calls
    ]
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        task = loop.create_task(_record_later(store, records))
        _RECORDING.add(task)  # a task only the loop refers to may be collected mid-way
        task.add_done_callback(_RECORDING.discard)
        return
    for record in records:
        if _locked_retry(partial(store.get, CALLS_NAMESPACE, record["key"])) is not None:
            continue  # recorded by an earlier execution of this node
        _locked_retry(partial(store.put, CALLS_NAMESPACE, record["key"], record, index=False))


_RECORDING: set[asyncio.Task[None]] = set()


async def _record_later(store: BaseStore, records: list[dict[str, Any]]) -> None:
    """Write call records from the event loop (each once), again while SQLite is locked."""
    for record in records:
        for attempt in range(20):
            try:
                if await store.aget(CALLS_NAMESPACE, record["key"]) is None:
                    await store.aput(CALLS_NAMESPACE, record["key"], record, index=False)
                break
            except Exception as exc:
                if "database is locked" not in str(exc) or attempt == 19:
                    logger.exception("could not record batched call %s", record["key"])
                    break
                await asyncio.sleep(0.02 * (attempt + 1))


def _locked_retry(step: Callable[[], T], attempts: int = 20) -> T:
    """Run a store step, again while SQLite says the database is locked.

    The server's SQLite store shares its file with the checkpointer: a store batch that read
    before another connection's commit, and then writes, fails at once (SQLite's snapshot
    rule, no busy wait). Many threads recording calls together meet it; a retry succeeds.
    """
    for attempt in range(attempts):
        try:
            return step()
        except Exception as exc:
            if "database is locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class FlushPolicy:
    """When a pool of waiting calls is sent.

    Attributes:
        quiet: Send once no call joined the pool for this many seconds.
        max_wait: Send at the latest this many seconds after its first call.
    """

    quiet: float = 2.0
    max_wait: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FlushPolicy:
        """Read `BATCH_AGENT_BRIDGE_FLUSH_SECONDS` / `..._MAX_FLUSH_SECONDS` (defaults 2 / 30)."""
        env = os.environ if env is None else env
        return cls(
            quiet=float(env.get(FLUSH_ENV) or cls.quiet),
            max_wait=float(env.get(MAX_FLUSH_ENV) or cls.max_wait),
        )


def due_pools(
    waiting: Iterable[Mapping[str, Any]], now: float, policy: FlushPolicy
) -> list[list[dict[str, Any]]]:
    """Return the pools of waiting call records that are due now, each in key order.

    Calls pool by model description (`Call.group`); a pool is due when its newest call is
    `policy.quiet` old, or its oldest `policy.max_wait` old.
    """
    groups: dict[bytes, list[dict[str, Any]]] = {}
    for record in waiting:
        groups.setdefault(Call.from_json(record).group(), []).append(dict(record))
    due: list[list[dict[str, Any]]] = []
    for _, records in sorted(groups.items()):
        times = [float(r["recorded_at"]) for r in records]
        if now - max(times) >= policy.quiet or now - min(times) >= policy.max_wait:
            due.append(sorted(records, key=lambda r: str(r["key"])))
    return due


def pool_thread_id(keys: Iterable[str]) -> str:
    """Return the batch thread id of a pool: a UUID derived from its call keys."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update(key.encode())
        digest.update(b"\0")
    return str(uuid.UUID(bytes=digest.digest()[:16], version=4))


@dataclass
class PassReport:
    """What one bridge pass did."""

    pooled: list[str] = field(default_factory=list)
    """Batch threads started."""
    answered: list[str] = field(default_factory=list)
    """Batch threads whose answers were stored."""
    resumed: list[str] = field(default_factory=list)
    """Caller threads resumed."""


async def bridge_pass(
    client: LangGraphClient,
    now: Callable[[], float] = time.time,
    policy: FlushPolicy | None = None,
) -> PassReport:
    """Pool due calls, collect finished pools, resume answered callers (module docstring).

    Args:
        client: The server's own client (in process).
        now: The clock (epoch seconds).
        policy: When pools are sent (default: from the environment).
    """
    policy = policy or FlushPolicy.from_env()
    report = PassReport()
    async with _PASS_LOCK:
        pools = await _search(client, POOLS_NAMESPACE)
        in_pools = {key for pool in pools.values() for key in pool["keys"]}
        waiting = [
            r
            for k, r in (await _search(client, CALLS_NAMESPACE, WAITING)).items()
            if k not in in_pools
        ]
        for records in due_pools(waiting, now(), policy):
            thread_id = pool_thread_id(r["key"] for r in records)
            pool = {"keys": [r["key"] for r in records], "state": POOLED, "created_at": now()}
            # The pool before its thread: a call in a pool is never pooled again.
            await client.store.put_item(POOLS_NAMESPACE, thread_id, pool, index=False)
            pools[thread_id] = pool
            await _each([_set_state(client, record, POOLED, batch=thread_id) for record in records])
            await _start_batch(client, thread_id, records)
            report.pooled.append(thread_id)
        for thread_id, pool in pools.items():
            if pool["state"] == POOLED and await _collect(client, thread_id, pool):
                report.answered.append(thread_id)
        answered = await _search(client, CALLS_NAMESPACE, ANSWERED)
        by_thread: dict[str, list[dict[str, Any]]] = {}
        for record in answered.values():
            by_thread.setdefault(record["thread_id"], []).append(record)
        resumed = await _each(
            [
                _deliver_safely(client, thread_id, records)
                for thread_id, records in by_thread.items()
            ]
        )
        report.resumed.extend(t for t, done in zip(by_thread, resumed, strict=True) if done)
    return report


async def _each(steps: list[Coroutine[Any, Any, T]], limit: int = 16) -> list[T]:
    """Await `steps`, at most `limit` at a time (each is a few calls of the server's API)."""
    gate = asyncio.Semaphore(limit)

    async def gated(step: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await step

    return list(await asyncio.gather(*(gated(step) for step in steps)))


async def _deliver_safely(
    client: LangGraphClient, thread_id: str, records: list[dict[str, Any]]
) -> bool:
    try:
        return await _deliver(client, thread_id, records)
    except Exception as exc:  # one caller's trouble must not hold up the others
        logger.warning("could not resume thread %s: %s", thread_id, exc)
        return False


async def run_bridge(client: LangGraphClient, interval: float = 1.0) -> None:
    """Run bridge passes forever, `interval` seconds apart (the server's start-up hook)."""
    while True:
        try:
            await bridge_pass(client)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed pass is tried again: its steps are all re-read
            logger.exception("batch-agent's bridge pass failed")
        await asyncio.sleep(interval)


async def bridge_status(client: LangGraphClient) -> dict[str, Any]:
    """Return how many calls are in each state, and the pools with their batch threads."""
    calls = await _search(client, CALLS_NAMESPACE)
    counts = dict.fromkeys((WAITING, POOLED, ANSWERED, DELIVERED), 0)
    for record in calls.values():
        counts[record["state"]] = counts.get(record["state"], 0) + 1
    pools = await _search(client, POOLS_NAMESPACE)
    return {
        "calls": counts,
        "pools": [
            {"batch_thread": k, "calls": len(v["keys"]), "state": v["state"]}
            for k, v in sorted(pools.items(), key=lambda kv: kv[1]["created_at"])
        ],
    }


async def _search(
    client: LangGraphClient, namespace: tuple[str, ...], state: str | None = None
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        page = await client.store.search_items(
            namespace, filter={"state": state} if state else None, limit=_PAGE, offset=offset
        )
        items = page["items"]
        found.update((item["key"], item["value"]) for item in items)
        offset += len(items)
        if len(items) < _PAGE:
            return found


async def _set_state(
    client: LangGraphClient, record: Mapping[str, Any], state: str, **extra: Any
) -> None:
    value = {**record, "state": state, **extra}
    await client.store.put_item(CALLS_NAMESPACE, str(record["key"]), value, index=False)


def _batch_context() -> dict[str, Any]:
    try:
        settings = json.loads(os.environ.get(CONTEXT_ENV) or "{}")
    except ValueError:
        logger.warning("%s is not a JSON object: ignored", CONTEXT_ENV)
        return {}
    return dict(settings) if isinstance(settings, dict) else {}


async def _start_batch(
    client: LangGraphClient, thread_id: str, records: list[dict[str, Any]]
) -> None:
    """Create the pool's batch thread and its first run (no-op if it has one already)."""
    from langgraph_sdk.errors import ConflictError

    from agent.api import served_batch_arguments

    requests = [{"id": r["key"], "messages": r["messages"]} for r in records]
    graph_input, context = served_batch_arguments(requests, records[0]["spec"])
    context = {**context, **_batch_context(), "self_schedule": True}
    await client.threads.create(
        thread_id=thread_id, if_exists="do_nothing", metadata={"batch_agent_bridge": True}
    )
    try:
        await client.runs.create(
            thread_id, BATCH_GRAPH, input=graph_input, context=context, multitask_strategy="reject"
        )
    except ConflictError:  # a run of it is under way already
        pass


async def _collect(client: LangGraphClient, thread_id: str, pool: dict[str, Any]) -> bool:
    """Store the answers of a pool whose batch thread has finished; return whether it had."""
    from langgraph_sdk.errors import NotFoundError

    try:
        values = (await client.threads.get_state(thread_id))["values"]
    except NotFoundError:
        values = None
    if not isinstance(values, dict) or not values:
        # Its first run was lost (a crash after the pool was written): start it again. The
        # batch graph's crash-safe submit adopts a job that run had created.
        if not await _has_run(client, thread_id):
            calls = await _search_keys(client, pool["keys"])
            await _start_batch(client, thread_id, calls)
        return False
    status = values.get("status")
    failed_for_good = status == "error" and not values.get("retry_later")
    if status not in TERMINAL_THREAD_STATUSES and not failed_for_good:
        return False
    results: dict[str, dict[str, Any]] = {}
    if not failed_for_good:
        results = await _results(client, thread_id, values)
    puts = []
    for key in pool["keys"]:
        result = results.get(key)
        if result is None:
            reason = str(values.get("error") or "the batch returned no result for this call")
            found = answer(None, {"code": "no_result", "message": reason}, thread_id)
        else:
            found = answer(result.get("message"), result.get("error"), thread_id)
        puts.append(client.store.put_item(ANSWERS_NAMESPACE, key, found, index=False))
    await _each(puts)
    # Answers first, then the states: a crash in between re-collects the same answers.
    await _each([_set_state(client, r, ANSWERED) for r in await _search_keys(client, pool["keys"])])
    await client.store.put_item(
        POOLS_NAMESPACE, thread_id, {**pool, "state": ANSWERED}, index=False
    )
    return True


async def _results(
    client: LangGraphClient, thread_id: str, values: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    from agent.bulk import result_pages

    namespace, keys = result_pages(thread_id, values)
    found: dict[str, dict[str, Any]] = {}
    for key in keys:
        item = await client.store.get_item(namespace, key=key)
        for line in ((item or {}).get("value", {}).get("jsonl") or "").splitlines():
            if line.strip():
                result = json.loads(line)
                found[str(result["id"])] = result
    return found


async def _search_keys(client: LangGraphClient, keys: Iterable[str]) -> list[dict[str, Any]]:
    items = await _each([client.store.get_item(CALLS_NAMESPACE, key) for key in keys])
    return [dict(item["value"]) for item in items if item is not None]


async def _has_run(client: LangGraphClient, thread_id: str) -> bool:
    from langgraph_sdk.errors import NotFoundError

    try:
        for status in ("pending", "running"):
            if await client.runs.list(thread_id, status=status, limit=1):
                return True
    except NotFoundError:
        return False
    return False


async def _deliver(client: LangGraphClient, thread_id: str, records: list[dict[str, Any]]) -> bool:
    """Resume `thread_id` on its interrupts whose calls are all answered; return if it was.

    Each resume is made once: its run id is kept in the calls' records, and a call whose
    resume run has finished is delivered, whether the thread moved on or its node raised (a
    failed call's error: the interrupt stays pending in the thread's last checkpoint, and
    resuming it again would raise again). A resume run a killed server lost is made again.
    """
    from langgraph_sdk.errors import NotFoundError

    finished: set[str] = set()
    for run_id in {str(r["resume_run"]) for r in records if r.get("resume_run")}:
        try:
            run = await client.runs.get(thread_id, run_id)
        except NotFoundError:
            continue  # lost with a killed server (not yet on its disk): resumed again below
        if run["status"] in ("pending", "running"):
            return False  # read its interrupts once it has stopped
        finished.add(run_id)
    resumed = {str(r["key"]) for r in records if r.get("resume_run") in finished}
    try:
        # A run created on a thread makes it busy at once; a busy thread whose run a kill of
        # the server lost has none pending or running.
        status = (await client.threads.get(thread_id))["status"]
        if status == "busy" and await _has_run(client, thread_id):
            return False  # a run is under way: read its interrupts once it has stopped
        state = await client.threads.get_state(thread_id)
    except NotFoundError:
        # A kill of `langgraph dev` lost the thread's record (it writes them every 10 s); its
        # checkpoints are durable: the record made again, naming its graph, reads them.
        await client.threads.create(
            thread_id=thread_id, if_exists="do_nothing", graph_id=records[0].get("graph_id")
        )
        state = await client.threads.get_state(thread_id)
    waits: list[tuple[str, list[Call]]] = []
    for task in state.get("tasks") or []:
        for pending in task.get("interrupts") or []:
            calls = calls_of(pending.get("value"))
            if calls is not None:
                waits.append((str(pending["id"]), calls))
    resume: dict[str, Any] = {}
    for interrupt_id, calls in waits:
        if any(call.key in resumed for call in calls):
            continue  # resumed once already: its node raised
        items = await asyncio.gather(
            *(client.store.get_item(ANSWERS_NAMESPACE, call.key) for call in calls)
        )
        if all(item is not None for item in items):
            answers = {c.key: i["value"] for c, i in zip(calls, items, strict=True) if i}
            resume[interrupt_id] = {ANSWERS: answers}
    waited = {call.key for _, calls in waits for call in calls}
    updates = []
    if resume:
        run = await client.runs.create(
            thread_id,
            str(records[0]["assistant_id"]),
            command={"resume": resume},
            multitask_strategy="enqueue",
            if_not_exists="create",
        )
        sent = {key for value in resume.values() for key in value[ANSWERS]}
        updates = [
            _set_state(client, r, ANSWERED, resume_run=run["run_id"])
            for r in records
            if r["key"] in sent
        ]
    # A call is delivered once its resume has run, or its thread has moved on without it (no
    # interrupt waits on it, and the thread waits on others or has ended: a resume whose record
    # a crash kept from being written). A thread with neither stopped short of its interrupt
    # (a lost run) and finds its answer when it runs again.
    moved_on = bool(waits) or not state.get("next")
    updates.extend(
        _set_state(client, record, DELIVERED)
        for record in records
        if record["key"] in resumed or (record["key"] not in waited and moved_on)
    )
    await _each(updates)
    return bool(resume)
