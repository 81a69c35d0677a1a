"""Entry point `batch_bridge` for `langgraph dev` / LangGraph Server: batch-agent's served bridge.

Listing this graph in `langgraph.json` turns served mode on (`agent.batched.served`): batched
models in the server's other graphs suspend, and the server's start-up hook (`agent.serving`)
pools their calls into threads of the `batch` graph and resumes the callers. A run of this
graph changes nothing: it reports how many calls wait, are pooled, answered and delivered, and
each pool's batch thread.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class BridgeStatus(TypedDict, total=False):
    """The bridge's calls by state, and its pools."""

    calls: dict[str, int]
    pools: list[dict[str, Any]]


async def status(state: BridgeStatus) -> dict[str, Any]:
    """Read the bridge's records from the server's store."""
    from langgraph_sdk import get_client

    from agent.batched.served import bridge_status

    return await bridge_status(get_client())


_builder = StateGraph(BridgeStatus)
_builder.add_node("status", status)
_builder.add_edge(START, "status")
_builder.add_edge("status", END)
graph = _builder.compile(name="batch_bridge")
