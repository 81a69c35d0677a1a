"""Gemini batches end to end: our provider, through google-genai, against the emulator's `/gemini`.

The graph runs unchanged; what is checked is what a user relies on: every request answered or
failed in input order (joined on `key`, whatever order the responses file has), usage and cost,
retries of retryable rows only, every fault knob ending with every request accounted for, cancel,
a create whose answer was lost found again (never sent twice), the chat-model entry points
(`run_batch(model=ChatGoogleGenerativeAI(...))`, the CLI), the key variables and their order,
the API version a base URL names, and the key kept out of state and logs.
"""

from __future__ import annotations

import json
import logging
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_google_genai import ChatGoogleGenerativeAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent import run_batch
from agent.context import Context
from agent.emulator import ManualClock, list_jobs, read_access_log, running_emulator
from agent.graph import build_graph
from agent.model_spec import spec_from_chat_model
from agent.planning import new_intent
from agent.pricing import Tokens, TokenTally, quote
from agent.providers import ProviderError, resolve_provider
from agent.providers.base import JOB_KEY_METADATA
from agent.providers.gemini import GeminiProvider
from agent.providers.gemini.provider import display_name, split_version
from agent.requests import BatchRequest
from tests.fault_proxy import FaultProxy
from tests.support import (
    FAST_POLLING,
    assert_all_accounted,
    assert_retried_in_follow_ups,
    built_lines,
    run_with_wait_budget,
)

MODEL = "gemini-2.5-flash"
N = 12
RECORDS: list[dict[str, Any]] = [
    {"id": f"req-{i:02d}", "prompt": f"question number {i}"} for i in range(N)
]
# A Google-looking key (AIza + 35 characters), to check it never leaves the SDK client.
KEY = "AIzaSyTEST0123456789abcdefghijklmnopqrs"
CREATE_PATH = r"^/gemini/v1(beta)?/models/[^/]+:batchGenerateContent$"


def _run(
    records: list[dict[str, Any]] = RECORDS, thread: str = "t", **context: Any
) -> dict[str, Any]:
    values, _ = run_with_wait_budget("gemini", records, thread, **context)
    return dict(values)


def _creates(path_prefix: str = "/gemini/v1/") -> list[dict[str, Any]]:
    return [
        e
        for e in read_access_log()
        if e["method"] == "POST"
        and e["path"].startswith(path_prefix)
        and e["path"].endswith(":batchGenerateContent")
    ]


def _served_run(ctx: Context, records: list[dict[str, Any]], clock: ManualClock) -> dict[str, Any]:
    """Run `records` on thread "t" against the served emulator of `ctx`; return its values.

    Submitted by a first invoke; the second, a virtual second later, finds the batch ended
    (the served emulator's delay) and collects it.
    """
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"requests": records}, config, context=ctx)
    clock.advance(1.0)
    graph.invoke({}, config, context=ctx)
    return dict(graph.get_state(config).values)


def _gemini_jobs(state_dir: Path | None = None) -> list[dict[str, Any]]:
    return [j for j in list_jobs(state_dir) if j["provider"] == "gemini"]


# --------------------------------------------------------------------------- lifecycle


def test_full_lifecycle_results_in_input_order_with_usage_and_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The responses file comes shuffled: results are joined on `key`, never by position.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "shuffle=1,seed=5")
    values = _run()
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, RECORDS)
    assert [r["message"].content for r in values["results"]] == [
        f"Emulated reply to: question number {i}" for i in range(N)
    ]
    assert all(
        r["message"].response_metadata["model_provider"] == "google_genai"
        for r in values["results"]
    )
    (job,) = values["jobs"]
    assert job["provider"] == "gemini" and job["job_id"].startswith("batches/")
    assert job["provider_status"] == "BATCH_STATE_SUCCEEDED" and job["model"] == MODEL
    assert job["output_file_id"].startswith("files/batch-")
    # usage: 3 words per prompt (+ nothing), 5 reply words ("Emulated reply to: question ...").
    usage = values["usage"]
    assert usage["input_tokens"] == sum(r["usage"]["input_tokens"] for r in values["results"]) > 0
    assert usage["output_tokens"] == sum(r["usage"]["output_tokens"] for r in values["results"]) > 0
    # Priced as genai-prices' `google` provider: the batch variant is half the realtime price.
    cost = job["cost"]
    assert cost["source"].startswith("genai-prices") and cost["note"] is None
    assert cost["batch_usd"] == pytest.approx(cost["realtime_usd"] / 2)
    rates = quote("gemini", MODEL).batch
    assert rates is not None
    expected = rates.cost(Tokens(input=usage["input_tokens"], output=usage["output_tokens"]))
    assert Decimal(str(cost["batch_usd"])) == pytest.approx(expected)
    assert len(_creates()) == 1 and len(_gemini_jobs()) == 1
    # The job is known to Gemini by its job key alone (the display name).
    assert _gemini_jobs()[0]["metadata"]["displayName"] == display_name(job["job_key"])


def test_status_reads_batch_stats_whose_zero_counts_are_left_out(
    tmp_path: Path, emulator_clock: ManualClock
) -> None:
    provider = GeminiProvider(emulated=True, base_url="")
    job = _created(provider, tmp_path, ["a", "b", "c"], "stats")
    fresh = provider.status(job)  # every count but the total is zero, so left out
    assert fresh.status == "queued" and fresh.provider_status == "BATCH_STATE_PENDING"
    assert fresh.counts == {"total": 3, "succeeded": 0, "failed": 0, "pending": 3}
    emulator_clock.advance(1.0)
    ended = provider.status(job)
    assert ended.status == "done" and ended.output_file_id
    assert ended.counts == {"total": 3, "succeeded": 3, "failed": 0, "pending": 0}


def test_thinking_and_cached_tokens_are_priced_as_the_database_says() -> None:
    """Thinking tokens are output tokens; cache reads keep the standard cache-read rate in batch."""
    tally = TokenTally()
    # What a stored result of a thinking answer with a cached prompt part holds.
    tally.add(
        {
            "usage": {"input_tokens": 1000, "output_tokens": 300},
            "message": {"usage_metadata": {"input_token_details": {"cache_read": 400}}},
        }
    )
    cost = tally.cost("gemini", MODEL, when=None, price_override="")
    at = quote("gemini", MODEL)
    assert at.batch is not None and at.realtime is not None
    # The database's batch variant has no cache-read price: the standard one applies.
    assert at.batch.cache_read_mtok == at.realtime.cache_read_mtok is not None
    million = Decimal(1_000_000)
    expected = (
        600 * at.batch.input_mtok + 400 * at.batch.cache_read_mtok + 300 * at.batch.output_mtok
    ) / million
    assert Decimal(str(cost["batch_usd"])) == pytest.approx(expected)
    assert cost["cached_input_tokens"] == 400


def test_thinking_tokens_reach_the_usage_and_the_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _run(RECORDS[:2], thread="plain")
    thinking = _run(RECORDS[:2], thread="thinking", model_settings={"thinking_budget": 64})
    assert thinking["status"] == plain["status"] == "completed", thinking.get("error")
    # The emulator reports thoughtsTokenCount for a thinking budget: billed as output.
    assert thinking["usage"]["output_tokens"] > plain["usage"]["output_tokens"]
    assert thinking["jobs"][0]["cost"]["batch_usd"] > plain["jobs"][0]["cost"]["batch_usd"]


def test_request_errors_are_reported_and_only_retryable_ones_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "request_fail_rate=0.3,seed=3")
    records = [{"id": f"r{i}", "prompt": f"retry me {i}"} for i in range(30)]
    records.append({"id": "bad", "prompt": "please [emulator:reject] this"})
    values = _run(records, max_attempts=6)
    assert_all_accounted(values, records)
    by_id = {r["id"]: r for r in values["results"]}
    bad = by_id.pop("bad")
    # gRPC 3 INVALID_ARGUMENT: the same request would fail again, so it is not retried.
    assert bad["status"] == "failed" and bad["attempts"] == 1
    assert "reject" in bad["error"]["message"]
    # Follow-ups are rebuilt from the input kept in the store (uploaded files cannot be
    # downloaded from Gemini).
    assert_retried_in_follow_ups(values, by_id)


@pytest.mark.parametrize(
    "faults",
    [
        "all_fail=1",
        "shuffle=1,seed=2",
        "expire=0.5",
        "output_lag=0.4",
        "create_429=2",
        "http_error_rate=0.15,seed=4",
        "unknown_status=paused_for_review",
        "batch_fail=quota",
    ],
)
def test_every_fault_knob_ends_with_every_request_accounted_for(
    faults: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", faults)
    records = RECORDS[:6]
    values = _run(records, max_attempts=2)
    assert values["status"] in {"completed", "failed"}, values.get("error")
    assert_all_accounted(values, records)
    results = values["results"]
    if faults == "all_fail=1":
        # A SUCCEEDED job whose every row failed: reported row by row (and retried once).
        assert values["jobs"][0]["provider_status"] == "BATCH_STATE_SUCCEEDED"
        assert all(r["status"] == "failed" and r["attempts"] == 2 for r in results)
        assert all(r["error"]["code"] != "no_result" for r in results)
    elif faults == "expire=0.5":
        # EXPIRED keeps the rows done; the missing ones are retried in a follow-up job.
        assert values["jobs"][0]["provider_status"] == "BATCH_STATE_EXPIRED"
        assert [r["attempts"] for r in results[:3]] == [1, 1, 1]
        assert all(r["attempts"] == 2 for r in results[3:])
    elif faults == "batch_fail=quota":
        # Failed as a whole for a quota (RESOURCE_EXHAUSTED): the requests are retried.
        assert values["jobs"][0]["provider_status"] == "BATCH_STATE_FAILED"
        assert all(
            r["status"] == "failed" and r["error"]["code"] == "batch_failed" for r in results
        )
        assert len(values["jobs"]) == 2
    else:
        assert all(r["status"] == "succeeded" for r in results), [r["error"] for r in results]
    if faults == "create_429=2":
        # Refused twice (the provider did nothing), then created once.
        statuses = [e["status"] for e in _creates()]
        assert statuses == [429, 429, 200] and len(_gemini_jobs()) == 1


def test_cancel_is_instant_and_keeps_partial_results(
    monkeypatch: pytest.MonkeyPatch, emulator_clock: ManualClock
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "2")
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"requests": RECORDS}, config, context=Context(provider="gemini"))
    emulator_clock.advance(1.0)
    graph.invoke({"cancel": True}, config, context=Context(provider="gemini", **FAST_POLLING))  # type: ignore[arg-type]
    values = graph.get_state(config).values
    assert values["status"] == "cancelled"
    (job,) = values["jobs"]
    assert job["provider_status"] == "BATCH_STATE_CANCELLED"
    assert_all_accounted(values, RECORDS)
    done = [r for r in values["results"] if r["status"] == "succeeded"]
    assert 0 < len(done) < N
    assert len(_gemini_jobs()) == 1  # cancelled requests are not retried


# --------------------------------------------------------------------------- never twice


def _created(provider: GeminiProvider, tmp_path: Path, ids: list[str], key: str) -> Any:
    """Upload and create a batch of `ids` as job `key` would; return its intent with the id."""
    requests = [BatchRequest(i, [{"role": "user", "content": f"hi {i}"}], {}) for i in ids]
    spool = tmp_path / f"{key}.jsonl"
    spool.write_bytes(built_lines(provider, requests, MODEL, {}))
    file_id = provider.upload(spool, f"batch-agent-{key}.jsonl")
    created = provider.create(
        file_id, model=MODEL, completion_window="24h", metadata={JOB_KEY_METADATA: key}
    )
    intent = new_intent(
        provider, key=key, attempt=1, model=MODEL, params={}, request_count=len(ids)
    )
    return {**intent, "job_id": created.job_id, "input_file_id": file_id}


def test_a_batch_is_found_by_its_display_name_never_by_its_content(
    tmp_path: Path, emulator_clock: ManualClock
) -> None:
    provider = GeminiProvider(emulated=True, base_url="")
    sent_at = emulator_clock.now()
    theirs = _created(provider, tmp_path, ["a", "b"], "another-threads-key")
    ours = _created(provider, tmp_path, ["a", "b"], "ours")
    intent = {**ours, "job_id": None}
    found = provider.find_job(intent, sent_at=sent_at, claimed=())
    assert found is not None and found.job_id == ours["job_id"] != theirs["job_id"]
    assert provider.find_job(intent, sent_at=sent_at, claimed={ours["job_id"]}) is None
    many = provider.thread_jobs(
        "t", [intent, {**theirs, "job_id": None}], since=sent_at - 5, claimed=()
    )
    assert {k: v.job_id for k, v in many.items()} == {
        "ours": ours["job_id"],
        "another-threads-key": theirs["job_id"],
    }
    # An upload is found again by its name and size (a kill between upload and create).
    spool = tmp_path / "ours.jsonl"
    again = provider.find_file("batch-agent-ours.jsonl", spool.stat().st_size, sent_at)
    assert again == ours["input_file_id"]
    assert provider.find_file("batch-agent-ours.jsonl", 1, sent_at) is None


@pytest.mark.parametrize("action", ["502_after", "drop_after"])
def test_a_create_whose_answer_is_lost_is_adopted_never_sent_again(
    action: str,
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    records = RECORDS[:4]
    ctx_settings = {**FAST_POLLING, "max_requests_per_job": 2}
    with running_emulator(isolated_env, emulator_clock) as url, FaultProxy(url) as proxy:
        rule = proxy.fail("POST", CREATE_PATH, action)  # type: ignore[arg-type]
        ctx = Context(provider="gemini", base_url=f"{proxy.url}/gemini", **ctx_settings)  # type: ignore[arg-type]
        graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
        config = {"configurable": {"thread_id": "t"}}
        graph.invoke({"requests": records}, config, context=ctx)
        deadline = time.monotonic() + 60
        values = graph.get_state(config).values
        while values["status"] not in {"completed", "failed", "error"}:
            assert time.monotonic() < deadline
            emulator_clock.advance(0.5)
            graph.invoke({}, config, context=ctx)
            values = graph.get_state(config).values
        assert rule.fired == 1  # the first create made its batch, and its answer was lost
        assert proxy.count("POST", CREATE_PATH) == 2  # one per part: the lost one was found
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, records)
    assert sorted(j["job_id"] for j in values["jobs"]) == sorted(
        j["id"] for j in _gemini_jobs(isolated_env)
    )


# --------------------------------------------------------------------------- entry points


def test_run_batch_takes_a_chat_google_generative_ai_model() -> None:
    llm = ChatGoogleGenerativeAI(model=MODEL, temperature=0.3, max_tokens=50, api_key="unused-key")
    spec = spec_from_chat_model(llm)
    assert spec["provider"] == "gemini" and spec["model"] == MODEL
    assert spec["params"] == {"temperature": 0.3, "max_tokens": 50}  # as the run context has them
    results = run_batch(["hello", "world"], model=llm, **FAST_POLLING)
    assert [r.status for r in results] == ["succeeded", "succeeded"]
    assert [r.message.content for r in results if r.message] == [
        "Emulated reply to: hello",
        "Emulated reply to: world",
    ]
    assert len(_gemini_jobs()) == 1


def test_the_cli_runs_a_gemini_batch(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:3]))
    db = tmp_path / "db.sqlite"
    out = tmp_path / "out"
    args = ["run", str(source), "--provider", "gemini", "--db", str(db), "--thread", "g1"]
    result = CliRunner().invoke(app, [*args, "--wait", "--poll-interval", "0.1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    # No key set: the emulator's Gemini protocol, priced as Gemini (batch half of realtime).
    assert "emulated run" in result.output and "batch $0.0000" in result.output
    report = json.loads(CliRunner().invoke(app, ["status", "g1", "--db", str(db), "--json"]).stdout)
    assert report["status"] == "completed"
    assert report["jobs"][0]["job_id"].startswith("batches/")
    assert len(_gemini_jobs()) == 1


# --------------------------------------------------------------------------- keys and endpoints


@pytest.mark.parametrize("variable", ["GOOGLE_API_KEY", "GEMINI_API_KEY"])
def test_either_key_variable_chooses_gemini(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, KEY)
    provider = resolve_provider(Context())
    assert provider.name == "gemini" and not provider.emulated


def test_without_a_key_gemini_is_the_emulators_gemini_protocol() -> None:
    provider = resolve_provider(Context(provider="gemini"))
    assert isinstance(provider, GeminiProvider) and provider.emulated


def test_google_api_key_wins_over_gemini_api_key_as_in_the_sdk(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_API_KEY", KEY)
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSyWRONG0123456789abcdefghijklmnopqr")
    # Batches go to the Developer API even where the environment asks the SDK for Vertex AI.
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    with running_emulator(isolated_env) as url:
        provider = GeminiProvider(emulated=False, base_url=f"{url}/gemini")
        provider.retrieve_model(MODEL)  # the emulator requires GOOGLE_API_KEY's value
        monkeypatch.delenv("GOOGLE_API_KEY")
        wrong = GeminiProvider(emulated=False, base_url=f"{url}/gemini")
        with pytest.raises(ProviderError) as caught:
            wrong.status({"job_id": "batches/none", "request_count": 1})  # type: ignore[typeddict-item]
    assert "API key not valid" in str(caught.value)
    assert "WRONG" not in str(caught.value)


@pytest.mark.parametrize(
    ("base", "version_env", "path"),
    [
        ("/gemini", None, "/gemini/v1/"),
        ("/gemini/v1beta", None, "/gemini/v1beta/"),
        ("/gemini/v1", "v1beta", "/gemini/v1/"),
        ("/gemini", "v1beta", "/gemini/v1beta/"),
        ("/gemini", "beta", "/gemini/v1beta/"),
    ],
)
def test_the_api_version_is_named_by_the_base_url_else_the_sdks_variable(
    base: str,
    version_env: str | None,
    path: str,
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    if version_env:
        monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", version_env)
    with running_emulator(isolated_env, emulator_clock) as url:
        ctx = Context(provider="gemini", base_url=url + base, **FAST_POLLING)  # type: ignore[arg-type]
        values = _served_run(ctx, RECORDS[:2], emulator_clock)
    assert values["status"] == "completed", values.get("error")
    calls = [e["path"] for e in read_access_log(isolated_env) if e["path"].startswith("/gemini")]
    assert calls and all(
        p.startswith((path, path.replace("/gemini/", "/gemini/upload/"))) for p in calls
    )


def test_google_keys_are_redacted_wherever_they_appear() -> None:
    from agent.secrets import REDACTED, redact

    text = f"400 INVALID_ARGUMENT for key={KEY}: API key not valid"
    assert redact(text) == f"400 INVALID_ARGUMENT for key={REDACTED}: API key not valid"


def test_split_version() -> None:
    assert split_version("https://generativelanguage.googleapis.com/v1beta") == (
        "https://generativelanguage.googleapis.com",
        "v1beta",
    )
    assert split_version("https://proxy.example/google/v1/") == (
        "https://proxy.example/google",
        "v1",
    )
    assert split_version("https://proxy.example/google") == ("https://proxy.example/google", None)
    assert split_version(None) == (None, None)


def test_the_key_never_reaches_state_or_logs(
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_API_KEY", KEY)
    with running_emulator(isolated_env, emulator_clock) as url, caplog.at_level(logging.DEBUG):
        ctx = Context(provider="gemini", base_url=f"{url}/gemini", **FAST_POLLING)  # type: ignore[arg-type]
        values = _served_run(ctx, RECORDS[:3], emulator_clock)
        assert values["status"] == "completed", values.get("error")
        # A key the server refuses: the error in state names the problem, never the key.
        monkeypatch.setenv("GOOGLE_API_KEY", "AIzaSyREFUSED456789abcdefghijklmnopqrst")
        refused = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
        refused.invoke({"requests": RECORDS[:1]}, {"configurable": {"thread_id": "r"}}, context=ctx)
        failed = refused.get_state({"configurable": {"thread_id": "r"}}).values
    assert failed["status"] == "error" and "API key not valid" in failed["error"]
    dumped = json.dumps([values, failed], default=str)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (KEY, "AIzaSyREFUSED456789abcdefghijklmnopqrst"):
        assert secret not in dumped and secret not in logs
        assert secret[8:20] not in dumped


def test_identical_requests_are_sent_once_and_answered_for_every_id() -> None:
    """Gemini lines start with `key` (not `custom_id`): identical bodies are still found."""
    records = [{"id": f"q{i}", "prompt": f"Classify ticket kind {i % 3}"} for i in range(9)]
    values = _run(records)
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, records)
    assert [j["request_count"] for j in values["jobs"]] == [3]
    results = {r["id"]: r for r in values["results"]}
    assert results["q3"]["duplicate_of"] == "q0" and results["q8"]["duplicate_of"] == "q2"
    assert results["q4"]["message"].content == results["q1"]["message"].content
    assert values["dedup"]["requests"] == 6


def test_tools_and_a_response_schema_go_through_the_batch() -> None:
    from tests.unit_tests.test_structured_parity import SCHEMA, TOOLS

    records = [{"id": "a", "prompt": "weather in Paris?"}]
    tooled, _ = run_with_wait_budget("gemini", records, "tools", graph_input={"tools": TOOLS})
    assert tooled["status"] == "completed", tooled.get("error")
    (call,) = tooled["results"][0]["message"].tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) <= {"city", "unit"}
    shaped, _ = run_with_wait_budget(
        "gemini", records, "schema", graph_input={"response_schema": SCHEMA}
    )
    assert shaped["status"] == "completed", shaped.get("error")
    parsed = shaped["results"][0]["parsed"]
    assert parsed["category"] in {"billing", "bug", "other"} and isinstance(parsed["urgent"], bool)


@pytest.mark.parametrize("moment", ["running", "finished"])
def test_a_thread_rerun_after_its_database_is_lost_adopts_its_batches(
    moment: str, emulator_clock: ManualClock
) -> None:
    ctx = Context(provider="gemini", max_requests_per_job=2, **FAST_POLLING)  # type: ignore[arg-type]
    records = RECORDS[:6]
    first = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "nightly"}}
    no_wait = Context(provider="gemini", max_requests_per_job=2, max_wait_seconds=0.0)
    submitted = first.invoke({"requests": records}, config, context=no_wait)
    assert len(submitted["jobs"]) == 3 and all(job["job_id"] for job in submitted["jobs"])
    if moment == "finished":
        emulator_clock.advance(1.0)
    # A new worker with a fresh database re-runs the same input on the same thread id.
    second = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    second.invoke({"requests": records}, config, context=ctx)
    emulator_clock.advance(1.0)
    second.invoke({}, config, context=ctx)
    values = second.get_state(config).values
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, records)
    assert len(_gemini_jobs()) == 3  # found by their display names: no second batch
    assert {j["job_id"] for j in values["jobs"]} == {j["job_id"] for j in submitted["jobs"]}
