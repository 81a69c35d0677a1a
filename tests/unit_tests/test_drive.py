"""The drive loop (`agent.drive`): every client waits for a thread the same way, with growing
pauses, on an injected clock; `run_batch` and the CLI really go through it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from agent import drive
from agent.context import Context
from agent.drive import drive_until_done


class FakeClock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_checks_with_growing_pauses_until_terminal() -> None:
    clock = FakeClock()
    statuses = iter(["running", "running", "running", "completed"])
    seen: list[tuple[str, float | None]] = []
    context = Context(poll_interval_seconds=2, poll_backoff=2, poll_jitter=0)
    values = drive_until_done(
        lambda: {"status": next(statuses)},
        {"status": "submitted"},
        context.next_poll_interval,
        on_wait=lambda v, pause: seen.append((v["status"], pause)),
        sleep=clock.sleep,
    )
    assert values == {"status": "completed"}
    assert clock.pauses == [2, 4, 8, 16]
    assert seen == [
        ("submitted", 2),
        ("running", 4),
        ("running", 8),
        ("running", 16),
        ("completed", None),
    ]


def test_stops_on_an_error_without_checking_again() -> None:
    clock = FakeClock()
    checks: list[int] = []

    def check() -> dict[str, Any]:
        checks.append(1)
        return {"status": "error", "error": "quota"}

    values = drive_until_done(check, {"status": "running"}, lambda n: 1.0, sleep=clock.sleep)
    assert values["status"] == "error"
    assert len(checks) == 1 and clock.pauses == [1.0]


def test_a_done_thread_is_not_checked_at_all() -> None:
    clock = FakeClock()
    values = drive_until_done(
        lambda: pytest.fail("checked a finished thread"),
        {"status": "cancelled"},
        lambda n: 1.0,
        sleep=clock.sleep,
    )
    assert values["status"] == "cancelled" and clock.pauses == []


@pytest.fixture
def fake_sleep(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The drive loop's module clock, as `bench/run.py` patches it: no real waiting."""
    clock = FakeClock()
    monkeypatch.setattr(drive, "time", SimpleNamespace(sleep=clock.sleep))
    return clock


def test_run_batch_waits_through_the_drive_loop(fake_sleep: FakeClock) -> None:
    from agent import run_batch

    results = run_batch(
        ["Say hello", "Say bye"],
        provider="emulator",
        poll_interval_seconds=7,
        poll_backoff=1,
        poll_jitter=0,
    )
    assert results.done and [r.ok for r in results] == [True, True]
    # The emulator's job takes real time (0.3 s); each pause was the schedule's, never slept.
    assert fake_sleep.pauses and set(fake_sleep.pauses) == {7}


def test_cli_wait_goes_through_the_drive_loop(fake_sleep: FakeClock, tmp_path: Path) -> None:
    from agent.cli.app import app

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "prompt": "hi"}) + "\n")
    args = ["run", str(source), "--provider", "emulator", "--db", str(tmp_path / "db.sqlite")]
    args += ["--wait", "--poll-interval", "9", "--poll-backoff", "1", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert fake_sleep.pauses and all(8 <= p <= 10 for p in fake_sleep.pauses)  # ±10% jitter
