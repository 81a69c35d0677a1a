"""The bookings ledger that lets a restarted server re-book a lost poll (`agent.scheduling`)."""

from __future__ import annotations

import asyncio

import pytest
from langgraph.store.memory import InMemoryStore

from agent.scheduling import BOOKINGS_NAMESPACE, record_booking
from agent.serving import still_in_flight


def test_a_booking_keeps_what_the_next_poll_needs_but_no_webhook_url() -> None:
    store = InMemoryStore()
    context = {
        "provider": "emulator",
        "poll_interval_seconds": 3,
        "webhook_url": "https://h/s3cret",
    }
    asyncio.run(record_booking(store, "t1", "batch", context, delay=7.4))
    item = store.get(BOOKINGS_NAMESPACE, "t1")
    assert item is not None
    assert item.value["assistant_id"] == "batch"
    assert item.value["context"] == {"provider": "emulator", "poll_interval_seconds": 3}
    assert "s3cret" not in str(item.value)  # the thread remembers its webhook URL itself
    assert item.value["due"] - item.updated_at.timestamp() == pytest.approx(7, abs=1)


def test_only_threads_with_work_left_are_re_booked() -> None:
    assert still_in_flight({"status": "submitted"})
    assert still_in_flight({"status": "running"})
    assert still_in_flight({"status": "error", "retry_later": True})  # an outage: try again
    assert not still_in_flight({"status": "error", "retry_later": False})  # needs a fix
    for final in ("completed", "failed", "cancelled"):
        assert not still_in_flight({"status": final})
