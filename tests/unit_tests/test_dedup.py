"""Pay once for identical requests: sent once, answered for every id, reported as saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent.context import Context
from agent.emulator import list_jobs
from agent.graph import build_graph
from tests.support import run_to_end

# 100 requests, 10 distinct bodies; ids and the order of repeats vary.
RECORDS = [{"id": f"q{i:03d}", "prompt": f"Classify ticket kind {i % 10}"} for i in range(100)]


def run(context: Context, records: list[dict[str, Any]], thread: str) -> dict[str, Any]:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    return run_to_end(graph, {"configurable": {"thread_id": thread}}, context, records)


# Not Anthropic: its default model's price is tiered, so there is no saving to check.
@pytest.mark.parametrize("provider", ["openai", "mistral", "gemini"])
def test_identical_bodies_are_sent_once_and_answered_for_every_id(
    provider: str, isolated_env: Path
) -> None:
    context = Context(provider=provider)  # type: ignore[arg-type]
    values = run(context, RECORDS, f"dedup-{provider}")
    (job,) = values["jobs"]
    assert job["request_count"] == 10  # one line per distinct body
    assert [j["request_count"] for j in list_jobs(isolated_env)] == [10]
    results = values["results"]
    assert [r["id"] for r in results] == [r["id"] for r in RECORDS]
    assert all(r["status"] == "succeeded" for r in results)
    by_id = {r["id"]: r for r in results}
    for i, record in enumerate(RECORDS):
        original = by_id[f"q{i % 10:03d}"]
        got = by_id[record["id"]]
        assert got["message"].content == original["message"].content
        assert got["message"].content.endswith(record["prompt"])
        if i >= 10:
            assert got["duplicate_of"] == original["id"]
        else:
            assert "duplicate_of" not in got
    assert values["counts"] == {"total": 100, "succeeded": 100, "failed": 0, "pending": 0}
    # Usage and cost are what was billed: the 10 sent requests only.
    assert values["usage"]["input_tokens"] == sum(
        by_id[f"q{i:03d}"]["usage"]["input_tokens"] for i in range(10)
    )
    dedup = values["dedup"]
    assert dedup["requests"] == 90
    assert dedup["saved_batch_usd"] == pytest.approx(9 * values["cost"]["batch_usd"])
    assert dedup["estimated_batch_usd"] > 0


def test_dedupe_off_sends_every_request(isolated_env: Path) -> None:
    values = run(Context(provider="openai", dedupe=False), RECORDS[:30], "no-dedup")
    assert values["jobs"][0]["request_count"] == 30
    assert values.get("dedup") is None
    assert all("duplicate_of" not in r for r in values["results"])


def test_same_prompt_with_different_params_is_not_a_duplicate(isolated_env: Path) -> None:
    records = [
        {"id": "a", "prompt": "Same words"},
        {"id": "b", "prompt": "Same words", "params": {"temperature": 0.5}},
        {"id": "c", "prompt": "Same words"},
    ]
    values = run(Context(provider="openai"), records, "params-differ")
    assert values["jobs"][0]["request_count"] == 2
    assert [r.get("duplicate_of") for r in values["results"]] == [None, None, "a"]


def test_duplicates_of_a_retried_request_get_its_final_answer(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "request_fail_rate=0.5,seed=4")
    values = run(Context(provider="openai", max_attempts=6), RECORDS[:40], "dedup-retry")
    assert any(j["attempt"] > 1 for j in values["jobs"])
    by_id = {r["id"]: r for r in values["results"]}
    for record in RECORDS[10:40]:
        copy = by_id[record["id"]]
        original = by_id[copy["duplicate_of"]]
        assert (copy["status"], copy["attempts"]) == (original["status"], original["attempts"])
        assert copy["message"] == original["message"]
    assert values["counts"]["total"] == 40
    assert values["counts"]["succeeded"] + values["counts"]["failed"] == 40
    # Follow-up jobs carry only originals: no duplicate is ever sent.
    assert sum(j["request_count"] for j in values["jobs"] if j["attempt"] == 1) == 10
    assert all(j["request_count"] <= 10 for j in values["jobs"])


def test_cli_plan_reports_duplicates_and_no_dedupe_turns_it_off(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    runner = CliRunner()
    on = runner.invoke(app, ["plan", str(source), "--provider", "emulator", "--json"])
    assert on.exit_code == 0, on.output
    report = json.loads(on.stdout)
    assert report["jobs"][0]["requests"] == 10 and report["dedup"]["requests"] == 90
    text = runner.invoke(app, ["plan", str(source), "--provider", "emulator"])
    assert "duplicates: 90 identical requests sent once" in text.stdout
    off = runner.invoke(
        app, ["plan", str(source), "--provider", "emulator", "--no-dedupe", "--json"]
    )
    report = json.loads(off.stdout)
    assert report["jobs"][0]["requests"] == 100 and report["dedup"] is None
