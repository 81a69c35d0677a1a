"""Scale: splitting across jobs, and a poll step whose checkpoint does not grow with the batch."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent.context import Context
from agent.emulator import list_jobs, read_access_log
from agent.graph import build_graph
from agent.persistence import sqlite_checkpointer
from agent.planning import plan_requests
from agent.providers import resolve_provider
from agent.requests import iter_file_requests
from agent.state import changed_jobs, merge_jobs


def _write_input(path: Path, n: int, model_every: int = 0) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            record: dict[str, Any] = {"id": f"r{i:06d}", "prompt": f"classify item {i}"}
            if model_every and i % model_every == 0:
                record["params"] = {"model": "gpt-4o"}
            fh.write(json.dumps(record) + "\n")
    return path


def test_120k_requests_with_a_50k_cap_plan_three_jobs(tmp_path: Path) -> None:
    source = _write_input(tmp_path / "big.jsonl", 120_000)
    ctx = Context(provider="emulator")
    plan = plan_requests(iter_file_requests(source), provider=resolve_provider(ctx), context=ctx)
    try:
        assert [(j["model"], j["requests"]) for j in plan.summary()] == [
            ("gpt-4o-mini", 50_000),
            ("gpt-4o-mini", 50_000),
            ("gpt-4o-mini", 20_000),
        ]
        # The built files are exactly what will be uploaded, one line per request, in order.
        first = plan.jobs[0]
        assert first.path is not None and first.path.stat().st_size == first.input_bytes
        with first.path.open("rb") as fh:
            assert json.loads(fh.readline())["custom_id"] == "r000000"
        assert list(plan.jobs[2].iter_request_ids())[-1] == "r119999"
    finally:
        plan.discard()
    assert read_access_log() == []  # planning uploads nothing


def test_split_by_count_bytes_and_model_returns_results_in_input_order(tmp_path: Path) -> None:
    source = _write_input(tmp_path / "mixed.jsonl", 1_200, model_every=3)
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "split"}}
    ctx = Context(
        provider="emulator",
        max_requests_per_job=300,
        max_file_bytes=40_000,
        max_wait_seconds=30,
        poll_interval_seconds=0.05,
        results_in_state=10_000,
    )
    graph.invoke({"input_path": str(source)}, config, context=ctx)
    values = graph.get_state(config).values
    assert values["status"] == "completed", values.get("error")
    jobs = values["jobs"]
    assert {j["model"] for j in jobs} == {"gpt-4o", "gpt-4o-mini"}
    assert all(j["request_count"] <= 300 and j["input_bytes"] <= 40_000 for j in jobs)
    assert sum(j["request_count"] for j in jobs) == 1_200
    assert len(jobs) == len(list_jobs()) >= 6
    ids = [r["id"] for r in values["results"]]
    assert ids == [f"r{i:06d}" for i in range(1_200)]
    assert all(r["status"] == "succeeded" for r in values["results"])
    assert values["results"][3]["message"].response_metadata["model_name"] == "gpt-4o"
    assert values["estimate"]["requests"] == 1_200
    # The per-job plan is in the job records: not written again into every checkpoint.
    assert not values.get("plan") and all(j["input_tokens"] > 0 for j in jobs)


def test_dry_run_reports_the_plan_and_uploads_nothing(tmp_path: Path) -> None:
    source = _write_input(tmp_path / "in.jsonl", 500)
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "dry"}}
    graph.invoke(
        {"input_path": str(source), "dry_run": True},
        config,
        context=Context(provider="emulator", max_requests_per_job=200),
    )
    values = graph.get_state(config).values
    assert [p["requests"] for p in values["plan"]] == [200, 200, 100]
    assert not values.get("jobs")
    assert read_access_log() == []


def _checkpoint_bytes(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        checkpoints = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(checkpoint) + LENGTH(metadata)), 0) FROM checkpoints"
        ).fetchone()
        writes = conn.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM writes").fetchone()
    return int(checkpoints[1]) + int(writes[0]), int(checkpoints[0])


def test_a_poll_step_writes_under_20kb_at_20000_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "BATCH_AGENT_EMULATOR_DELAY", "600"
    )  # the job stays in flight for all 30 polls
    source = _write_input(tmp_path / "in.jsonl", 20_000)
    db = tmp_path / "checkpoints.sqlite"
    with sqlite_checkpointer(db) as saver:
        graph = build_graph().compile(checkpointer=saver, store=InMemoryStore())
        config = {"configurable": {"thread_id": "growth"}}
        ctx = Context(provider="emulator")
        graph.invoke({"input_path": str(source)}, config, context=ctx)
        assert graph.get_state(config).values["status"] == "submitted"
        before, rows_before = _checkpoint_bytes(db)
        started = time.monotonic()
        for _ in range(30):
            graph.invoke({}, config, context=ctx)
        after, rows_after = _checkpoint_bytes(db)
        values = graph.get_state(config).values
    assert values["polls"] == 30 and values["status"] in {"submitted", "running"}
    per_poll = (after - before) / 30
    print(f"bytes written per poll step at 20,000 requests: {per_poll:.0f}")
    assert per_poll < 20_000, f"{per_poll:.0f} bytes written per poll step"
    assert rows_after > rows_before
    assert time.monotonic() - started < 30


def test_a_poll_step_writes_only_what_moved_with_20_jobs_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1,000,000 requests are 20 OpenAI jobs: here 20 jobs of 100, whose counts rise at every
    # check (a 600 s lifecycle, checked every 20 virtual seconds).
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "600")
    source = _write_input(tmp_path / "in.jsonl", 2_000)
    db = tmp_path / "checkpoints.sqlite"
    with sqlite_checkpointer(db) as saver:
        graph = build_graph().compile(checkpointer=saver, store=InMemoryStore())
        config = {"configurable": {"thread_id": "twenty"}}
        ctx = Context(provider="emulator", max_requests_per_job=100)
        graph.invoke({"input_path": str(source)}, config, context=ctx)
        submitted = graph.get_state(config).values["jobs"]
        assert len(submitted) == 20
        waiting = Context(
            provider="emulator",
            max_requests_per_job=100,
            max_wait_seconds=300,
            poll_interval_seconds=20,
            poll_backoff=1.0,
        )
        graph.invoke({}, config, context=waiting)
        values = graph.get_state(config).values
        step_bytes, job_writes = _check_step_bytes(db)
    assert len(step_bytes) == values["polls"] >= 15 and values["status"] == "running"
    # Every record moved and is merged in full: the state holds the provider's latest word.
    jobs = values["jobs"]
    assert [job["job_key"] for job in jobs] == [job["job_key"] for job in submitted]
    assert all(job["provider_status"] == "in_progress" for job in jobs)
    assert all(0 < job["counts"]["succeeded"] < 100 for job in jobs)
    assert all(job["job_id"] == old["job_id"] for job, old in zip(jobs, submitted, strict=True))
    # ... while each check wrote only the fields that moved, a fraction of the records.
    records = len(json.dumps(jobs))
    assert max(job_writes) < records / 4, (max(job_writes), records)
    per_step = max(step_bytes)
    print(f"bytes written per poll step with 20 jobs in flight: at most {per_step:,}")
    assert per_step < 20_000, f"{per_step:,} bytes written by a poll step"


def _check_step_bytes(db: Path) -> tuple[list[int], list[int]]:
    """Return what each status-check step wrote (its writes plus the checkpoint after it), and
    the size of each of those steps' `jobs` write."""
    with sqlite3.connect(db) as conn:
        checkpoints = conn.execute(
            "SELECT checkpoint_id, LENGTH(checkpoint) + LENGTH(metadata) FROM checkpoints "
            "ORDER BY checkpoint_id"
        ).fetchall()
        writes = conn.execute(
            "SELECT checkpoint_id, channel, LENGTH(value) FROM writes "
            "WHERE task_path LIKE '%, poll' OR task_path LIKE '%, wait'"
        ).fetchall()
    by_step: dict[str, int] = {}
    for checkpoint_id, _, size in writes:
        by_step[checkpoint_id] = by_step.get(checkpoint_id, 0) + size
    following = {cid: checkpoints[i + 1][1] for i, (cid, _) in enumerate(checkpoints[:-1])}
    step_bytes = [size + following[cid] for cid, size in by_step.items()]
    return step_bytes, [size for _, channel, size in writes if channel == "jobs"]


@pytest.mark.parametrize("hours", [1, 6, 24])
def test_polling_schedule_costs_a_few_hundred_calls_a_day(hours: int) -> None:
    ctx = Context()
    done_at = hours * 3600.0
    clock, calls = 0.0, 0
    while clock < done_at:
        clock += ctx.next_poll_interval(calls)
        calls += 1
    assert calls <= 330
    assert clock - done_at <= ctx.max_poll_interval_seconds * (1 + ctx.poll_jitter)


@pytest.mark.parametrize("order", ["in-order", "reversed", "late-swap"])
def test_result_pages_are_in_input_order_whatever_the_arrival_order(order: str) -> None:
    from agent.bulk import PAGE_SIZE, ResultSpool, ThreadData

    count = PAGE_SIZE * 2 + 345
    positions = list(range(count))
    if order == "reversed":
        positions.reverse()
    elif order == "late-swap":  # in order for two full pages, then out of order
        positions[PAGE_SIZE * 2 + 10], positions[-1] = positions[-1], positions[PAGE_SIZE * 2 + 10]
    data = ThreadData(InMemoryStore(), "t")
    with ResultSpool(data, first_round=True, count=count) as spool:
        for p in positions:
            spool.put(p, {"id": f"r{p}", "status": "succeeded", "usage": {}})
        assert spool.replaced() == []
        spool.merge()
    assert [r["id"] for r in data.iter_results(count)] == [f"r{p}" for p in range(count)]
    # A follow-up round patches only what it retried and reports what it replaced.
    with ResultSpool(data, first_round=False, count=count) as spool:
        spool.put(5, {"id": "r5", "status": "failed", "usage": {}})
        spool.put(count - 1, {"id": f"r{count - 1}", "status": "failed", "usage": {}})
        replaced = spool.replaced()
        assert [r["status"] for r in data.iter_results(count)].count("failed") == 0
        spool.merge()
    assert [r["id"] for r in replaced] == ["r5", f"r{count - 1}"]
    results = list(data.iter_results(count))
    assert [r["status"] for r in results].count("failed") == 2 and len(results) == count


def test_a_status_check_update_patches_each_record_into_what_the_check_made() -> None:
    def record(key: str, **fields: Any) -> dict[str, Any]:
        return {"job_key": key, "status": "queued", "counts": {"total": 5}, "errors": [], **fields}

    before = [record("a"), record("b", waiting_for="tokens"), record("c", cancelled=True)]
    after = [
        record("a", status="running", counts={"total": 5, "succeeded": 2}),
        record("b"),  # a field removed
        record("c", cancelled=True),  # unchanged: not written
        record("d"),  # a record the check added
    ]
    update = changed_jobs(before, after)  # type: ignore[arg-type]
    assert [change["job_key"] for change in update["changes"]] == ["a", "b", "d"]
    assert update["changes"][1] == {"job_key": "b", "set": {}, "unset": ["waiting_for"]}
    assert merge_jobs(before, update) == after  # type: ignore[arg-type]
    # Whole records (planning, submit, collect) replace by key and append, in order.
    assert merge_jobs(before, [record("b", status="done"), record("e")]) == [  # type: ignore[arg-type, list-item]
        before[0],
        record("b", status="done"),
        before[2],
        record("e"),
    ]


def test_a_count_only_plan_keeps_no_files_and_a_spooled_plan_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.first_seen

    # Ids and bodies spill to disk after 100 keys (a real plan: after half a million).
    monkeypatch.setattr(agent.first_seen, "DEFAULT_MEMORY_KEYS", 100)
    source = tmp_path / "in.jsonl"
    with source.open("w") as fh:
        for i in range(1_000):  # every fourth request repeats the body of one 500 earlier
            prompt = f"classify item {i - 500 if i >= 500 and i % 4 == 0 else i}"
            fh.write(json.dumps({"id": f"r{i:04d}", "prompt": prompt}) + "\n")
    spool = tmp_path / "spool"  # the conftest's BATCH_AGENT_SPOOL_DIR
    ctx = Context(provider="emulator", max_requests_per_job=400)
    provider = resolve_provider(ctx)
    counted = plan_requests(iter_file_requests(source), provider=provider, context=ctx, spool=False)
    assert not list(spool.iterdir())  # `plan`: nothing built, nothing kept
    with pytest.raises(ValueError, match="spool=False"):
        next(counted.iter_request_ids())
    plan = plan_requests(iter_file_requests(source), provider=provider, context=ctx)
    try:
        # The same jobs, bytes and hash either way.
        assert counted.summary() == plan.summary() and counted.request_hash == plan.request_hash
        assert (plan.request_count, plan.duplicate_count) == (1_000, 125)
        assert [j.request_count for j in plan.jobs] == [400, 400, 75]
        assert list(plan.iter_request_ids()) == [f"r{i:04d}" for i in range(1_000)]
        assert next(plan.iter_duplicates()) == ("r0500", "r0000")
        assert list(plan.iter_duplicates())[-1] == ("r0996", "r0496")
        job_ids = [i for job in plan.jobs for i in job.iter_request_ids()]
        assert len(job_ids) == 875 and "r0500" not in job_ids and "r0501" in job_ids
        plan.drop_id_spools()  # what plan_batch does once the store holds the ids
        assert sorted(p.name.count("ids") for p in spool.iterdir()) == [0, 0, 0]
    finally:
        plan.discard()
    assert not list(spool.iterdir())
