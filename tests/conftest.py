"""Shared fixtures: an isolated emulator state directory, its clock, virtual waits, no provider
keys from the host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent import drive
from agent.emulator import ManualClock, use_clock
from agent.pause import pause_with

PROVIDER_ENV = (
    "OPENAI_API_KEY",
    "MISTRAL_API_KEY",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPENAI_BASE_URL",
    "MISTRAL_BASE_URL",
    "ANTHROPIC_BASE_URL",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_GENAI_USE_VERTEXAI",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run every test without real keys, against a private emulator state directory."""
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in list(__import__("os").environ):
        if name.startswith("BATCH_AGENT_"):
            monkeypatch.delenv(name, raising=False)
    state_dir = tmp_path / "emulator"
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DIR", str(state_dir))
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0.3")
    monkeypatch.setenv("BATCH_AGENT_SPOOL_DIR", str(tmp_path / "spool"))
    yield state_dir


@pytest.fixture
def emulator_clock(isolated_env: Path) -> ManualClock:
    """The clock of this test's in-process emulator: `advance` it instead of sleeping.

    It ticks with the wall clock too, so a graph that waits in real time (its `wait` node
    sleeps) still sees its jobs move; `advance` skips ahead. Every in-process client of the
    test's state directory (the graph's providers, `list_jobs`) reads it.
    """
    clock = ManualClock(ticking=True)
    use_clock(clock, isolated_env)
    return clock


@pytest.fixture
def virtual_waits(
    emulator_clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ManualClock]:
    """Make every wait of this test advance `emulator_clock` instead of sleeping.

    The graph's `wait` node (`agent.pause`) and the drive loop (`run_batch`, the CLI's `--wait`)
    then spend virtual time only: a job of 4 s ends after 4 s of waiting, at no wall cost, and
    `waited_seconds` adds up as in a real run. Only for a test whose waits are all for this
    process's in-process emulator: an emulator in another process (or on another clock) would
    not see the time move.
    """
    monkeypatch.setattr(drive, "time", SimpleNamespace(sleep=emulator_clock.advance))
    with pause_with(emulator_clock.advance, emulator_clock.now):
        yield emulator_clock
