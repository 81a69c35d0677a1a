"""SIGKILL the CLI while a thread runs in waves under a provider quota: no request runs twice.

The emulator's OpenAI enqueued-token quota holds two of the thread's four jobs, so the thread
meets refusals (re-queued jobs) and intents waiting for quota. Killed at random points and run
again until it ends, every ticket is answered once, by exactly one completed job, and no
refused job is ever adopted as the thread's.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from agent.emulator import list_jobs
from agent.emulator.answers import prompt_token_count
from tests.cli_process import start_cli
from tests.integration_tests.conftest import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow

TICKETS = PROJECT_ROOT / "examples" / "tickets.jsonl"
RECORDS = [json.loads(line) for line in TICKETS.read_text().splitlines()]
PER_JOB = 5
JOB_TOKENS = [
    sum(prompt_token_count([{"role": "user", "content": r["prompt"]}]) for r in part)
    for part in (RECORDS[i : i + PER_JOB] for i in range(0, len(RECORDS), PER_JOB))
]
KILLS = 6


def test_kills_while_waves_wait_for_quota_never_run_a_request_twice(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path,
        BATCH_AGENT_EMULATOR_DELAY="1.5",
        BATCH_AGENT_EMULATOR_FAULTS=f"enqueued_token_limit={2 * max(JOB_TOKENS)}",
        BATCH_AGENT_MAX_REQUESTS_PER_JOB=str(PER_JOB),
    )
    served = Path(env["BATCH_AGENT_EMULATOR_DIR"])
    args = ["run", str(TICKETS), "--thread", "waves", "--wait", "--poll-interval", "0.1"]
    args += ["--poll-backoff", "1", "--out", "out.jsonl"]
    rng = random.Random(20261203)
    killed = 0
    for _ in range(KILLS):
        child = start_cli(args, tmp_path, env)
        time.sleep(rng.uniform(0.2, 2.5))
        child.kill()
        killed += child.wait() == -signal.SIGKILL
    final = start_cli(args, tmp_path, env)
    assert final.wait(timeout=180) == 0, final.stderr_so_far()
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in RECORDS]
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in rows)
    jobs = list_jobs(served)
    completed = [j for j in jobs if j["status"] == "completed"]
    # Four planned jobs ran, once each, holding every ticket once: none ran twice.
    assert len(completed) == len(JOB_TOKENS)
    assert sum(j["request_count"] for j in completed) == len(RECORDS)
    # The others are the refusals the quota made (none of their requests ran).
    refused = [j for j in jobs if j["status"] == "failed"]
    assert refused and len(refused) + len(completed) == len(jobs)
    assert killed >= KILLS - 1, f"only {killed} of {KILLS} runs were killed mid-way"
