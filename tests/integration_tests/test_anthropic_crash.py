"""Anthropic through the CLI over loopback: SIGKILL while the create answer is held back.

Anthropic batches carry no metadata, so this is the case only the create journal and the
listing rule can save: the batch exists at the provider, the killed process never saw its id.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agent.emulator import list_jobs, running_emulator
from tests.integration_tests.conftest import BIN, PROJECT_ROOT, clean_env

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
        args = [
            str(BIN / "batch-agent"),
            "run",
            str(TICKETS),
            "--provider",
            "anthropic",
            "--base-url",
            f"{url}/anthropic",
            "--thread",
            "held",
            "--wait",
            "--poll-interval",
            "0.2",
            "--out",
            "out.jsonl",
        ]
        env = clean_env(tmp_path, ANTHROPIC_API_KEY="sk-ant-test-held")
        process = subprocess.Popen(
            args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while not list_jobs(served) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list_jobs(served)) == 1, "the provider should have created the batch"
        process.send_signal(signal.SIGKILL)
        process.wait()
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
