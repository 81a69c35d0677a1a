"""A user's graph served with batch-agent's bridge: threads started through the SDK finish by themselves.

The server's `langgraph.json` is the project's (its checkpointer, store and http app) with the
graphs a user lists: `batch` and `batch_bridge` from `agent.batched.deployment`, and the
example pipeline (`examples/graphs/pipeline.py`: extract -> classify -> summarise, its model
`batched(ChatOpenAI(...))`), as a user writes it. A client starts one run per document and goes
away; each thread suspends on its model calls, the bridge pools each step's calls of all threads
into one batch thread, and resumes them. The final states must be those of the same pipeline run
in realtime against the emulator, in exactly 3 rounds (3 pools, 3 emulated jobs), also when the
server is SIGKILLed mid-way and restarted.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_sync_client

from agent.emulator import ManualClock, list_jobs
from examples.graphs.pipeline import build
from tests.emulated_models import realtime_model
from tests.integration_tests.conftest import free_port, start_dev_server, stop_dev_server

pytestmark = pytest.mark.slow

# As the README's "Served" shows a user's `langgraph.json`: their graph, our two by module.
PIPELINE = {
    "pipeline": "./examples/graphs/pipeline.py:graph",
    "batch": "agent.batched.deployment:batch",
    "batch_bridge": "agent.batched.deployment:bridge",
    "async_node": "./tests/graphs/async_node.py:graph",
}
TICKETS = [
    json.loads(line)["text"]
    for line in (Path(__file__).parents[2] / "examples" / "documents.jsonl")
    .read_text()
    .splitlines()
]
DOCS = [{"text": f"{TICKETS[i % len(TICKETS)]} (ticket {i})"} for i in range(50)]
# Batch threads poll every second; a pool is sent after 2 s without a new call.
BRIDGE_ENV = {
    "BATCH_AGENT_BRIDGE_FLUSH_SECONDS": "2",
    "BATCH_AGENT_BRIDGE_CONTEXT": json.dumps(
        {"poll_interval_seconds": 1, "poll_backoff": 1, "poll_jitter": 0}
    ),
}


def realtime_states(
    docs: list[dict[str, Any]],
    state_dir: Path,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> list[dict[str, Any]]:
    """The pipeline's final states with the examples' model called in realtime (the emulator)."""
    model = realtime_model("openai", state_dir, clock, monkeypatch, temperature=0)
    graph = build(model).compile()
    return [dict(graph.invoke(doc)) for doc in docs]


def start_threads(url: str, docs: list[dict[str, Any]], graph: str = "pipeline") -> list[str]:
    """Start one run of `graph` per document, waiting for none of them; return the thread ids."""
    client = get_sync_client(url=url, api_key=None)
    threads = []
    for doc in docs:
        thread_id = client.threads.create()["thread_id"]
        client.runs.create(thread_id, graph, input=doc)
        threads.append(thread_id)
    return threads


def finished_states(url: str, threads: list[str], timeout: float = 180) -> list[dict[str, Any]]:
    """Read the threads' states (never advancing them) until every one has its summary."""
    client = get_sync_client(url=url, api_key=None)
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for thread_id in threads:
            try:
                states.append(client.threads.get_state(thread_id)["values"] or {})
            except Exception:  # a restarted server may not have the thread's record yet
                states.append({})
        if all("summary" in state for state in states):
            return [dict(state) for state in states]
        if time.monotonic() > deadline:
            late = [t for t, state in zip(threads, states, strict=True) if "summary" not in state]
            statuses = [client.threads.get(t)["status"] for t in late]
            raise AssertionError(
                f"threads {late} ({statuses}) never finished: {bridge_status(url)}"
            )
        time.sleep(1)


def bridge_status(url: str) -> dict[str, Any]:
    """What the bridge reports (a run of the served `batch_bridge` graph)."""
    client = get_sync_client(url=url, api_key=None)
    status = client.runs.wait(None, "batch_bridge", input={})
    assert isinstance(status, dict)
    return status


def test_fifty_served_threads_finish_with_no_client_in_three_rounds(
    tmp_path: Path,
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = realtime_states(DOCS, isolated_env, emulator_clock, monkeypatch)
    served = tmp_path / "server"
    served.mkdir()
    process, url = start_dev_server(served, graphs=PIPELINE, **BRIDGE_ENV)
    try:
        threads = start_threads(url, DOCS)
        assert finished_states(url, threads) == expected
        status = bridge_status(url)
        assert [pool["calls"] for pool in status["pools"]] == [50, 50, 50]
        assert {pool["state"] for pool in status["pools"]} == {"answered"}
        assert status["calls"]["waiting"] == status["calls"]["pooled"] == 0
        client = get_sync_client(url=url, api_key=None)
        assert {client.threads.get(t)["status"] for t in threads} == {"idle"}
    finally:
        stop_dev_server(process)
    assert len(list_jobs(served / "emulator")) == 3


def test_served_threads_finish_after_the_server_is_killed_mid_way(
    tmp_path: Path,
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed once the first round's answers are in (the callers' resumes going out).

    One more document's first call is rejected: its thread fails with the error realtime raises.
    And a graph whose `async def` node calls `.invoke()` (on the server's event loop) finishes.
    """
    docs = DOCS[:20]
    expected = realtime_states(docs, isolated_env, emulator_clock, monkeypatch)
    served = tmp_path / "server"
    served.mkdir()
    port = free_port()
    process, url = start_dev_server(served, port, graphs=PIPELINE, **BRIDGE_ENV)
    try:
        (rejected,) = start_threads(url, [{"text": "[emulator:reject] a ticket"}])
        (asked,) = start_threads(url, [{"text": "Why?"}], graph="async_node")
        threads = start_threads(url, docs)
        deadline = time.monotonic() + 60
        while not any(pool["state"] == "answered" for pool in bridge_status(url)["pools"]):
            assert time.monotonic() < deadline, "the first round never finished"
            time.sleep(0.2)
        stop_dev_server(process, signal.SIGKILL)
        process, url = start_dev_server(served, port, graphs=PIPELINE, **BRIDGE_ENV)
        assert finished_states(url, threads) == expected
        client = get_sync_client(url=url, api_key=None)
        assert client.threads.get(rejected)["status"] == "error"
        answer = client.threads.get_state(asked)["values"]
        assert answer == {"text": "Why?", "answer": "Emulated reply to: Why?"}
        time.sleep(2)  # a pass marks the calls of the threads that moved on
        status = bridge_status(url)
    finally:
        stop_dev_server(process)
    assert status["calls"]["answered"] == 0  # the failed thread's call too: nothing left to do
    # Never paid twice: each call in one pool, each pool one job.
    assert sum(pool["calls"] for pool in status["pools"]) == 3 * len(docs) + 2
    assert len(list_jobs(served / "emulator")) == len(status["pools"])
