"""Anthropic through the CLI over loopback: SIGKILL while the create answer is held back.

Anthropic batches carry no metadata, so this is the case only the create journal and the
listing rule can save: the batch exists at the provider, the killed process never saw its id.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.emulator import list_jobs, running_emulator
from tests.integration_tests.conftest import (
    PROJECT_ROOT,
    clean_env,
    held_run_args,
    kill_once_a_job_exists,
)

pytestmark = pytest.mark.slow

TICKETS = PROJECT_ROOT / "examples" / "tickets.jsonl"
TICKET_IDS = [json.loads(line)["id"] for line in TICKETS.read_text().splitlines()]


def test_kill_while_the_anthropic_create_answer_is_held_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served"
    # The loopback emulator lives in this test process: it creates the batch, then holds the answer.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "create_delay=30")
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "1")
    with running_emulator(served) as url:
        args = held_run_args("anthropic", f"{url}/anthropic")
        env = clean_env(tmp_path, ANTHROPIC_API_KEY="sk-ant-test-held")
        kill_once_a_job_exists(args, tmp_path, env, served)
        assert len(list_jobs(served)) == 1, "the provider should have created the batch"
        assert not (tmp_path / "out.jsonl").exists()

        monkeypatch.delenv("BATCH_AGENT_EMULATOR_FAULTS")
        resumed = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert resumed.returncode == 0, resumed.stderr
        # Adopted from the journal and the listing (same size, created after the send), not
        # created again (the held create is still being answered, so it is not in the log yet).
        assert len(list_jobs(served)) == 1
        rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == TICKET_IDS
        assert all(r["status"] == "succeeded" for r in rows)
