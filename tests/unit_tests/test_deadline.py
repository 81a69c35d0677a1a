"""A deadline with a fallback, through the real SDKs against the emulator, in virtual time.

A job made slow by the `[emulator:delay=S]` marker is still running at the deadline (less its
margin): the graph cancels it, keeps the results it produced (`via: batch`) and sends only the
missing requests through the chat API (`via: realtime`, or OpenAI's flex tier), within
`max_cost`, journaled so a run killed mid-fallback never sends one twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent.context import Context
from agent.deadline import parse_deadline
from agent.emulator import ManualClock, read_access_log
from agent.graph import build_graph
from agent.requests import InputError
from tests.emulated_models import PROVIDERS, comparable, realtime_model

NOW = 1_800_000_000.0
# With a 1-hour deadline and the default 10-minute margin, the batch is cancelled at 50 min;
# the slow job would take 2 hours, and has answered some of its requests by then.
SLOW = " [emulator:delay=7200]"
WAITING = {
    "max_wait_seconds": 86_400.0,
    "poll_interval_seconds": 60.0,
    "max_poll_interval_seconds": 300.0,
}


def _records(n: int = 10) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "prompt": f"say {i}" + (SLOW if i == 0 else "")} for i in range(n)]


def _run(
    records: list[dict[str, Any]] | None, store: Any = None, graph: Any = None, **context: Any
) -> tuple[dict[str, Any], Any]:
    graph = graph or build_graph().compile(
        checkpointer=InMemorySaver(), store=store or InMemoryStore()
    )
    config = {"configurable": {"thread_id": "deadline"}}
    ctx = Context(**{"provider": "emulator", **WAITING, **context})
    graph.invoke({"requests": records} if records else {}, config, context=ctx)
    return dict(graph.get_state(config).values), graph


def _chat_calls(state_dir: Path) -> list[dict[str, Any]]:
    return [
        e
        for e in read_access_log(state_dir)
        if e["method"] == "POST" and e["path"].endswith("/chat/completions")
    ]


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("2h", 7200), ("1d", 86400), ("3600s", 3600), (" 1.5h ", 5400)],
)
def test_durations_count_from_now(text: str, seconds: float) -> None:
    assert parse_deadline(text, NOW) == NOW + seconds


def test_iso_times_need_an_offset() -> None:
    at = parse_deadline("2030-01-01T00:00:00Z", NOW)
    assert at == 1_893_456_000.0
    assert parse_deadline("2030-01-01T01:00:00+01:00", NOW) == at
    assert parse_deadline("", NOW) is None
    with pytest.raises(InputError, match="no UTC offset"):
        parse_deadline("2030-01-01T00:00:00", NOW)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("soon", "neither an ISO 8601 time"),
        ("2h30", "neither an ISO 8601 time"),
        ("0m", "positive duration"),
        ("2020-01-01T00:00:00+00:00", "already past"),
    ],
)
def test_bad_deadlines_are_refused_clearly(text: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        parse_deadline(text, NOW)


def test_bad_settings_are_refused_before_anything_is_uploaded(isolated_env: Path) -> None:
    with pytest.raises(InputError, match="neither an ISO"):
        _run(_records(2), deadline="tomorrow")
    with pytest.raises(InputError, match="needs a deadline"):
        _run(_records(2), fallback="realtime")
    with pytest.raises(InputError, match="fallback_concurrency"):
        _run(_records(2), deadline="2h", fallback="realtime", fallback_concurrency=0)
    assert not [e for e in read_access_log(isolated_env) if e["method"] == "POST"]


@pytest.mark.parametrize("provider", ["mistral", "anthropic"])
def test_flex_is_refused_where_the_provider_has_none(isolated_env: Path, provider: str) -> None:
    with pytest.raises(InputError, match=f"'flex' is not available for {provider}"):
        _run(_records(2), provider=provider, deadline="2h", fallback="flex")
    assert not [e for e in read_access_log(isolated_env) if e["method"] == "POST"]


# --------------------------------------------------------------------------- the graph


def test_at_the_deadline_missing_requests_run_in_realtime(
    isolated_env: Path, virtual_waits: ManualClock
) -> None:
    planned_at = virtual_waits.now()
    values, graph = _run(_records(), deadline="1h", fallback="realtime")

    assert values["status"] == "completed", values.get("error")
    # The duration was fixed once, when the thread planned.
    assert values["deadline_at"] == pytest.approx(planned_at + 3600, abs=5)
    (job,) = values["jobs"]
    assert job["provider_status"] == "cancelled"
    vias = {r["id"]: r["via"] for r in values["results"]}
    batch = [i for i, via in vias.items() if via == "batch"]
    realtime = [i for i, via in vias.items() if via == "realtime"]
    assert batch and realtime and len(batch) + len(realtime) == 10
    assert all(r["status"] == "succeeded" for r in values["results"])
    assert values["counts"] == {"total": 10, "succeeded": 10, "failed": 0, "pending": 0}
    # Only the missing requests were sent in realtime, once each.
    assert len(_chat_calls(isolated_env)) == len(realtime)
    report = values["fallback_report"]
    assert report["requests"] == len(realtime) and report["succeeded"] == len(realtime)
    by_via = values["cost_by_via"]
    assert set(by_via) == {"batch", "realtime"}
    assert by_via["batch"] > 0 and by_via["realtime"] > 0
    cost = values["cost"]
    assert cost["input_tokens"] == values["usage"]["input_tokens"]

    # Invoking the finished thread again sends nothing more, and the deadline does not move.
    again, _ = _run(None, graph=graph)
    assert again["deadline_at"] == values["deadline_at"]
    assert len(_chat_calls(isolated_env)) == len(realtime)


def test_fallback_results_have_the_batch_results_format(
    isolated_env: Path, virtual_waits: ManualClock
) -> None:
    values, _ = _run(_records(), deadline="1h", fallback="realtime")
    late = next(r for r in values["results"] if r["via"] == "realtime")
    plain, _ = _run([{"id": late["id"], "prompt": f"say {late['id'][1:]}"}])
    (batch,) = plain["results"]
    assert batch["via"] == "batch"
    assert set(late) == set(batch)
    assert late["message"].content == batch["message"].content
    assert late["usage"] == batch["usage"]
    assert late["message"].usage_metadata == batch["message"].usage_metadata
    assert late["attempts"] == batch["attempts"] == 1


def test_without_a_fallback_the_deadline_keeps_what_was_done(
    isolated_env: Path, virtual_waits: ManualClock
) -> None:
    values, _ = _run(_records(), deadline="1h")
    assert values["status"] == "cancelled"
    failed = [r for r in values["results"] if r["status"] == "failed"]
    assert failed and all(r["error"]["code"] == "no_result" for r in failed)
    assert len(failed) < 10
    assert values["error"].startswith(f"the deadline came: {len(failed)} of 10 requests")
    assert "set a fallback" in values["error"]
    assert not _chat_calls(isolated_env)


def test_a_fallback_over_max_cost_is_not_run(
    isolated_env: Path, virtual_waits: ManualClock
) -> None:
    # The batch fits the budget; the same requests at this realtime price do not.
    prices = {"gpt-4o-mini": {"batch": [0.075, 0.3], "realtime": [100_000.0, 100_000.0]}}
    values, _ = _run(
        _records(),
        deadline="1h",
        fallback="realtime",
        max_cost=1.0,
        price_override=json.dumps(prices),
    )
    assert values["status"] == "cancelled"
    assert "max_cost" in values["error"] and "not run" in values["error"]
    assert values["fallback_report"]["refused"]
    failed = [r for r in values["results"] if r["status"] == "failed"]
    assert failed and all(r["error"]["code"] == "no_result" for r in failed)
    assert not _chat_calls(isolated_env)


def test_flex_rides_out_capacity_429s_at_the_batch_price(
    isolated_env: Path, virtual_waits: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "BATCH_AGENT_EMULATOR_FAULTS", "flex_429_rate=0.5,flex_delay_seconds=30,seed=4"
    )
    values, _ = _run(_records(), deadline="1h", fallback="flex", fallback_concurrency=2)

    assert values["status"] == "completed", values.get("error")
    flex = [r for r in values["results"] if r["via"] == "flex"]
    assert flex and all(r["status"] == "succeeded" for r in flex)
    assert all(r["message"].response_metadata.get("service_tier") == "flex" for r in flex)
    calls = _chat_calls(isolated_env)
    assert any(e["status"] == 429 for e in calls)
    assert sum(e["status"] == 200 for e in calls) == len(flex)
    assert set(values["cost_by_via"]) == {"batch", "flex"}


def test_gemini_flex_asks_for_the_flex_tier_and_rides_out_its_429s_at_the_batch_price(
    isolated_env: Path, virtual_waits: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "BATCH_AGENT_EMULATOR_FAULTS", "flex_429_rate=0.5,flex_delay_seconds=30,seed=4"
    )
    values, _ = _run(_records(), provider="gemini", deadline="1h", fallback="flex")

    assert values["status"] == "completed", values.get("error")
    flex = [r for r in values["results"] if r["via"] == "flex"]
    assert flex and all(r["status"] == "succeeded" for r in values["results"])
    path = "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
    calls = [e for e in read_access_log(isolated_env) if e["path"] == path]
    assert any(e["status"] == 429 for e in calls)
    assert sum(e["status"] == 200 for e in calls) == len(flex)
    # Flex is billed at the batch price: the same tokens cost what they cost in the batch.
    assert set(values["cost_by_via"]) == {"batch", "flex"}
    per_request = {
        via: values["cost_by_via"][via] / sum(r["via"] == via for r in values["results"])
        for via in ("batch", "flex")
    }
    assert per_request["flex"] == pytest.approx(per_request["batch"], rel=0.5)


class KilledError(RuntimeError):
    """Stands for the process dying in the middle of the fallback."""


class DyingStore(InMemoryStore):
    """An `InMemoryStore` that dies right after journaling `survive` fallback results."""

    def __init__(self, survive: int) -> None:
        super().__init__()
        self.survive = survive

    def put(
        self, namespace: tuple[str, ...], key: str, value: dict[str, Any], *a: Any, **k: Any
    ) -> None:  # type: ignore[override]
        super().put(namespace, key, value, *a, **k)
        if namespace[-1] == "fallback" and self.survive >= 0:
            self.survive -= 1
            if self.survive < 0:
                raise KilledError("killed mid-fallback")


def test_a_fallback_killed_midway_resumes_without_sending_twice(
    isolated_env: Path, virtual_waits: ManualClock
) -> None:
    store = DyingStore(survive=1)
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=store)
    context = {"deadline": "1h", "fallback": "realtime", "fallback_concurrency": 1}
    with pytest.raises(KilledError):
        _run(_records(), graph=graph, **context)
    sent_before = len(_chat_calls(isolated_env))
    assert sent_before == 2  # two answered and journaled, then the process died

    values, _ = _run(None, graph=graph)  # resumed without --fallback: the thread remembers it
    assert values["status"] == "completed", values.get("error")
    realtime = [r for r in values["results"] if r["via"] == "realtime"]
    assert len(_chat_calls(isolated_env)) == len(realtime)
    assert all(r["status"] == "succeeded" for r in values["results"])


def test_intents_never_submitted_are_sent_at_the_deadline(
    isolated_env: Path, virtual_waits: ManualClock
) -> None:
    # Two jobs of 5, one at a time: the second waits for the slow first one, past the deadline.
    values, _ = _run(
        _records(),
        deadline="1h",
        fallback="realtime",
        max_requests_per_job=5,
        max_concurrent_jobs=1,
    )
    assert values["status"] == "completed", values.get("error")
    first, second = values["jobs"]
    assert first["provider_status"] == "cancelled"
    assert second["job_id"] is None and second["cancelled"]
    assert any("the deadline came first" in note for note in second["errors"])
    vias = {r["id"]: r["via"] for r in values["results"]}
    assert all(vias[f"r{i}"] == "realtime" for i in range(5, 10))
    assert all(r["status"] == "succeeded" for r in values["results"])
    # One batch was created; the second job's requests went straight to realtime.
    creates = [e for e in read_access_log(isolated_env) if e["path"] == "/openai/v1/batches"]
    assert len([e for e in creates if e["method"] == "POST"]) == 1


@pytest.mark.parametrize(
    ("provider", "path"),
    [
        ("anthropic", "/anthropic/v1/messages"),
        ("mistral", "/mistral/v1/chat/completions"),
        ("gemini", "/gemini/v1beta/models/gemini-2.5-flash:generateContent"),
    ],
)
def test_other_providers_send_missing_requests_through_their_chat_api(
    isolated_env: Path, virtual_waits: ManualClock, provider: str, path: str
) -> None:
    values, _ = _run(_records(), provider=provider, deadline="1h", fallback="realtime")
    assert values["status"] == "completed", values.get("error")
    vias = [r["via"] for r in values["results"]]
    assert "batch" in vias and "realtime" in vias
    assert all(r["status"] == "succeeded" for r in values["results"])
    calls = [
        e for e in read_access_log(isolated_env) if e["method"] == "POST" and e["path"] == path
    ]
    assert len(calls) == vias.count("realtime")
    assert set(values["cost_by_via"]) == {"batch", "realtime"}


# --------------------------------------------------------------------------- the CLI


def test_the_cli_takes_a_deadline_and_status_shows_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _records(3)))
    db = str(tmp_path / "db.sqlite")
    base = ["--provider", "emulator", "--db", db]
    runner = CliRunner()

    bad = runner.invoke(app, ["run", str(source), *base, "--deadline", "soon"])
    # The console script prints it as one `error:` line (`agent.cli.app`).
    assert isinstance(bad.exception, InputError) and "deadline 'soon' is neither" in str(
        bad.exception
    )

    args = ["run", str(source), *base, "--thread", "dl", "--deadline", "1h"]
    done = runner.invoke(app, [*args, "--fallback", "realtime", "--wait", "--poll-interval", "60"])
    assert done.exit_code == 0, done.output
    status = runner.invoke(app, ["status", "dl", "--db", db])
    assert "deadline: " in status.output and "fallback realtime" in status.output
    report = json.loads(runner.invoke(app, ["status", "dl", "--db", db, "--json"]).output)
    assert report["deadline_at"] is not None
    assert set(report["cost_by_via"]) == {"batch", "realtime"}
    assert report["fallback"]["via"] == "realtime"


def test_rate_limits_are_ridden_out_with_backoff_on_the_injected_clock(
    isolated_env: Path, virtual_waits: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mistral's realtime 429s carry no retry-after and the call has no SDK retries: the
    # fallback's own backoff (virtual time here) retries them.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "realtime_429_rate=0.5,seed=2")
    values, _ = _run(_records(), provider="mistral", deadline="1h", fallback="realtime")
    assert values["status"] == "completed", values.get("error")
    realtime = [r for r in values["results"] if r["via"] == "realtime"]
    calls = [
        e for e in read_access_log(isolated_env) if e["path"] == "/mistral/v1/chat/completions"
    ]
    assert any(e["status"] == 429 for e in calls)
    assert sum(e["status"] == 200 for e in calls) == len(realtime)
    assert all(r["status"] == "succeeded" for r in values["results"])


def test_requests_that_cannot_be_sent_are_tried_again_by_the_next_run(
    isolated_env: Path, virtual_waits: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "realtime_429_rate=1")
    values, graph = _run(_records(), provider="mistral", deadline="1h", fallback="realtime")
    assert values["status"] == "error"
    assert "invoke the thread again to retry them" in values["error"]
    missing = [r for r in values["results"] if r["status"] == "failed"]
    assert missing and all(r["via"] == "batch" for r in missing)

    monkeypatch.delenv("BATCH_AGENT_EMULATOR_FAULTS")
    again, _ = _run(None, graph=graph)
    assert again["status"] == "completed", again.get("error")
    assert all(r["status"] == "succeeded" for r in again["results"])
    ok = [
        e
        for e in read_access_log(isolated_env)
        if e["path"] == "/mistral/v1/chat/completions" and e["status"] == 200
    ]
    assert len(ok) == len(missing)


def test_a_duplicate_of_a_missing_request_gets_its_fallback_answer(
    isolated_env: Path, virtual_waits: ManualClock
) -> None:
    records = _records()
    records.append({"id": "again", "prompt": records[9]["prompt"]})  # identical to r9
    values, _ = _run(records, deadline="1h", fallback="realtime")
    assert values["status"] == "completed", values.get("error")
    by_id = {r["id"]: r for r in values["results"]}
    assert by_id["r9"]["via"] == by_id["again"]["via"] == "realtime"
    assert by_id["again"]["duplicate_of"] == "r9"
    assert by_id["again"]["message"].content == by_id["r9"]["message"].content
    sent = [r for r in values["results"] if r["via"] == "realtime" and "duplicate_of" not in r]
    assert len(_chat_calls(isolated_env)) == len(sent)
    assert values["counts"]["succeeded"] == 11


def test_responses_api_lines_are_sent_to_the_responses_api(
    isolated_env: Path, virtual_waits: ManualClock
) -> None:
    values, _ = _run(_records(), deadline="1h", fallback="realtime", endpoint="responses")
    assert values["status"] == "completed", values.get("error")
    realtime = [r for r in values["results"] if r["via"] == "realtime"]
    assert realtime and all(r["status"] == "succeeded" for r in values["results"])
    calls = [
        e
        for e in read_access_log(isolated_env)
        if e["method"] == "POST" and e["path"] == "/openai/v1/responses"
    ]
    assert len(calls) == len(realtime)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_fallback_answer_is_what_the_chat_model_returns_in_realtime(
    isolated_env: Path,
    virtual_waits: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    provider: str,
) -> None:
    values, _ = _run(_records(), provider=provider, deadline="1h", fallback="realtime")
    late = next(r for r in values["results"] if r["via"] == "realtime")
    llm = realtime_model(provider, isolated_env, virtual_waits, monkeypatch)
    answer = llm.invoke([("human", f"say {late['id'][1:]}")])
    assert comparable(late["message"], provider, "realtime") == comparable(
        answer, provider, "realtime"
    )


def test_run_batch_takes_a_deadline(isolated_env: Path, virtual_waits: ManualClock) -> None:
    from agent import run_batch

    results = run_batch(
        _records(),
        provider="emulator",
        deadline="1h",
        fallback="realtime",
        **WAITING,
    )
    assert results.status == "completed" and all(result.ok for result in results)
    assert {result.via for result in results} == {"batch", "realtime"}
    assert results.cost_by_via is not None and set(results.cost_by_via) == {"batch", "realtime"}


def test_the_completion_notice_carries_the_cost_by_via(
    isolated_env: Path, virtual_waits: ManualClock
) -> None:
    from tests.support import WebhookReceiver

    receiver = WebhookReceiver()
    try:
        values, _ = _run(_records(), deadline="1h", fallback="realtime", webhook_url=receiver.url)
        assert values["webhook"]["error"] is None
        (body,) = receiver.bodies
    finally:
        receiver.close()
    notice = json.loads(body)
    assert notice["status"] == "completed"
    assert notice["cost_by_via"] == values["cost_by_via"]
