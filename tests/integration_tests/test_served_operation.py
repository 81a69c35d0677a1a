"""A served thread finishes by itself, tells a webhook once, and streams progress (`langgraph dev`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from langgraph_sdk import get_sync_client

from tests.support import WebhookReceiver

pytestmark = pytest.mark.slow

# The shared `dev_server`'s emulator makes these jobs take 3 s (the marker): several polls.
RECORDS = [{"id": f"r{i}", "prompt": f"Summarise ticket {i} [emulator:delay=3]"} for i in range(5)]
# Fast polling so the test takes seconds.
FAST = {"provider": "emulator", "poll_interval_seconds": 1, "poll_backoff": 1.2}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver()
    try:
        yield hook
    finally:
        hook.close()


def wait_for(predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    return predicate()


# Gemini too: its own lifecycle (`BATCH_STATE_*`) and key-joined responses file must bring the
# served self-scheduling to the same single notice. Mistral and Anthropic go through the same
# nodes and are left out to keep the suite fast.
@pytest.mark.parametrize("provider", ["emulator", "gemini"])
def test_thread_completes_by_itself_and_notifies_once(
    dev_server: str, receiver: WebhookReceiver, provider: str
) -> None:
    fast = {**FAST, "provider": provider}
    client = get_sync_client(url=dev_server, api_key=None)
    thread_id = client.threads.create()["thread_id"]
    first = client.runs.wait(
        thread_id,
        "batch",
        input={"requests": RECORDS},
        context={**fast, "webhook_url": receiver.url},
    )
    assert isinstance(first, dict) and first["status"] == "submitted"
    assert first["next_check_at"] is not None  # the next poll is booked on the server

    # No client invokes the thread again: the server's delayed runs poll and collect it.
    values = wait_for(
        lambda: (
            (v := client.threads.get_state(thread_id)["values"]).get("status") == "completed" and v
        ),
        timeout=90,
    )
    assert values, client.threads.get_state(thread_id)["values"]
    assert [r["id"] for r in values["results"]] == [r["id"] for r in RECORDS]
    assert values["next_check_at"] is None
    assert len(values["jobs"]) == 1

    # Nothing stays scheduled for the finished thread: no pending run, no cron.
    def settled() -> bool:
        runs = client.runs.list(thread_id, limit=50)
        return all(run["status"] not in {"pending", "running"} for run in runs)

    assert wait_for(settled, timeout=20)
    assert client.crons.search(thread_id=thread_id) == []
    assert len(client.runs.list(thread_id, limit=50)) >= 2  # it did run again by itself

    # The webhook fired exactly once, with a small payload that says where the results are. The
    # notice is sent inside the run that collects (`send_notice` returns once it is answered) and
    # every run has settled with none booked, so nothing more can come: no wait proves it.
    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    assert len(body) < 2000
    notice = json.loads(body)
    assert notice["event"] == "batch.finished"
    assert notice["thread_id"] == thread_id == headers["X-Batch-Agent-Thread"]
    assert notice["status"] == "completed"
    assert notice["counts"]["succeeded"] == len(RECORDS)
    assert notice["results"]["store_namespace"] == values["results_store"]["namespace"]
    assert "results" not in notice["results"]  # never the result list itself
    # The webhook URL (it carries a token) is not kept in state; only its scheme and host are.
    # Read the state again now that every run has settled: the notice is recorded by the step
    # after the one that made the thread "completed", which the poll above may have seen first.
    values = client.threads.get_state(thread_id)["values"]
    assert values["webhook"]["target"].startswith("http://127.0.0.1:")
    assert "s3cret-tok" not in json.dumps(values, default=str)

    # Invoking the finished thread again sends nothing more (and books nothing that could).
    client.runs.wait(thread_id, "batch", input={}, context={**fast, "webhook_url": receiver.url})
    assert settled() and client.crons.search(thread_id=thread_id) == []
    assert len(receiver.received) == 1


def test_self_scheduling_can_be_turned_off(dev_server: str) -> None:
    client = get_sync_client(url=dev_server, api_key=None)
    thread_id = client.threads.create()["thread_id"]
    first = client.runs.wait(
        thread_id,
        "batch",
        input={"requests": RECORDS[:2]},
        context={**FAST, "self_schedule": False},
    )
    assert isinstance(first, dict) and first["status"] == "submitted"
    assert first["next_check_at"] is None
    # Nothing will ever poll the thread: its one run has ended and no delayed run or cron is
    # booked (a booked run is listed as pending), so it stays submitted. No wait proves it.
    assert [r["status"] for r in client.runs.list(thread_id)] == ["success"]
    assert client.crons.search(thread_id=thread_id) == []
    assert client.threads.get_state(thread_id)["values"]["status"] == "submitted"


def test_progress_events_stream_through_the_sdk(dev_server: str) -> None:
    client = get_sync_client(url=dev_server, api_key=None)
    thread_id = client.threads.create()["thread_id"]
    context = {**FAST, "max_wait_seconds": 30, "self_schedule": False}
    events = [
        part.data
        for part in client.runs.stream(
            thread_id,
            "batch",
            input={"requests": RECORDS},
            context=context,
            stream_mode="custom",
        )
        if part.event == "custom"
    ]
    progress = [e for e in events if e.get("event") == "batch_progress"]
    assert progress, events
    assert all(e["thread_id"] == thread_id for e in progress)
    assert all(e["counts"]["total"] == len(RECORDS) for e in progress)
    assert progress[-1]["counts"]["succeeded"] == len(RECORDS)
    assert progress[-1]["jobs"][0]["status"] == "done"
    assert [e["polls"] for e in progress] == sorted({e["polls"] for e in progress})
