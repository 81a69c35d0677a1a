"""The graphs a user's `langgraph.json` names to serve their own graph with batch-agent's bridge.

    "graphs": {
        "my_graph": "./my_project/graph.py:graph",
        "batch": "agent.batched.deployment:batch",
        "batch_bridge": "agent.batched.deployment:bridge"
    }

`batch` is the batch graph each pool of calls runs as one thread of (`agent.graph`); listing
`batch_bridge` turns served mode on (`agent.batched.served`): batched models in the server's
other graphs suspend, and the server's start-up hook (`agent.serving`, the `http.app`) pools
their calls and resumes the callers. A run of `batch_bridge` changes nothing: it reports how
many calls wait, are pooled, answered and delivered, and each pool's batch thread.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from agent.graph import build_graph


class BridgeStatus(TypedDict, total=False):
    """The bridge's calls by state, and its pools."""

    calls: dict[str, int]
    pools: list[dict[str, Any]]


async def status(state: BridgeStatus) -> dict[str, Any]:
    """Read the bridge's records from the server's store."""
    from langgraph_sdk import get_client

    from agent.batched.served import bridge_status

    return await bridge_status(get_client())


def build_bridge() -> StateGraph[Any, Any, Any, Any]:
    """Return the `batch_bridge` graph's builder (one node: `status`)."""
    builder = StateGraph(BridgeStatus)
    builder.add_node("status", status)
    builder.add_edge(START, "status")
    builder.add_edge("status", END)
    return builder


batch = build_graph().compile(name="batch")
"""The served batch graph (the server supplies its persistence)."""
bridge = build_bridge().compile(name="batch_bridge")
"""The served bridge's graph: its presence turns served mode on; a run reports its state."""
