"""Batch the model calls of any LangGraph graph: `batched(model)` in its nodes, `map_graph` over data.

A node calls `batched(ChatOpenAI(...))` exactly as it would call the model. Run under batch-agent
(`map_graph`, `batch-agent map`), the call is recorded and the node suspends (`interrupt()`);
the calls of every suspended thread are pooled into provider batch jobs by the batch graph, and
each thread resumes with its answers, matched by call key. Outside batch-agent the wrapped
model is called in realtime, unchanged.

- `agent.batched.calls`: what a suspended call records and what it is resumed with.
- `agent.batched.model`: `batched()` and `BatchedChatModel`.
- `agent.batched.bridge`: `map_graph`, the rounds that pool calls and resume threads.
- `agent.batched.records`: a map's durable records: answers, rounds, progress, its cancel.
- `agent.batched.kill_points`: test-only SIGKILLs at exact points of a map (crash tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.batched.bridge import MapItem, MapResults, map_graph
    from agent.batched.calls import BatchCallError, UnbatchedModelError
    from agent.batched.model import BatchedChatModel, batched

__all__ = [
    "BatchCallError",
    "BatchedChatModel",
    "MapItem",
    "MapResults",
    "UnbatchedModelError",
    "batched",
    "map_graph",
]
_HOMES = {
    "BatchCallError": "calls",
    "UnbatchedModelError": "calls",
    "BatchedChatModel": "model",
    "batched": "model",
    "MapItem": "bridge",
    "MapResults": "bridge",
    "map_graph": "bridge",
}


def __getattr__(name: str) -> Any:
    """Import on first use: `import agent` (and the CLI) stays cheap."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"agent.batched.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'agent.batched' has no attribute {name!r}")
