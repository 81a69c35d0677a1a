"""A map run without waiting, seen by `status`, stopped by `cancel`: `batch-agent map --no-wait`.

Through the CLI (typer's runner, in process), the user's graph, the batch graph and the OpenAI
SDK against the in-process emulator, in virtual time: between two `--no-wait` runs the test
moves the emulator's clock on, as the hours between two cron runs would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import Result
from typer.testing import CliRunner

from agent.batched import map_graph
from agent.emulator import ManualClock, list_jobs
from tests.graphs.pipeline import pipeline_builder
from tests.support import FAST_POLLING

DOCS = [{"text": f"invoice {i} was charged twice"} for i in range(3)]
GRAPH = str(Path(__file__).parents[1] / "graphs" / "pipeline.py") + ":pipeline"


def _cli(*args: str) -> Result:
    from agent.cli.app import app

    return CliRunner().invoke(app, list(args))


def _inputs(tmp_path: Path) -> Path:
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    return source


def _map(db: Path, out: Path, *extra: str) -> Result:
    return _cli("map", GRAPH, "--thread", "m1", "--db", str(db), "--out", str(out), *extra)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_no_wait_repeated_until_done_writes_what_a_waiting_run_writes(
    tmp_path: Path, emulator_clock: ManualClock
) -> None:
    source = _inputs(tmp_path)
    waited = tmp_path / "waited.jsonl"
    answer = _map(tmp_path / "waited.sqlite", waited, str(source), "--poll-interval", "0.05")
    assert answer.exit_code == 0, answer.output
    assert len(list_jobs()) == 3

    # The same map (same id, same inputs) on a database of its own, never waiting.
    db, out = tmp_path / "loop.sqlite", tmp_path / "loop.jsonl"
    runs = [_map(db, out, str(source), "--no-wait")]
    while "in flight" in runs[-1].stderr and len(runs) < 10:
        assert runs[-1].exit_code == 0, runs[-1].output
        assert not out.exists()  # nothing is written before the map has ended
        emulator_clock.advance(5)  # the emulator's jobs end after 0.3 s
        runs.append(_map(db, out, "--no-wait"))
    # One run submits round 1; each later run collects a round and submits the next.
    assert len(runs) == 4 and runs[-1].exit_code == 0, runs[-1].output
    first = runs[0].stderr
    assert "round 1: 3 calls in 1 batch thread(s), in flight; 3 of 3 items waiting" in first
    assert f"  check: batch-agent status m1 --db {db}\n" in first
    assert f"  go on: batch-agent map {GRAPH} --thread m1 --db {db} --no-wait" in first
    assert f"  stop:  batch-agent cancel m1 --db {db}\n" in first
    assert "round 2: 3 calls batched" in runs[2].stderr
    assert _lines(out) == _lines(waited)
    # Three more jobs, one per round: no call was sent twice.
    assert sorted(j["request_count"] for j in list_jobs()) == [3] * 6


def test_status_of_a_map_shows_its_items_rounds_pools_and_cost_in_80_columns(
    tmp_path: Path, emulator_clock: ManualClock
) -> None:
    db, out = tmp_path / "m.sqlite", tmp_path / "out.jsonl"
    assert _map(db, out, str(_inputs(tmp_path)), "--no-wait").exit_code == 0
    shown = _cli("status", "m1", "--db", str(db))
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "map m1: waiting · 3 items: 0 completed, 0 failed, 3 waiting"
    (pool,) = list_jobs()
    assert lines[1].startswith("round 1: 3 calls, in flight: m1-batch-")
    thread = lines[1].rsplit(" ", 1)[1]
    # The pool's batch thread, as `status THREAD` shows it: its job and its status.
    assert f"thread {thread}: submitted" in shown.stdout and pool["id"] in shown.stdout
    assert "cost: nothing collected yet" in shown.stdout
    assert max(len(line) for line in lines) <= 80

    emulator_clock.advance(5)
    assert _map(db, out, "--no-wait").exit_code == 0  # round 1 collected, round 2 sent
    lines = _cli("status", "m1", "--db", str(db)).stdout.splitlines()
    assert lines[1] == f"round 1: 3 calls, done: {thread}"
    assert lines[2].startswith("round 2: 3 calls, in flight: m1-batch-")
    assert any(line.startswith("cost: batch $") for line in lines)
    assert max(len(line) for line in lines) <= 80

    report = json.loads(_cli("status", "m1", "--db", str(db), "--json").stdout)
    assert report["map_id"] == "m1" and report["items"]["waiting"] == 3
    assert [(r["number"], r["calls"], r["status"]) for r in report["rounds"]] == [
        (1, 3, "done"),
        (2, 3, "pooled"),
    ]
    (in_flight,) = report["pools"]
    assert in_flight["thread_id"] == report["rounds"][1]["batch_threads"][0]
    assert in_flight["status"] == "submitted" and len(in_flight["jobs"]) == 1
    assert report["cost"]["batch_usd"] > 0


def test_a_cancelled_map_stops_its_pools_and_resumed_fails_its_waiting_items(
    tmp_path: Path, emulator_clock: ManualClock, monkeypatch: Any
) -> None:
    db, out = tmp_path / "m.sqlite", tmp_path / "out.jsonl"
    # Jobs of an hour: the cancel, not the clock, ends this one.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "3600")
    assert _map(db, out, str(_inputs(tmp_path)), "--no-wait").exit_code == 0
    thread = json.loads(_cli("status", "m1", "--db", str(db), "--json").stdout)["pools"][0]
    cancelled = _cli("cancel", "m1", "--db", str(db), "--poll-interval", "0.05")
    assert cancelled.exit_code == 0, cancelled.output
    assert "map m1 cancelled: 1 batch thread(s) cancelled" in cancelled.stderr
    assert (
        json.loads(_cli("status", thread["thread_id"], "--db", str(db), "--json").stdout)["status"]
        == "cancelled"
    )
    shown = _cli("status", "m1", "--db", str(db)).stdout.splitlines()
    assert shown[0].startswith("map m1: cancelled · 3 items")
    assert shown[1].startswith("round 1: 3 calls, cancelled: m1-batch-")

    # Resumed, with or without waiting: the waiting items fail, naming the cancel; nothing is sent.
    for extra in ("--no-wait", "--wait"):
        resumed = _map(db, out, extra)
        assert resumed.exit_code == 3, resumed.output
        assert "map m1 (cancelled): 0 of 3 items completed" in resumed.stderr
        items = _lines(out)
        assert [item["status"] for item in items] == ["failed"] * 3
        assert all(
            item["error"].startswith("MapCancelled: map m1 was cancelled (batch-agent cancel m1)")
            for item in items
        )
        assert len(list_jobs()) == 1
    again = _cli("cancel", "m1", "--db", str(db))
    assert "map m1 is already cancelled; nothing to cancel" in str(again.exception)


def test_an_ended_map_has_nothing_to_cancel_and_an_unknown_id_is_no_map(tmp_path: Path) -> None:
    db, out = tmp_path / "m.sqlite", tmp_path / "out.jsonl"
    assert _map(db, out, str(_inputs(tmp_path)), "--poll-interval", "0.05").exit_code == 0
    shown = _cli("status", "m1", "--db", str(db)).stdout.splitlines()
    assert shown[0] == "map m1: done · 3 items: 3 completed, 0 failed, 0 waiting"
    assert [line.split(":")[0] for line in shown[1:4]] == ["round 1", "round 2", "round 3"]
    assert all(", done: m1-batch-" in line for line in shown[1:4])
    ended = _cli("cancel", "m1", "--db", str(db))
    assert "map m1 has ended; nothing to cancel" in str(ended.exception)
    unknown = _cli("status", "m2", "--db", str(db))
    assert "no batch thread 'm2'" in str(unknown.exception)


def test_map_graph_without_waiting_returns_waiting_items_and_its_pools(
    emulator_clock: ManualClock,
) -> None:
    waited = map_graph(pipeline_builder(), DOCS, **FAST_POLLING)
    results = map_graph(pipeline_builder(), DOCS, wait=False, **FAST_POLLING)
    assert results.status == "waiting" and not results.done
    assert [item.status for item in results] == ["waiting"] * 3
    assert results.pending == results.rounds[-1].batch_threads and not results.rounds[-1].done
    runs = 1
    while not results.done:
        emulator_clock.advance(5)
        results = map_graph(pipeline_builder(), None, map_id=results.map_id, wait=False)
        runs += 1
    assert runs == 4 and results.status == "done"
    assert [item.state for item in results] == [item.state for item in waited]
    assert len(list_jobs()) == 6


def test_a_round_is_recorded_before_its_pool_is_sent_so_status_finds_a_refused_one(
    tmp_path: Path, emulator_clock: ManualClock
) -> None:
    db, out = tmp_path / "m.sqlite", tmp_path / "out.jsonl"
    # A budget below the first pool's cost: the map stops before that pool is uploaded.
    stopped = _map(db, out, str(_inputs(tmp_path)), "--no-wait", "--max-cost", "0.0000001")
    assert "exceeds max_cost $0.000000; nothing was uploaded" in str(stopped.exception)
    assert list_jobs() == []
    report = json.loads(_cli("status", "m1", "--db", str(db), "--json").stdout)
    assert [(r["number"], r["calls"], r["status"]) for r in report["rounds"]] == [(1, 3, "pooled")]
    (pool,) = report["pools"]
    assert pool == {"thread_id": report["rounds"][0]["batch_threads"][0], "submitted": False}
    shown = _cli("status", "m1", "--db", str(db)).stdout
    assert f"{pool['thread_id']}: not submitted" in shown
    # Run again without that budget: the same round goes on, each pool sent once.
    runs = 0
    while runs < 10:
        answer = _map(db, out, "--no-wait")
        assert answer.exit_code == 0, answer.output
        runs += 1
        if "in flight" not in answer.stderr:
            break
        emulator_clock.advance(5)
    assert runs == 4 and [line["status"] for line in _lines(out)] == ["completed"] * 3
    assert sorted(j["request_count"] for j in list_jobs()) == [3, 3, 3]


def test_a_rounds_batch_threads_go_on_lines_of_their_own_when_the_line_would_pass_80() -> None:
    from agent.cli.map_ops import round_lines

    short = {"number": 2, "calls": 1000, "status": "done", "batch_threads": ["m1-batch-ab"]}
    assert round_lines(short) == ["round 2: 1,000 calls, done: m1-batch-ab"]
    long_id = "nightly-invoices-2026-12-02-extract-classify-summarise-batch-0123456789abcdef"
    wide = {**short, "status": "pooled", "batch_threads": [long_id]}
    assert round_lines(wide) == [
        "round 2: 1,000 calls in 1 batch thread, in flight:",
        f"  {long_id}",
    ]


def test_a_map_started_without_waiting_is_finished_by_a_waiting_run(tmp_path: Path) -> None:
    source = _inputs(tmp_path)
    db, out = tmp_path / "m.sqlite", tmp_path / "out.jsonl"
    started = _map(db, out, str(source), "--no-wait")
    assert started.exit_code == 0 and "round 1: 3 calls in 1 batch thread(s)" in started.stderr
    finished = _map(db, out, "--wait", "--poll-interval", "0.05")
    assert finished.exit_code == 0, finished.output
    assert "map m1: 3 of 3 items completed in 3 rounds this run" in finished.stderr
    assert [line["status"] for line in _lines(out)] == ["completed"] * 3
    # Round 1's pool was polled where the first run left it, not sent again.
    assert sorted(j["request_count"] for j in list_jobs()) == [3, 3, 3]
