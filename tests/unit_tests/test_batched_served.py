"""The served bridge's decisions: when a pool is sent, what names its batch thread, when it is on.

The bridge itself runs under `langgraph dev` (tests/integration_tests/test_served_batched_graph.py);
these are its pure parts, on an injected clock.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph
from langgraph.store.memory import InMemoryStore
from typing_extensions import TypedDict

from agent.batched import batched
from agent.batched.calls import Call
from agent.batched.served import (
    CALLS_NAMESPACE,
    FlushPolicy,
    bridge_deployed,
    due_pools,
    pool_thread_id,
    record_calls,
)

POLICY = FlushPolicy(quiet=2, max_wait=30)
GPT = {"provider": "openai", "model": "gpt-4o-mini", "params": {}}
CLAUDE = {"provider": "anthropic", "model": "claude-haiku-4-5", "params": {}}


def waiting(key: str, at: float, spec: dict[str, Any] = GPT) -> dict[str, Any]:
    """A recorded call, as the bridge reads it."""
    return {
        **Call(key=key, spec=spec, messages=[{"role": "user", "content": key}]).to_json(),
        "thread_id": f"thread-{key}",
        "recorded_at": at,
        "state": "waiting",
    }


def keys(pools: list[list[dict[str, Any]]]) -> list[list[str]]:
    return [[record["key"] for record in pool] for pool in pools]


def test_a_pool_is_sent_once_no_call_joined_it_for_the_quiet_time() -> None:
    records = [waiting("c", 0), waiting("a", 1), waiting("b", 1.5)]
    assert due_pools(records, 3.4, POLICY) == []
    assert keys(due_pools(records, 3.5, POLICY)) == [["a", "b", "c"]]  # in key order


def test_a_pool_calls_keep_joining_is_sent_at_the_latest_after_max_wait() -> None:
    records = [waiting(f"k{second:02d}", second) for second in range(30)]  # one a second
    assert due_pools(records, 29.9, POLICY) == []
    assert len(keys(due_pools(records, 30, POLICY))[0]) == 30


def test_each_model_pools_on_its_own_clock() -> None:
    records = [waiting("a", 0), waiting("b", 0, CLAUDE), waiting("c", 5, CLAUDE)]
    assert keys(due_pools(records, 6, POLICY)) == [["a"]]
    assert sorted(keys(due_pools(records, 7, POLICY))) == [["a"], ["b", "c"]]


def test_a_pool_batch_thread_is_named_by_its_keys_whatever_their_order() -> None:
    first = pool_thread_id(["call-a", "call-b"])
    assert first == pool_thread_id(["call-b", "call-a"])
    assert first != pool_thread_id(["call-a", "call-c"])
    assert str(uuid.UUID(first)) == first  # a thread id LangGraph Server takes


def test_the_flush_times_come_from_the_environment() -> None:
    assert FlushPolicy.from_env({}) == FlushPolicy(quiet=2, max_wait=30)
    env = {"BATCH_AGENT_BRIDGE_FLUSH_SECONDS": "5", "BATCH_AGENT_BRIDGE_MAX_FLUSH_SECONDS": "60"}
    assert FlushPolicy.from_env(env) == FlushPolicy(quiet=5, max_wait=60)


def test_served_mode_is_on_where_the_server_lists_the_bridge_graph() -> None:
    assert bridge_deployed({"LANGSERVE_GRAPHS": '{"batch": "x", "batch_bridge": "y"}'})
    assert not bridge_deployed({"LANGSERVE_GRAPHS": '{"batch": "x"}'})
    assert not bridge_deployed({"LANGSERVE_GRAPHS": "not json"})
    assert not bridge_deployed({})


def test_a_call_is_recorded_once_though_its_node_runs_again_on_resume() -> None:
    store = InMemoryStore()
    call = Call(key="call-1", spec=GPT, messages=[{"role": "user", "content": "hi"}])
    record_calls(store, [call], "thread-1", ("assistant-1", "pipeline"), now=lambda: 10.0)
    record_calls(store, [call], "thread-1", ("assistant-1", "pipeline"), now=lambda: 99.0)
    item = store.get(CALLS_NAMESPACE, "call-1")
    assert item is not None
    assert item.value == {
        **call.to_json(),
        "thread_id": "thread-1",
        "assistant_id": "assistant-1",
        "graph_id": "pipeline",
        "recorded_at": 10.0,
        "state": "waiting",
    }


def test_a_sync_call_on_the_servers_event_loop_is_recorded_once_the_node_has_suspended() -> None:
    """A sync `.invoke()` in an `async def` node: no blocking store call on the loop."""
    store = InMemoryStore()
    call = Call(key="call-1", spec=GPT, messages=[])

    async def in_an_async_node() -> bool:
        record_calls(store, [call], "t", ("a", "g"), now=lambda: 5.0)
        recorded_at_once = store.get(CALLS_NAMESPACE, "call-1") is not None
        for _ in range(10):  # the node has suspended: the loop runs the recording
            await asyncio.sleep(0)
        return recorded_at_once

    assert asyncio.run(in_an_async_node()) is False
    item = store.get(CALLS_NAMESPACE, "call-1")
    assert item is not None and item.value["recorded_at"] == 5.0


class Text(TypedDict, total=False):
    text: str


def test_outside_a_server_a_batched_model_answers_in_realtime_though_the_bridge_is_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LANGSERVE_GRAPHS", '{"batch_bridge": "./graphs/bridge.py:graph"}')
    llm = batched(GenericFakeChatModel(messages=iter([AIMessage("realtime answer")])))

    def node(state: Text) -> dict[str, Any]:
        return {"text": llm.invoke(state["text"]).content}

    builder = StateGraph(Text)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    assert builder.compile().invoke({"text": "hi"}) == {"text": "realtime answer"}
