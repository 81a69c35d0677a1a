"""Batching a user's own graph: `batched(model)` in its nodes, `map_graph` over a dataset.

Through the real graph, the batch graph and the OpenAI SDK against the in-process emulator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from agent.batched import BatchedChatModel, batched, map_graph
from agent.batched.model import chat_models_in
from agent.emulator import list_jobs
from tests.graphs import pipeline as pipeline_steps
from tests.graphs.pipeline import (
    Doc,
    batch_call_builder,
    fan_out_builder,
    pipeline,
    pipeline_builder,
)
from tests.support import FAST_POLLING

DOCS = [{"text": f"invoice {i} was charged twice"} for i in range(12)]


def _emulated(prompt: str) -> str:
    return f"Emulated reply to: {prompt}"


def test_a_three_step_pipeline_takes_three_rounds_of_one_job_each() -> None:
    results = map_graph(pipeline, DOCS, **FAST_POLLING)
    assert [r.status for r in results] == ["completed"] * len(DOCS)
    assert [(r.calls, len(r.batch_threads)) for r in results.rounds] == [(len(DOCS), 1)] * 3
    jobs = list_jobs()
    assert len(jobs) == 3 and sorted(j["request_count"] for j in jobs) == [len(DOCS)] * 3
    # Each item's state is what the realtime calls would have made of it, in input order.
    for doc, result in zip(DOCS, results, strict=True):
        fact = _emulated(f"Extract the key fact: {doc['text']}")
        label = _emulated(f"Classify: {fact}")
        assert result.state == {
            "text": doc["text"],
            "fact": fact,
            "label": label,
            "summary": _emulated(f"Summarise: {label}"),
        }
        assert result.calls == 3 and result.usage["total_tokens"] > 0


def test_send_branches_of_one_thread_are_pooled_into_one_job() -> None:
    topics = [f"topic {i}" for i in range(7)]
    results = map_graph(fan_out_builder(), [{"topics": topics}], **FAST_POLLING)
    (item,) = results
    assert item.status == "completed", item.error
    assert sorted(item.state["answers"]) == sorted(_emulated(f"Explain {t}") for t in topics)
    assert [r.calls for r in results.rounds] == [7] and len(list_jobs()) == 1


def test_calls_made_at_once_by_batch_suspend_together_and_answer_in_order() -> None:
    topics = ["alpha", "beta", "gamma"]
    results = map_graph(batch_call_builder(), [{"topics": topics}] * 2, **FAST_POLLING)
    assert [r.status for r in results] == ["completed", "completed"]
    for item in results:
        assert item.state["answers"] == [_emulated(f"Define {t}") for t in topics]
    # Two items asking the same three things: six calls, sent once each (dedup pools them).
    assert [r.calls for r in results.rounds] == [6]
    (job,) = list_jobs()
    assert job["request_count"] == 3


def test_a_map_stopped_between_rounds_resumes_and_sends_no_call_twice(tmp_path: Path) -> None:
    db = tmp_path / "map.sqlite"
    first = map_graph(pipeline_builder(), DOCS[:4], db=db, max_rounds=1, **FAST_POLLING)
    assert [r.status for r in first] == ["waiting"] * 4  # on their second call
    assert first.status == "stopped" and not first.done
    again = map_graph(pipeline_builder(), None, map_id=first.map_id, db=db, **FAST_POLLING)
    assert [r.status for r in again] == ["completed"] * 4
    assert len(again.rounds) == 2  # the first round's answers were not asked again
    assert sorted(j["request_count"] for j in list_jobs()) == [4, 4, 4]
    # Run again once finished: nothing more is sent.
    done = map_graph(pipeline_builder(), None, map_id=first.map_id, db=db, **FAST_POLLING)
    assert done.rounds == [] and len(list_jobs()) == 3
    assert [r.state for r in done] == [r.state for r in again]


def test_a_failed_call_raises_in_its_node_and_fails_that_item_only() -> None:
    # The provider refuses one document's first call (a 400 for that request alone).
    docs = [*DOCS[:3], {"text": "refuse me [emulator:reject]"}]
    results = map_graph(pipeline, docs, **FAST_POLLING)
    assert [r.status for r in results] == ["completed"] * 3 + ["failed"]
    refused = results[3]
    # Raised as realtime raises a 400 (`openai.BadRequestError`), which is a BatchCallError too.
    assert refused.error and refused.calls == 1
    assert refused.error.startswith("OpenAIInvalidRequestError: Error code: 400 - ")
    assert "batched model call failed in batch " in refused.error
    assert refused.state == {"text": docs[3]["text"]}  # the node raised: nothing written
    assert len(results.rounds) == 3  # the others went on without it


def _one_call_graph(model: Any) -> StateGraph[Any, Any, Any, Any]:
    """A graph of one node that asks `model` about the document's text."""

    def node(state: Doc) -> dict[str, Any]:
        return {"fact": model.invoke(state["text"]).content}

    builder = StateGraph(Doc)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return builder


def test_outside_batch_agent_the_wrapped_model_answers_in_realtime() -> None:
    fake = GenericFakeChatModel(messages=iter([AIMessage(content="realtime answer")]))
    model = batched(fake)
    assert isinstance(model, BatchedChatModel)
    assert model.invoke("hello").content == "realtime answer"
    # And in a graph run by itself (not by batch-agent): still realtime, nothing batched.
    answers = iter([AIMessage(content="from a plain run")])
    plain = batched(GenericFakeChatModel(messages=answers))

    assert _one_call_graph(plain).compile().invoke({"text": "x"})["fact"] == "from a plain run"
    assert list_jobs() == []


def test_a_model_no_batch_api_serves_fails_its_item_with_a_clear_error() -> None:
    fake = batched(GenericFakeChatModel(messages=iter([AIMessage(content="x")])))

    (item,) = map_graph(_one_call_graph(fake), [{"text": "x"}], **FAST_POLLING)
    assert item.status == "failed" and "GenericFakeChatModel" in (item.error or "")
    assert list_jobs() == []


def test_batched_keeps_tools_and_structured_output_bindings() -> None:
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    class Ticket(BaseModel):
        label: str

    llm = ChatOpenAI(model="gpt-4o-mini", api_key="unused-key")
    for runnable in (
        batched(llm.bind_tools([Ticket])),
        batched(llm).bind_tools([Ticket]),
        batched(llm.with_structured_output(Ticket)),
        batched(llm).with_structured_output(Ticket),
    ):
        found = [m for m in chat_models_in(runnable) if isinstance(m, BatchedChatModel)]
        assert len(found) == 1 and found[0].wrapped is llm


def test_the_map_command_writes_one_line_per_item_in_input_order(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from agent.cli.app import app

    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in DOCS[:3]))
    out = tmp_path / "out.jsonl"
    db = tmp_path / "map.sqlite"
    graph = str(Path(__file__).parents[1] / "graphs" / "pipeline.py") + ":pipeline"
    args = ["map", graph, str(source), "--db", str(db), "--out", str(out), "--thread", "m1"]
    answer = CliRunner().invoke(app, [*args, "--poll-interval", "0.05"])
    assert answer.exit_code == 0, answer.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]
    assert all(line["status"] == "completed" and line["calls"] == 3 for line in lines)
    assert lines[0]["state"]["fact"] == _emulated(f"Extract the key fact: {DOCS[0]['text']}")
    assert "3 of 3 items completed in 3 rounds" in answer.stderr
    # Resumed by id once done: the same lines, nothing sent again.
    again = CliRunner().invoke(app, ["map", graph, "--thread", "m1", "--db", str(db)])
    assert again.exit_code == 0 and [json.loads(x) for x in again.stdout.splitlines()] == lines
    assert len(list_jobs()) == 3


@pytest.mark.parametrize(
    ("graph", "line", "message"),
    [
        ("no_such_file.py:graph", '{"text": "x"}', "no such file"),
        ("tests.graphs.pipeline:nothing", '{"text": "x"}', "has no 'nothing'"),
        ("tests.graphs.pipeline", '{"text": "x"}', "GRAPH must be"),
        ("tests.graphs.pipeline:pipeline", '["not", "an", "object"]', "docs.jsonl:1"),
    ],
)
def test_the_map_command_refuses_bad_input_before_any_upload(
    tmp_path: Path, graph: str, line: str, message: str
) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    source = tmp_path / "docs.jsonl"
    source.write_text(line + "\n")
    answer = CliRunner().invoke(app, ["map", graph, str(source), "--db", str(tmp_path / "m.db")])
    assert answer.exit_code != 0
    assert message in str(answer.exception or "") + answer.output
    assert list_jobs() == []


def test_a_thousand_item_pipeline_takes_three_rounds_of_one_job_per_model() -> None:
    docs = [{"text": f"document {i}"} for i in range(1000)]
    results = map_graph(pipeline, docs, **FAST_POLLING)
    assert sum(r.status == "completed" for r in results) == 1000
    assert [r.calls for r in results.rounds] == [1000, 1000, 1000]
    # One model, 1,000 requests a round: well under every limit, so one job per round.
    assert sorted(j["request_count"] for j in list_jobs()) == [1000, 1000, 1000]


class PydanticDoc(BaseModel):
    """A state LangGraph validates (a Pydantic model)."""

    text: str
    fact: str = ""


def _pydantic_graph() -> StateGraph[Any, Any, Any, Any]:
    builder = StateGraph(PydanticDoc)
    builder.add_node("node", lambda state: {"fact": state.text})
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return builder


@pytest.mark.parametrize(
    ("graph", "item", "message"),
    [
        ("pydantic", {"text": 5}, "rejects the item: text: Input should be a valid string"),
        ("pydantic", {}, "rejects the item: text: Field required"),
        ("typeddict", {"txt": "x"}, "the graph's input has no 'txt' (it takes"),
    ],
)
def test_an_item_the_graphs_input_rejects_stops_the_map_before_anything_runs(
    graph: str, item: dict[str, Any], message: str
) -> None:
    from agent.requests import InputError

    user_graph = _pydantic_graph() if graph == "pydantic" else pipeline
    with pytest.raises(InputError) as info:
        map_graph(user_graph, [DOCS[0], item], **FAST_POLLING)
    assert message in str(info.value) and "input:2" in str(info.value)
    assert list_jobs() == []


def test_a_node_calling_an_unbatched_model_stops_the_map_unless_allowed(
    isolated_env: Path, emulator_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.batched import UnbatchedModelError
    from tests.emulated_models import realtime_model

    plain = realtime_model("openai", isolated_env, emulator_clock, monkeypatch)
    with pytest.raises(UnbatchedModelError, match=r"node 'node' calls ChatOpenAI directly"):
        map_graph(_one_call_graph(plain), [{"text": "x"}], **FAST_POLLING)
    assert list_jobs() == []
    # Allowed: it runs in realtime (the emulator's realtime endpoint), and nothing is batched.
    (item,) = map_graph(
        _one_call_graph(plain), [{"text": "x"}], allow_realtime=True, **FAST_POLLING
    )
    assert item.status == "completed" and item.state["fact"] == _emulated("x")
    assert list_jobs() == []


def test_each_item_and_the_map_are_priced_at_batch_and_realtime_price() -> None:
    results = map_graph(batch_call_builder(), [{"topics": ["alpha", "beta"]}] * 2, **FAST_POLLING)
    costs = [item.cost for item in results]
    assert all(c is not None and c["batch_usd"] and c["realtime_usd"] for c in costs)
    for cost in costs:
        assert cost is not None and cost["batch_usd"] == pytest.approx(cost["realtime_usd"] / 2)
        assert cost["input_tokens"] == results[0].usage["input_tokens"]
    # The two items asked the same things: sent (and billed) once, so the map cost one item's.
    total = results.cost
    assert total is not None and total["batch_usd"] == pytest.approx(costs[0]["batch_usd"])
    assert "genai-prices" in total["source"]


class _Killed(BaseException):
    """A stand-in for SIGKILL: no `except Exception` stops it, the map run ends at once."""


def test_a_map_killed_while_delivering_answers_pools_the_next_round_whole(
    tmp_path: Path,
) -> None:
    # The third item's resume "kills" the map after two items got their first answers.
    armed = [True]

    def extract(state: Doc) -> dict[str, Any]:
        answer = pipeline_steps.extract(state)
        if armed[0] and state["text"] == DOCS[2]["text"]:
            armed[0] = False
            raise _Killed
        return answer

    builder = StateGraph(Doc)
    builder.add_sequence([("extract", extract), pipeline_steps.classify, pipeline_steps.summarise])
    builder.add_edge(START, "extract")
    db = tmp_path / "map.sqlite"
    with pytest.raises(_Killed):
        map_graph(builder, DOCS[:4], map_id="killed", db=db, **FAST_POLLING)
    again = map_graph(builder, None, map_id="killed", db=db, **FAST_POLLING)
    assert [r.status for r in again] == ["completed"] * 4
    # The items not resumed before the kill got their stored answers first: each later step
    # of the four items is one job, as in a run never killed.
    assert sorted(j["request_count"] for j in list_jobs()) == [4, 4, 4]
    assert [r.calls for r in again.rounds] == [4, 4]
