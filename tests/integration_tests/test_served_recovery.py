"""A served thread whose booked poll died with `langgraph dev` still finishes by itself.

`langgraph dev` writes its runs to `.langgraph_api/.langgraph_ops.pckl` every 10 s. These tests
wait for one of those writes, then submit and SIGKILL the server 1-2 s after the run booked the
thread's next poll, so the booking (and, in one case, the thread record) is certainly lost. The
restarted server must poll and collect the thread with no client invoking it. It must also
leave alone the threads whose latest run turned self-scheduling off.
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


@pytest.mark.parametrize(
    "thread_on_disk",
    [True, False],
    ids=["thread-record-kept", "thread-record-lost-too"],
)
def test_thread_finishes_after_a_kill_lost_its_booked_poll(
    tmp_path: Path, thread_on_disk: bool
) -> None:
    process, url = start_dev_server(tmp_path, BATCH_AGENT_EMULATOR_DELAY="4")
    try:
        client = get_sync_client(url=url, api_key=None)
        if thread_on_disk:
            thread_id = client.threads.create()["thread_id"]
            written = wait_for_ops_write(tmp_path)  # the thread is on disk; what follows is not
        else:
            written = wait_for_ops_write(tmp_path)
            thread_id = client.threads.create()["thread_id"]
        first = client.runs.wait(thread_id, "batch", input={"requests": RECORDS}, context=FAST)
        assert isinstance(first, dict) and first["status"] == "submitted", first
        assert first["next_check_at"] is not None  # the next poll is booked...
        job_id = first["jobs"][0]["job_id"]
        time.sleep(1)
        # ...and not yet on disk: the kill below loses it (else the test proves nothing).
        assert ops_written_at(tmp_path) == written, "the dev server wrote its runs too soon"
    finally:
        stop_dev_server(process, signal.SIGKILL)

    process, url = start_dev_server(tmp_path, BATCH_AGENT_EMULATOR_DELAY="4")
    try:
        client = get_sync_client(url=url, api_key=None)
        values: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # only reads: no client run advances the thread
            time.sleep(1)
            try:
                values = client.threads.get_state(thread_id)["values"]
            except Exception:  # the thread record may come back only with the re-booked run
                continue
            if values.get("status") == "completed":
                break
        assert values.get("status") == "completed", values
        assert [r["id"] for r in values["results"]] == [r["id"] for r in RECORDS]
        assert all(r["status"] == "succeeded" for r in values["results"])
        assert [j["job_id"] for j in values["jobs"]] == [job_id]
        assert [j["id"] for j in list_jobs(tmp_path / "emulator")] == [job_id]
        assert values["next_check_at"] is None
        runs = len(client.runs.list(thread_id, limit=100))
    finally:
        stop_dev_server(process)
    if not thread_on_disk:
        return
    # One more start: the finished thread's booking is dropped, and no run is booked for it.
    process, url = start_dev_server(tmp_path, BATCH_AGENT_EMULATOR_DELAY="4")
    try:
        client = get_sync_client(url=url, api_key=None)
        assert len(client.runs.list(thread_id, limit=100)) == runs
        bookings = client.store.search_items(BOOKINGS_NAMESPACE, limit=100)["items"]
        assert thread_id not in {item["key"] for item in bookings}
    finally:
        stop_dev_server(process)


def test_a_run_that_turns_self_scheduling_off_drops_the_thread_booking(tmp_path: Path) -> None:
    """A restarted server re-books only threads whose latest run wanted self-scheduling."""
    # The job runs for a minute and polls are booked a minute ahead: nothing ends mid-test.
    process, url = start_dev_server(tmp_path, BATCH_AGENT_EMULATOR_DELAY="60")
    try:
        client = get_sync_client(url=url, api_key=None)
        thread_id = client.threads.create()["thread_id"]
        slow = {**FAST, "poll_interval_seconds": 60}
        client.runs.wait(thread_id, "batch", input={"requests": RECORDS}, context=slow)

        def booked() -> bool:
            return client.store.get_item(BOOKINGS_NAMESPACE, thread_id) is not None

        assert booked()
        polled = client.runs.wait(
            thread_id, "batch", input={}, context={**slow, "self_schedule": False}
        )
        assert isinstance(polled, dict) and polled["status"] == "submitted", polled
        assert polled["next_check_at"] is None
        assert not booked()
    finally:
        stop_dev_server(process)
