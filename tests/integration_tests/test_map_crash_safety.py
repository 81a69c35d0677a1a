"""SIGKILL `batch-agent map` at many moments across its rounds: no call paid twice, no item lost.

The three-step pipeline example over a few dozen documents is killed again and again, at random
moments (by the clock) and at exact points (`agent.batched.kill_points`: before an item runs,
between an item's checkpoint and its writes, after a batch ended, after its answers are stored,
before the output), each time resumed with `batch-agent map GRAPH --thread MAP_ID --db DB`,
until it completes. Then every call key is in one provider job only (the emulator's jobs and
their request lines, through the OpenAI SDK), every item ended once, and the output equals an
uninterrupted run's.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from agent.batched.kill_points import KILL_AT
from agent.emulator import running_emulator
from agent.persistence import sqlite_checkpointer
from examples.graphs.pipeline import build
from tests.cli_process import run_cli, start_cli
from tests.integration_tests.conftest import PROJECT_ROOT, clean_env

pytestmark = pytest.mark.slow

GRAPH = f"{PROJECT_ROOT / 'examples' / 'graphs' / 'pipeline.py'}:graph"
ITEMS = 18
STEPS = 3
"""Model calls per item (extract, classify, summarise): one round each."""
MAP_ID = "map-killed"
MIN_KILLS = 15
MAX_RUNS = 80
"""A map still running after this many runs is stuck."""
POINT_WEIGHTS = {"time": 2, "invoke": 4, "item_writes": 3, "pool": 1, "answers": 1}
"""How often each kind of kill is drawn: by the clock, or at a kill point."""


def _documents(path: Path) -> Path:
    texts = [
        f"ticket {i}: I was charged {i + 2} times for order {1000 + i}, please refund"
        for i in range(ITEMS)
    ]
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


def _map_args(db: Path, out: Path, documents: Path | None) -> list[str]:
    return [
        "map",
        GRAPH,
        *([str(documents)] if documents is not None else []),
        "--thread",
        MAP_ID,
        "--db",
        str(db),
        "--out",
        str(out),
        "--poll-interval",
        "0.1",
    ]


def _next_kill(rng: random.Random, number: int) -> tuple[str, Any]:
    """The kill of run `number`: ("time", seconds after its start) or ("point", "POINT:N").

    The first lands after the map's inputs are recorded (a resume needs them). A kill point's
    N is small (and a timed kill early), so that each run moves the map on by a few items at
    most and the kills fall in every round, however fast the machine.
    """
    if number == 0:
        return "point", f"invoke:{rng.randint(2, ITEMS // 3)}"
    kind = rng.choices(list(POINT_WEIGHTS), weights=list(POINT_WEIGHTS.values()))[0]
    if kind == "time":
        return "time", rng.uniform(0.1, 0.6)
    if kind in ("invoke", "item_writes"):
        # A few items at most per run: on a fast machine a run otherwise ends a whole round,
        # and the map finishes before 15 kills have landed.
        return "point", f"{kind}:{rng.randint(1, 3)}"
    return "point", f"{kind}:1"


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test-map-kill", base_url=f"{url}/openai/v1")


def _jobs(url: str) -> int:
    """How many jobs the emulator at `url` has made."""
    return len(list(_client(url).batches.list(limit=100)))


def _calls_per_job(url: str) -> list[list[str]]:
    """Every job the emulator at `url` holds, as the request ids (call keys) of its input lines."""
    client = _client(url)
    jobs = []
    for job in client.batches.list(limit=100):
        text = client.files.content(job.input_file_id).text
        jobs.append([json.loads(line)["custom_id"] for line in text.splitlines()])
    return jobs


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    """An output line without what names its map (the thread id)."""
    return {k: v for k, v in row.items() if k != "thread_id"}


def _endings_per_item(db: Path) -> list[int]:
    """How many checkpoints of each item's thread are an end (nothing left to run)."""
    with sqlite_checkpointer(db) as saver:
        graph = build().compile(checkpointer=saver)
        return [
            sum(
                1
                for snapshot in graph.get_state_history(
                    {"configurable": {"thread_id": f"{MAP_ID}-item-{index}"}}
                )
                if not snapshot.next
            )
            for index in range(ITEMS)
        ]


def test_map_killed_at_random_moments_pays_once_and_ends_every_item_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator (in this process) makes jobs of 0.3 s.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0.3")
    served = tmp_path / "served"
    with running_emulator(served) as url, running_emulator(tmp_path / "reference-served") as ref:
        _kill_and_resume_until_done(tmp_path, url, ref)


def _env(tmp: Path, url: str) -> dict[str, str]:
    """A map's environment: OpenAI's batches on the emulator at `url`, their files kept."""
    return clean_env(
        tmp,
        OPENAI_API_KEY="sk-test-map-kill",
        BATCH_AGENT_BASE_URL=f"{url}/openai/v1",
        # Its input files kept, to read which calls each job held.
        BATCH_AGENT_KEEP_FILES="true",
    )


def _kill_and_resume_until_done(tmp_path: Path, url: str, reference_url: str) -> None:
    documents = _documents(tmp_path / "documents.jsonl")
    env = _env(tmp_path, url)
    db, out = tmp_path / "map.sqlite", tmp_path / "items.jsonl"

    # The uninterrupted run, on an emulator state of its own, alongside.
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference_env = _env(reference_dir, reference_url)
    reference_out = reference_dir / "items.jsonl"
    reference = start_cli(
        _map_args(reference_dir / "map.sqlite", reference_out, documents),
        reference_dir,
        env=reference_env,
    )

    rng = random.Random(20261202)
    # (the kill, how many jobs the provider had when it landed)
    landed: list[tuple[str, int]] = []
    for number in range(MAX_RUNS):
        kind, when = _next_kill(rng, number)
        args = _map_args(db, out, documents if number == 0 else None)
        if kind == "time":
            child = start_cli(args, tmp_path, env)
            time.sleep(when)
            child.kill()
        else:
            child = start_cli(args, tmp_path, {**env, KILL_AT: when})
        _, stderr = child.communicate(timeout=120)
        if child.returncode != -signal.SIGKILL:
            # The run got past its kill: the map is done.
            assert child.returncode == 0, f"run {number} ({kind} {when}): {stderr}"
            break
        landed.append((when if kind == "point" else f"after {when:.2f} s", _jobs(url)))
    else:
        pytest.fail(f"the map did not complete in {MAX_RUNS} runs")
    # Once more, killed after its (already finished) rounds, before the output is written.
    out.unlink()
    child = start_cli(_map_args(db, out, None), tmp_path, {**env, KILL_AT: "output:1"})
    child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL and not out.exists()
    landed.append(("output:1", _jobs(url)))

    done = run_cli(_map_args(db, out, None), tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert len(landed) >= MIN_KILLS, f"only {len(landed)} kills landed: {landed}"
    # Spread over the rounds: before the first job, and after each round's job was made.
    assert {min(jobs, STEPS) for _, jobs in landed} == set(range(STEPS + 1)), landed

    # No call key is in two paid jobs, and every item's three calls were sent.
    keys = [key for job in _calls_per_job(url) for key in job]
    assert len(keys) == len(set(keys)), "a call was sent in two jobs"
    assert len(keys) == ITEMS * STEPS

    # Every item ended exactly once, completed, one line each in input order.
    rows = _rows(out)
    assert [row["index"] for row in rows] == list(range(ITEMS))
    assert [row["status"] for row in rows] == ["completed"] * ITEMS, rows
    assert [row["calls"] for row in rows] == [STEPS] * ITEMS
    assert _endings_per_item(db) == [1] * ITEMS

    # The same output as the run that was never killed.
    reference.communicate(timeout=120)
    assert reference.returncode == 0
    assert [_comparable(r) for r in rows] == [_comparable(r) for r in _rows(reference_out)]
