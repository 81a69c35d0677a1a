"""A batch's files at the provider are deleted once its results are stored (unless kept).

Every provider that stores our files (OpenAI, Mistral, Gemini) counts them against a storage
quota (Gemini: 20 GB per project), so a finished run leaves none behind; `keep_files` keeps
them; a delete that fails leaves the file and nothing else (the run completes, every result
is stored). The files are looked at through each provider's own SDK, against the emulator.
`plan` shows the per-job limits of the chosen provider.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import types
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from mistralai.client import Mistral
from openai import OpenAI
from typer.testing import CliRunner

from agent.cli.app import app
from agent.context import Context
from agent.emulator import IN_PROCESS_BASE_URL, emulator_http_client, read_access_log
from agent.graph import build_graph
from tests.support import FAST_POLLING, assert_all_accounted, run_with_wait_budget

RECORDS: list[dict[str, Any]] = [{"id": f"r{i}", "prompt": f"file me {i}"} for i in range(6)]
# The providers that keep our files; Anthropic takes requests inline and keeps none (below).
STORING = ["openai", "mistral", "gemini"]


def _completed(
    provider: str, records: list[dict[str, Any]] = RECORDS, **context: Any
) -> dict[str, Any]:
    """Run `records` to the end on `provider`; check it completed with every request answered."""
    values, _ = run_with_wait_budget(provider, records, **context)
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, records)
    return values


def _file_ids(provider: str) -> set[str]:
    """Return the ids of every file the emulator holds for `provider`, listed by its SDK."""
    http = emulator_http_client()
    if provider == "openai":
        client = OpenAI(api_key="x", base_url=f"{IN_PROCESS_BASE_URL}/openai/v1", http_client=http)
        return {f.id for f in client.files.list()}
    if provider == "mistral":
        mistral = Mistral(api_key="x", server_url=f"{IN_PROCESS_BASE_URL}/mistral", client=http)
        return {str(f.id) for f in mistral.files.list(page_size=100).data}
    gemini = genai.Client(
        api_key="x",
        vertexai=False,
        http_options=types.HttpOptions(base_url=f"{IN_PROCESS_BASE_URL}/gemini", httpx_client=http),
    )
    return {str(f.name) for f in gemini.files.list(config={"page_size": 100})}


def _job_files(values: dict[str, Any]) -> set[str]:
    """Return the provider file ids the thread's jobs name (inputs, outputs, error files)."""
    return {
        file_id
        for job in values["jobs"]
        for file_id in (job["input_file_id"], job["output_file_id"], job["error_file_id"])
        if file_id
    }


@pytest.mark.parametrize("provider", STORING)
def test_a_finished_run_leaves_none_of_its_files_at_the_provider(provider: str) -> None:
    values = _completed(provider, keep_files=False)
    assert all(r["status"] == "succeeded" for r in values["results"])
    assert _job_files(values), "the job had an input and an output file"
    assert _file_ids(provider) == set()
    assert all(job.get("files_deleted") for job in values["jobs"])


@pytest.mark.parametrize("provider", STORING)
def test_keep_files_keeps_the_input_and_output_files(provider: str) -> None:
    values = _completed(provider, keep_files=True)
    (job,) = values["jobs"]
    assert job["input_file_id"] and job["output_file_id"]
    assert _job_files(values) <= _file_ids(provider)
    assert not any(e["method"] == "DELETE" for e in read_access_log())


@pytest.mark.parametrize("provider", STORING)
def test_follow_up_jobs_are_built_before_their_source_files_go(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenAI and Mistral follow-up jobs read their requests back from the first job's input
    # file: it must outlive the first round, and go once the follow-ups are collected.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "request_fail_rate=0.4,seed=3")
    records = [{"id": f"q{i}", "prompt": f"retry me {i}"} for i in range(20)]
    values = _completed(provider, records, max_attempts=6, keep_files=False)
    assert any(job["attempt"] > 1 for job in values["jobs"]), "40% failures need follow-ups"
    assert all(r["status"] == "succeeded" for r in values["results"])
    assert _file_ids(provider) == set()


@pytest.mark.parametrize("provider", STORING)
def test_a_failing_delete_is_logged_once_and_loses_nothing(
    provider: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "delete_fail=1")
    with caplog.at_level(logging.WARNING, logger="batch_agent"):
        values = _completed(provider, keep_files=False)
    assert [r["message"].content for r in values["results"]] == [
        f"Emulated reply to: file me {i}" for i in range(len(RECORDS))
    ]
    deletes = [e for e in read_access_log() if e["method"] == "DELETE"]
    assert deletes and all(e["status"] == 500 for e in deletes)
    (job,) = values["jobs"]
    # The files stay where they were, and the run says so once, naming the job.
    assert _job_files(values) <= _file_ids(provider)
    warnings = [r.getMessage() for r in caplog.records if "could not delete" in r.getMessage()]
    assert len(warnings) == 1 and str(job["job_id"]) in warnings[0]
    assert job["files_deleted"] is True  # tried once: a later run does not try again


def test_anthropic_keeps_no_files_so_nothing_is_deleted() -> None:
    _completed("anthropic", keep_files=False)
    assert not any(e["method"] == "DELETE" for e in read_access_log())


def test_plan_shows_the_providers_per_job_limits(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    runner = CliRunner()
    answer = runner.invoke(app, ["plan", str(source), "--provider", "gemini", "--json"])
    assert answer.exit_code == 0, answer.output
    # Gemini: an input file may be up to 2 GB; no request cap is published (jobs kept at 100k).
    assert json.loads(answer.stdout)["limits"] == {
        "max_requests": 100_000,
        "max_file_bytes": 2_000_000_000,
        "provider_max_requests": 100_000,
        "provider_max_file_bytes": 2_000_000_000,
    }
    text = runner.invoke(app, ["plan", str(source), "--provider", "gemini"]).stdout
    assert "limits: at most 100,000 requests and 2 GB of input per job" in text
    capped = runner.invoke(
        app, ["plan", str(source), "--provider", "openai", "--max-requests-per-job", "4"]
    ).stdout
    assert "at most 4 requests and 200 MiB of input per job (openai's: 50,000" in capped


class _Killed(BaseException):
    """The process dies here: not an error any node catches, nothing checkpointed after it."""


@pytest.mark.parametrize("provider", STORING)
def test_a_collect_killed_after_its_deletes_resumes_with_every_result(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files are gone and the checkpoint never recorded the collect: the resumed collect
    # must give the round's results and totals from the store, not download again. Killed in
    # every round, so a follow-up round's totals (which replace earlier results) count too.
    import agent.graph

    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "request_fail_rate=0.4,seed=3")
    records = [{"id": f"k{i}", "prompt": f"kill me {i}"} for i in range(20)]
    real_collect_round = agent.graph.collect_round
    killed: list[int] = []

    def collect_then_die(state: Any, ctx: Any, data: Any) -> Any:
        collected = real_collect_round(state, ctx, data)  # results stored, files deleted
        if state["attempt"] not in killed:
            killed.append(state["attempt"])
            raise _Killed
        return collected

    monkeypatch.setattr(agent.graph, "collect_round", collect_then_die)
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "killed"}}
    ctx = Context(provider=provider, max_attempts=6, **FAST_POLLING)  # type: ignore[arg-type]
    run_input: dict[str, Any] | None = {"requests": records}
    for _ in range(30):
        try:
            graph.invoke(run_input or {}, config, context=ctx)
        except _Killed:
            pass
        run_input = None
        values = graph.get_state(config).values
        if values.get("status") in {"completed", "failed", "error"}:
            break
    assert len(killed) > 1, "40% failures need a follow-up round, killed as well"
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, records)
    assert all(r["status"] == "succeeded" for r in values["results"])
    assert values["counts"]["succeeded"] == len(records) and values["counts"]["failed"] == 0
    # Nothing was read again from a deleted file, and nothing is left at the provider.
    assert not any(e["status"] == 404 for e in read_access_log() if e["method"] == "GET")
    assert _file_ids(provider) == set()
