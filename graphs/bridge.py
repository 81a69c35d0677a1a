"""Entry point `batch_bridge` for `langgraph dev` / LangGraph Server: batch-agent's served bridge.

Listing it in `langgraph.json` turns served mode on (`agent.batched.served`); the graph itself
lives in `agent.batched.deployment`, which a user's `langgraph.json` names instead.
"""

from agent.batched.deployment import bridge as graph

__all__ = ["graph"]
