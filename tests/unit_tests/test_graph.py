"""The batch graph end to end, in memory, against the in-process emulator through the real SDKs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent.context import Context
from agent.emulator import ManualClock, list_jobs
from agent.graph import build_graph
from agent.pause import pause
from agent.providers import provider_class
from agent.requests import InputError

RECORDS: list[dict[str, Any]] = [
    {"id": "q-1", "prompt": "What is the capital of France"},
    {
        "id": "q-2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a prime number"},
        ],
    },
    {
        "id": "q-3",
        "prompt": "Explain batch processing in one long sentence please",
        "params": {"max_tokens": 5},
    },
    {"id": "q-0", "prompt": "Ids need not be sorted"},
]


def _words(text: str) -> int:
    return len(text.split())


def _expected_prompt_tokens(messages: list[dict[str, str]]) -> int:
    # The emulator's documented rule: 3 + words per message.
    return sum(3 + _words(m["content"]) for m in messages)


def _run_until_done(
    graph: Any, config: dict[str, Any], context: Context, limit: float = 10.0
) -> tuple[dict[str, Any], list[str]]:
    seen = []
    deadline = time.monotonic() + limit
    while True:
        graph.invoke({}, config, context=context)
        # A run that only routes to END writes nothing; the thread state is the answer.
        values = graph.get_state(config).values
        seen.append(values["status"])
        if values["status"] in {"completed", "failed", "cancelled"} or time.monotonic() > deadline:
            return values, seen
        pause(0.05)  # virtual: advances the emulator's clock (`virtual_waits`)


@pytest.mark.parametrize("provider", ["openai", "mistral"])
def test_submit_poll_collect(
    provider: str, isolated_env: Path, emulator_clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job longer than any stall of a loaded machine: the first check surely sees it open.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "5")
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": f"t-{provider}"}}
    context = Context(provider=provider)  # type: ignore[arg-type]

    submitted = graph.invoke({"requests": RECORDS}, config, context=context)
    assert submitted["status"] == "submitted"
    (job,) = submitted["jobs"]
    assert (
        job["provider"] == provider
        and job["emulated"]
        and job["job_id"]
        and job["request_count"] == 4
    )
    # The bulk input is dropped from state once uploaded.
    assert graph.get_state(config).values["requests"] == []

    graph.invoke({}, config, context=context)
    # One check before completion sees the job open.
    assert graph.get_state(config).values["status"] in {"submitted", "running"}
    emulator_clock.advance(5)
    values, seen = _run_until_done(graph, config, context)
    assert values["status"] == "completed", seen

    results = values["results"]
    assert [r["id"] for r in results] == ["q-1", "q-2", "q-3", "q-0"]
    assert all(r["status"] == "succeeded" and r["error"] is None for r in results)
    assert results[0]["message"].content == "Emulated reply to: What is the capital of France"
    assert results[2]["message"].content == "Emulated reply to: Explain batch"
    assert results[2]["message"].response_metadata["finish_reason"] == "length"
    assert results[1]["usage"]["input_tokens"] == _expected_prompt_tokens(RECORDS[1]["messages"])
    for r in results:
        meta = r["message"].usage_metadata
        assert meta is not None
        assert r["usage"] == {
            "input_tokens": meta["input_tokens"],
            "output_tokens": meta["output_tokens"],
            "total_tokens": meta["total_tokens"],
        }
        assert meta["output_tokens"] == _words(r["message"].content)
    assert values["usage"]["total_tokens"] == sum(r["usage"]["total_tokens"] for r in results)
    assert values["counts"] == {"total": 4, "succeeded": 4, "failed": 0, "pending": 0}
    assert len(list_jobs()) == 1


def test_finished_thread_answers_without_calling_the_provider(isolated_env: Path) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "t"}}
    context = Context(provider="emulator")
    graph.invoke({"requests": RECORDS[:2]}, config, context=context)
    first, _ = _run_until_done(graph, config, context)
    shutil.rmtree(isolated_env)  # the provider forgets everything
    graph.invoke({}, config, context=context)
    again = graph.get_state(config).values
    assert again["status"] == "completed"
    assert [r["message"].content for r in again["results"]] == [
        r["message"].content for r in first["results"]
    ]


def test_wait_budget_finishes_in_one_run(isolated_env: Path) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "t"}}
    context = Context(
        provider="emulator", max_wait_seconds=10, poll_interval_seconds=0.05, poll_backoff=2
    )
    values = graph.invoke({"requests": RECORDS}, config, context=context)
    assert values["status"] == "completed"
    assert len(values["results"]) == 4
    # Growing intervals: a 0.3 s job needs only a few checks, not one per 50 ms.
    assert graph.get_state(config).values["polls"] <= 6


def test_wait_budget_spent_ends_the_run_without_losing_the_job(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, emulator_clock: ManualClock
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "30")
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "t"}}
    context = Context(provider="emulator", max_wait_seconds=0.3, poll_interval_seconds=0.1)
    started = time.monotonic()
    values = graph.invoke({"requests": RECORDS}, config, context=context)
    assert time.monotonic() - started < 5
    assert values["status"] in {"submitted", "running"}
    # The whole budget was waited (on the emulator's clock, `virtual_waits`), not more.
    assert graph.get_state(config).values["waited_seconds"] == pytest.approx(0.3)
    assert emulator_clock.now() - time.time() >= 0.29
    assert values["jobs"][0]["job_id"] == list_jobs()[0]["id"]


def test_same_input_again_does_not_resubmit_and_other_input_is_refused(isolated_env: Path) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "t"}}
    context = Context(provider="emulator")
    graph.invoke({"requests": RECORDS}, config, context=context)
    graph.invoke({"requests": RECORDS}, config, context=context)
    assert len(list_jobs()) == 1
    with pytest.raises(InputError, match="different request set"):
        graph.invoke({"requests": RECORDS[:1]}, config, context=context)
    assert len(list_jobs()) == 1


# (provider, a request's own model, the model name its answer's metadata carries): the job
# runs the request's model; ChatMistralAI names its own (the run's) model in every answer.
OWN_MODELS = [
    ("openai", "gpt-4o", "gpt-4o"),
    ("mistral", "mistral-large-latest", "mistral-small-latest"),
    ("anthropic", "claude-opus-4-6", "claude-opus-4-6"),
    ("gemini", "gemini-2.5-pro", "gemini-2.5-pro"),
]


@pytest.mark.parametrize(("provider", "own_model", "answered_by"), OWN_MODELS)
def test_one_job_per_model(
    isolated_env: Path, provider: str, own_model: str, answered_by: str
) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "t"}}
    records = [
        {"id": "a", "prompt": "one"},
        {"id": "b", "prompt": "two", "params": {"model": own_model}},
        {"id": "c", "prompt": "three"},
    ]
    context = Context(provider=provider)  # type: ignore[arg-type]
    values = graph.invoke({"requests": records}, config, context=context)
    run_model = provider_class(provider).default_model
    assert sorted(j["model"] for j in values["jobs"]) == sorted([own_model, run_model])
    values, _ = _run_until_done(graph, config, context)
    assert [r["id"] for r in values["results"]] == ["a", "b", "c"]
    assert [r["status"] for r in values["results"]] == ["succeeded"] * 3
    assert values["results"][1]["message"].response_metadata["model_name"] == answered_by


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "no requests"),
        ([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], "duplicate id"),
    ],
)
def test_bad_graph_input_uploads_nothing(
    isolated_env: Path, records: list[dict[str, Any]], message: str
) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    with pytest.raises(InputError, match=message):
        graph.invoke(
            {"requests": records},
            {"configurable": {"thread_id": "t"}},
            context=Context(provider="emulator"),
        )
    assert list_jobs() == []


def test_unknown_provider_is_refused(isolated_env: Path) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    with pytest.raises(Exception, match="unknown provider 'bogus'"):
        graph.invoke(
            {"requests": RECORDS},
            {"configurable": {"thread_id": "t"}},
            context=Context(provider="bogus"),
        )  # type: ignore[arg-type]
    assert list_jobs() == []
