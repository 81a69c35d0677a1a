"""A served thread whose booked poll died with `langgraph dev` still finishes by itself.

`langgraph dev` writes its runs to `.langgraph_api/.langgraph_ops.pckl` every 10 s. The kill test
waits for one of those writes, then submits two threads and SIGKILLs the server 1-3 s after their
runs booked their next polls, so the bookings (and, for one thread, the thread record) are
certainly lost. The restarted server must poll and collect both threads with no client invoking
them. It must also leave alone the threads whose latest run turned self-scheduling off: such a
run drops the thread's booking, which is what a restarted server re-books from (shown on the
shared `dev_server`: no kill needed).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_sync_client

from agent.emulator import list_jobs
from agent.scheduling import BOOKINGS_NAMESPACE
from tests.integration_tests.conftest import start_dev_server, stop_dev_server

pytestmark = pytest.mark.slow

RECORDS = [{"id": f"r{i}", "prompt": f"Summarise ticket {i}"} for i in range(4)]
# The first self-scheduled poll is booked 3 s ahead; the server is killed before it runs.
FAST = {"provider": "emulator", "poll_interval_seconds": 3, "poll_backoff": 1.2, "poll_jitter": 0}


def ops_written_at(tmp: Path) -> int:
    """Return when the dev server last wrote its runs and threads to disk (0: never)."""
    ops = tmp / ".langgraph_api" / ".langgraph_ops.pckl"
    return ops.stat().st_mtime_ns if ops.exists() else 0


def wait_for_ops_write(tmp: Path, timeout: float = 30) -> int:
    """Wait for the dev server's next periodic write of its runs (it comes every 10 s)."""
    before = ops_written_at(tmp)
    deadline = time.monotonic() + timeout
    while (now := ops_written_at(tmp)) == before:
        assert time.monotonic() < deadline, "the dev server never wrote its runs to disk"
        time.sleep(0.05)
    return now


def completed_state(client: Any, thread_id: str) -> dict[str, Any]:
    """Read a thread's values until it is completed (60 s at most); no client run advances it."""
    values: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            values = client.threads.get_state(thread_id)["values"]
        except Exception:  # the thread record may come back only with the re-booked run
            values = {}
        if values.get("status") == "completed":
            break
        time.sleep(1)
    return values


def test_threads_finish_after_a_kill_lost_their_booked_polls(tmp_path: Path) -> None:
    """Both threads of a killed server finish by themselves once it is restarted.

    `kept` had its thread record on disk at the kill; `lost` lost it with its booked poll.
    """
    process, url = start_dev_server(tmp_path, BATCH_AGENT_EMULATOR_DELAY="4")
    try:
        client = get_sync_client(url=url, api_key=None)
        kept = client.threads.create()["thread_id"]
        written = wait_for_ops_write(tmp_path)  # `kept` is on disk; what follows is not
        lost = client.threads.create()["thread_id"]
        job_ids: dict[str, str] = {}
        for thread_id in (kept, lost):
            first = client.runs.wait(thread_id, "batch", input={"requests": RECORDS}, context=FAST)
            assert isinstance(first, dict) and first["status"] == "submitted", first
            assert first["next_check_at"] is not None  # the next poll is booked...
            job_ids[thread_id] = first["jobs"][0]["job_id"]
        time.sleep(1)
        # ...and not yet on disk: the kill below loses it (else the test proves nothing).
        assert ops_written_at(tmp_path) == written, "the dev server wrote its runs too soon"
    finally:
        stop_dev_server(process, signal.SIGKILL)

    process, url = start_dev_server(tmp_path, BATCH_AGENT_EMULATOR_DELAY="4")
    try:
        client = get_sync_client(url=url, api_key=None)
        runs: dict[str, int] = {}
        for thread_id in (kept, lost):
            values = completed_state(client, thread_id)
            assert values.get("status") == "completed", (thread_id == kept, values)
            assert [r["id"] for r in values["results"]] == [r["id"] for r in RECORDS]
            assert all(r["status"] == "succeeded" for r in values["results"])
            assert [j["job_id"] for j in values["jobs"]] == [job_ids[thread_id]]
            assert values["next_check_at"] is None
            runs[thread_id] = len(client.runs.list(thread_id, limit=100))
        # One job per thread, never a second one.
        assert sorted(j["id"] for j in list_jobs(tmp_path / "emulator")) == sorted(job_ids.values())
    finally:
        stop_dev_server(process)
    # One more start: the finished threads' bookings are dropped, and no run is booked for them.
    process, url = start_dev_server(tmp_path, BATCH_AGENT_EMULATOR_DELAY="4")
    try:
        client = get_sync_client(url=url, api_key=None)
        assert len(client.runs.list(kept, limit=100)) == runs[kept]
        bookings = client.store.search_items(BOOKINGS_NAMESPACE, limit=100)["items"]
        assert not {kept, lost} & {item["key"] for item in bookings}
    finally:
        stop_dev_server(process)


def test_a_run_that_turns_self_scheduling_off_drops_the_thread_booking(dev_server: str) -> None:
    """A restarted server re-books only threads whose latest run wanted self-scheduling."""
    # The job runs for a minute (the marker) and polls are booked a minute ahead: nothing ends
    # mid-test.
    slow_records = [{**r, "prompt": f"{r['prompt']} [emulator:delay=60]"} for r in RECORDS]
    client = get_sync_client(url=dev_server, api_key=None)
    thread_id = client.threads.create()["thread_id"]
    slow = {**FAST, "poll_interval_seconds": 60}
    client.runs.wait(thread_id, "batch", input={"requests": slow_records}, context=slow)

    def booked() -> bool:
        return client.store.get_item(BOOKINGS_NAMESPACE, thread_id) is not None

    assert booked()
    polled = client.runs.wait(
        thread_id, "batch", input={}, context={**slow, "self_schedule": False}
    )
    assert isinstance(polled, dict) and polled["status"] == "submitted", polled
    assert polled["next_check_at"] is None
    assert not booked()
