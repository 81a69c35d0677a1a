"""Never pay twice, never lose a result: faults, partial failures, retries, cancel, bad input.

Everything runs against the in-process emulator through the real SDKs; the emulator's fault knobs
(`BATCH_AGENT_EMULATOR_FAULTS`) make it misbehave the way real batch APIs do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent.context import Context
from agent.emulator import ManualClock, list_jobs, read_access_log
from agent.graph import build_graph
from agent.providers.errors import ProviderError, classify
from agent.requests import InputError
from tests.support import FAST_POLLING, assert_all_accounted, run_to_end, run_with_wait_budget

N = 12
RECORDS: list[dict[str, Any]] = [
    {"id": f"req-{i:02d}", "prompt": f"question number {i}"} for i in range(N)
]
FAST = FAST_POLLING


def _run(
    provider: str, records: list[dict[str, Any]] = RECORDS, thread: str = "t", **context: Any
) -> tuple[dict[str, Any], Any]:
    return run_with_wait_budget(provider, records, thread, **context)


def _assert_all_accounted(values: dict[str, Any], records: list[dict[str, Any]] = RECORDS) -> None:
    assert_all_accounted(values, records)


KNOBS = [
    "request_fail_rate=0.3",
    "http_error_rate=0.3,seed=1",
    "create_delay=0.3",
    "expire=0.5",
    "all_fail=1",
    "shuffle=1",
    "output_lag=0.5",
    "unknown_status=paused_for_review",
]


# Each provider's own code for a server-side failure (Anthropic's errored result type; a Gemini
# error line carries only the gRPC number: 13 is INTERNAL).
SERVER_ERROR_CODE = {
    "openai": "server_error",
    "mistral": "server_error",
    "anthropic": "api_error",
    "gemini": "grpc_13",
}


@pytest.mark.parametrize("provider", list(SERVER_ERROR_CODE))
@pytest.mark.parametrize("faults", KNOBS, ids=[k.split("=")[0] for k in KNOBS])
def test_every_fault_knob_ends_with_every_request_accounted_for(
    provider: str, faults: str, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", faults)
    values, _ = _run(provider)
    assert values["status"] == "completed", values.get("error")
    _assert_all_accounted(values)
    first_round = [j for j in values["jobs"] if j["attempt"] == 1]
    assert len(first_round) == 1  # never a duplicate job, whatever the fault
    if faults.startswith(("shuffle", "output_lag", "http_error", "create_delay")):
        assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in values["results"])
    if faults.startswith("http_error"):
        # The injected 429/500s did happen, and the SDKs' retries absorbed them.
        statuses = {row["status"] for row in read_access_log(isolated_env)}
        assert {429, 500} & statuses and 200 in statuses
    if faults.startswith("unknown_status"):
        assert values["jobs"][0]["provider_status"] == "paused_for_review"
        assert any("unknown provider status" in e for e in values["jobs"][0]["errors"])
        assert all(r["status"] == "succeeded" for r in values["results"])
    if faults.startswith("all_fail"):
        assert all(r["status"] == "failed" and r["attempts"] == 3 for r in values["results"])
        codes = {r["error"]["code"] for r in values["results"]}
        assert codes == {SERVER_ERROR_CODE[provider]}


@pytest.mark.parametrize("provider", ["openai", "mistral", "gemini"])
def test_retryable_failures_are_recovered_within_max_attempts(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "request_fail_rate=0.3,seed=3")
    records = [{"id": f"r{i}", "prompt": f"retry me {i}"} for i in range(40)]
    values, _ = _run(provider, records, max_attempts=6)
    _assert_all_accounted(values, records)
    retried = [r for r in values["results"] if r["attempts"] > 1]
    assert retried, "a 30% failure rate must have needed follow-up jobs"
    assert all(r["status"] == "succeeded" for r in values["results"])
    assert max(r["attempts"] for r in values["results"]) <= 6
    # Follow-up jobs carry only the failed requests, and the successes were kept.
    follow_ups = [j for j in values["jobs"] if j["attempt"] > 1]
    assert follow_ups and all(j["retry_of"] for j in follow_ups)
    assert sum(j["request_count"] for j in follow_ups if j["attempt"] == 2) == len(
        [r for r in values["results"] if r["attempts"] >= 2]
    )


def test_non_retryable_request_errors_are_reported_not_retried(isolated_env: Path) -> None:
    records = [
        {"id": "ok", "prompt": "fine"},
        {"id": "bad", "prompt": "please [emulator:reject] this"},
        {"id": "policy", "prompt": "[emulator:content_policy] nope"},
    ]
    values, _ = _run("openai", records)
    _assert_all_accounted(values, records)
    by_id = {r["id"]: r for r in values["results"]}
    assert by_id["ok"]["status"] == "succeeded"
    assert by_id["bad"]["error"]["code"] == "invalid_request" and by_id["bad"]["attempts"] == 1
    assert by_id["policy"]["error"]["code"] == "content_policy_violation"
    assert len(values["jobs"]) == 1  # nothing worth retrying


@pytest.mark.parametrize(
    ("code", "retried"), [("token_limit_exceeded", True), ("invalid_request", False)]
)
def test_a_batch_that_failed_as_a_whole_is_retried_only_for_a_passing_cause(
    code: str, retried: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI fails a batch over the organisation's enqueued-token limit: it passes, so retry."""
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", f"batch_fail={code}")
    values, _ = _run("openai", max_attempts=3)
    _assert_all_accounted(values)
    assert values["status"] == "failed" and code in values["error"]
    first = values["jobs"][0]
    assert first["status"] == "failed" and bool(first.get("retryable")) is retried
    # Retried: every request goes into a follow-up job, each failing the same way, up to
    # max_attempts; not retried: one job, and each request fails once.
    attempts = 3 if retried else 1
    assert [j["attempt"] for j in values["jobs"]] == list(range(1, attempts + 1))
    assert all(j["request_count"] == N for j in values["jobs"])
    for result in values["results"]:
        assert result["error"]["code"] == "batch_failed" and code in result["error"]["message"]
        assert result["attempts"] == attempts
    assert len(list_jobs()) == attempts  # one job per attempt, none created twice


# The code of a request an expired batch did not run: Anthropic's own `expired` line; OpenAI's
# `batch_expired` line; Mistral and Gemini write no line, and the graph gives the same code.
EXPIRED_CODE = {
    "openai": "batch_expired",
    "anthropic": "expired",
    "mistral": "batch_expired",
    "gemini": "batch_expired",
}


@pytest.mark.parametrize("provider", list(EXPIRED_CODE))
def test_expired_requests_are_resubmitted_and_successes_kept(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "expire=0.5")
    values, _ = _run(provider, max_attempts=2)
    _assert_all_accounted(values)
    results = values["results"]
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in results[: N // 2])
    assert all(r["attempts"] == 2 for r in results[N // 2 :])
    # Attempt 2 expires half again: the last quarter fails with the provider's expired code.
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) == N // 4
    assert {r["error"]["code"] for r in failed} == {EXPIRED_CODE[provider]}
    raw = {"mistral": "'TIMEOUT_EXCEEDED'", "gemini": "'BATCH_STATE_EXPIRED'"}
    if provider in raw:
        assert all(raw[provider] in r["error"]["message"] for r in failed)


# (provider, its raw status of a cancelled job, kept as-is; the code of a request it never ran)
CANCELLED = [
    ("emulator", "cancelled", "no_result"),
    ("anthropic", "ended", "canceled"),
    ("gemini", "BATCH_STATE_CANCELLED", "no_result"),
]


@pytest.mark.parametrize(
    ("provider", "raw_status", "code"), CANCELLED, ids=[c[0] for c in CANCELLED]
)
def test_cancel_collects_partial_results_and_never_resubmits(
    provider: str,
    raw_status: str,
    code: str,
    monkeypatch: pytest.MonkeyPatch,
    emulator_clock: ManualClock,
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "2")
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"requests": RECORDS}, config, context=Context(provider=provider))  # type: ignore[arg-type]
    emulator_clock.advance(0.8)
    graph.invoke({"cancel": True}, config, context=Context(provider=provider, **FAST))  # type: ignore[arg-type]
    values = graph.get_state(config).values
    assert values["status"] == "cancelled"
    (job,) = values["jobs"]
    assert job["provider_status"] == raw_status
    _assert_all_accounted(values)
    done = [r for r in values["results"] if r["status"] == "succeeded"]
    assert 0 < len(done) < N  # partial output was collected
    assert {r["error"]["code"] for r in values["results"] if r["status"] == "failed"} == {code}
    assert len(list_jobs()) == 1  # cancelled requests are not retried


def test_permanent_provider_error_keeps_state_and_thread_resumes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from agent.emulator import running_emulator

    with running_emulator(tmp_path / "served") as url:
        graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
        config = {"configurable": {"thread_id": "t"}}
        ctx = Context(provider="openai", base_url=f"{url}/openai/v1", **FAST)
        monkeypatch.setenv("BATCH_AGENT_EMULATOR_API_KEY", "sk-the-right-key-123")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-a-wrong-key-456789")
        graph.invoke({"requests": RECORDS}, config, context=ctx)
        values = graph.get_state(config).values
        assert values["status"] == "error"
        assert "HTTP 401" in values["error"] and "invoke the thread again" in values["error"]
        assert "wrong-key" not in values["error"]
        assert values["requests"] and values["jobs"][0]["job_id"] is None  # nothing lost
        # The cause is fixed (the right key): the same thread resumes and finishes.
        monkeypatch.setenv("OPENAI_API_KEY", "sk-the-right-key-123")
        # The served emulator's jobs run on its own thread: re-invoke until the job has ended
        # (one in-run wait budget can end first on a loaded machine, in virtual time).
        values = run_to_end(graph, config, ctx, None)
        assert values["status"] == "completed"
        _assert_all_accounted(values)


def test_provider_error_messages_never_carry_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-SECRETSECRET1234")

    class FakeAuthError(Exception):
        status_code = 401

    error = classify(
        FakeAuthError("Incorrect API key provided: sk-proj-SECRETSECRET1234 (or sk-pro***1234)"),
        "openai",
        "create the batch",
    )
    assert isinstance(error, ProviderError) and error.status_code == 401
    assert "SECRET" not in str(error) and "sk-pro" not in str(error)
    assert "HTTP 401" in str(error)


def _context(**overrides: Any) -> Context:
    return Context(**{"provider": "emulator", **overrides})


BAD_INPUT = [
    ([], {}, "no requests: the input is empty"),
    ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], {}, "duplicate id"),
    ([{"id": "x" * 65, "prompt": "x"}], {}, "longer than 64 characters"),
    ([{"id": "a", "messages": [{"role": "wizard", "content": "x"}]}], {}, "invalid role 'wizard'"),
    ([{"id": "a", "messages": [{"role": "user", "content": "   "}]}], {}, "empty content"),
    (
        [{"id": "a", "prompt": "x", "params": {"model": "gpt-no-such-model-9"}}],
        {},
        "unknown model 'gpt-no-such-model-9' for openai",
    ),
    (
        [{"id": "big", "prompt": "word " * 140_000}],
        {},
        "larger than gpt-4o-mini's context window (at least 175,000 tokens > 128,000) (request id 'big')",
    ),
    (
        [{"id": "huge", "prompt": "z" * 3000}],
        {"max_file_bytes": 2000},
        "larger than openai's 2,000-byte batch file limit (request id 'huge')",
    ),
    ([{"id": "a", "prompt": "x"}], {"provider": "bogus"}, "unknown provider 'bogus'"),
    (RECORDS, {"provider": "mistral", "completion_window": "30d"}, "1h to 168h"),
    (
        [{"id": "a", "prompt": "x"}],
        {"provider": "anthropic", "completion_window": "48h"},
        "anthropic batches have a fixed 24h window",
    ),
    (
        [{"id": "a", "prompt": "x", "params": {"bogus_option": 1}}],
        {"provider": "anthropic"},
        "takes no parameter bogus_option",
    ),
    (
        [{"id": "a", "prompt": "x", "params": {"model": "claude-no-such-model-9"}}],
        {"provider": "anthropic"},
        "unknown model 'claude-no-such-model-9' for anthropic",
    ),
    (
        [{"id": "a", "prompt": "x"}],
        {"provider": "gemini", "completion_window": "48h"},
        "gemini batches have a fixed 24h window",
    ),
    (
        # What realtime `invoke()` raises before sending: google-genai's config has no such field.
        [{"id": "a", "prompt": "x", "params": {"bogus_option": 1}}],
        {"provider": "gemini"},
        "ChatGoogleGenerativeAI refuses the request: 1 validation error for "
        "GenerateContentConfig bogus_option",
    ),
    (
        # The run's model (a Gemini request cannot name its own: realtime `invoke(model=...)`
        # is refused by google-genai's config, as `bogus_option` is above).
        [{"id": "a", "prompt": "x"}],
        {"provider": "gemini", "model": "gemini-no-such-model-9"},
        "unknown model 'gemini-no-such-model-9' for gemini",
    ),
]


@pytest.mark.parametrize(
    ("records", "overrides", "message"),
    BAD_INPUT,
    ids=[
        "empty",
        "duplicate",
        "long-id",
        "role",
        "empty-content",
        "unknown-model",
        "too-large-request",
        "line-too-big",
        "unknown-provider",
        "mistral-window",
        "anthropic-window",
        "anthropic-unknown-param",
        "anthropic-unknown-model",
        "gemini-window",
        "gemini-unknown-param",
        "gemini-unknown-model",
    ],
)
def test_bad_input_costs_nothing(
    isolated_env: Path, records: list[dict[str, Any]], overrides: dict[str, Any], message: str
) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    with pytest.raises(InputError) as info:
        graph.invoke(
            {"requests": records},
            {"configurable": {"thread_id": "t"}},
            context=_context(**overrides),
        )
    assert message in str(info.value)
    assert read_access_log() == []  # the emulator received nothing at all


def test_cancel_after_the_job_ended_keeps_the_results(emulator_clock: ManualClock) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"requests": RECORDS}, config, context=Context(provider="emulator"))
    emulator_clock.advance(0.5)  # the job (0.3 s) ends before anyone polls it
    graph.invoke({"cancel": True}, config, context=Context(provider="emulator", **FAST))
    values = graph.get_state(config).values
    assert values["status"] == "completed"
    assert all(r["status"] == "succeeded" for r in values["results"])
