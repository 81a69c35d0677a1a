"""A user's graph batched gives the final states its realtime run gives (the examples, 4 providers).

Each example graph (`examples/graphs/`) is built twice from the same code: once with the
provider's LangChain chat model pointed at the emulator's realtime endpoint and invoked item by
item, once with that model `batched` and run over the same items by `map_graph`. The final states
must be equal, ids aside (message ids, answer ids, tool call ids; Anthropic's service tier).
The pooling the issue asks for is checked on the way: rounds and jobs per model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.batched import batched, map_graph
from agent.emulator import ManualClock, list_jobs
from examples.graphs import agent, map_reduce, pipeline
from tests.emulated_models import PROVIDERS, batch_model, realtime_model
from tests.support import FAST_POLLING

ITEMS = 200
EXAMPLES = {
    # (builder of the graph on a model, the items, rounds the batched run takes)
    "pipeline": (
        pipeline.build,
        [{"text": f"Ticket {i}: my invoice was charged twice."} for i in range(ITEMS)],
        3,
    ),
    "map_reduce": (
        map_reduce.build,
        [
            {"title": f"Report {i}", "sections": [f"Part {i}.{s} of the report." for s in range(3)]}
            for i in range(ITEMS // 4)
        ],
        2,
    ),
    "agent": (
        agent.build,
        [
            {"messages": [{"role": "user", "content": f"Where is my order A-{1000 + i}?"}]}
            for i in range(ITEMS // 2)
        ],
        2,
    ),
}


def _normalised(state: Any, provider: str) -> Any:
    """A state as JSON, with what differs between two runs of the same calls taken out."""
    text = json.dumps(state, default=_plain, sort_keys=True)
    value = json.loads(text)
    ids: dict[str, str] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("type") in {"ai", "human", "tool", "system"}:
                node.pop("id", None)
            metadata = node.get("response_metadata")
            if isinstance(metadata, dict):
                metadata.pop("id", None)
                (metadata.get("usage") or {}).pop("service_tier", None)  # batch vs standard
            for call in node.get("tool_calls") or []:
                if isinstance(call, dict) and call.get("id"):
                    ids.setdefault(call["id"], f"call-{len(ids)}")
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    walked = json.dumps(walk(value), sort_keys=True)
    for original, position in ids.items():
        walked = walked.replace(original, position)
    # Anthropic's tool-use blocks and Gemini's function calls carry those ids in content too.
    return json.loads(re.sub(r'"(toolu|call)_[A-Za-z0-9_-]{6,}"', '"id"', walked))


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else str(value)


@pytest.mark.parametrize("example", list(EXAMPLES))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_batched_example_ends_in_the_states_of_its_realtime_run(
    provider: str,
    example: str,
    isolated_env: Path,
    emulator_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build, items, rounds = EXAMPLES[example]
    realtime_graph = build(realtime_model(provider, isolated_env, emulator_clock, monkeypatch))
    graph = (
        realtime_graph
        if hasattr(realtime_graph, "invoke") and not hasattr(realtime_graph, "compile")
        else realtime_graph.compile()
    )
    realtime_states = [graph.invoke(item) for item in items]
    assert list_jobs() == []  # the realtime run made no batch

    results = map_graph(build(batched(batch_model(provider))), items, **FAST_POLLING)
    assert [r.status for r in results] == ["completed"] * len(items), results[0].error
    assert [_normalised(r.state, provider) for r in results] == [
        _normalised(state, provider) for state in realtime_states
    ]
    # Pooled: one round per model turn, one job per round (one model, well under the limits).
    assert len(results.rounds) == rounds
    assert len(list_jobs()) == rounds
