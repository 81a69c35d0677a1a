"""Example: a tool-calling agent (LangGraph's prebuilt ReAct agent) with one tool.

    batch-agent map examples/graphs/agent.py:graph examples/questions.jsonl --out items.jsonl

Each model turn of every agent is one round: the first round asks every question (the model
calls the tool), the tool runs locally, the second round answers with the tool's result.
Input lines are the agent's input: `{"messages": [{"role": "user", "content": "..."}]}`.
"""

from __future__ import annotations

import warnings
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent

from examples.graphs.model import llm as default_llm

ORDERS = {"A-1001": "shipped on 2 December", "A-1002": "waiting for payment"}


@tool
def order_status(order_id: str) -> str:
    """Look up an order's status by its id (e.g. A-1001)."""
    return ORDERS.get(order_id, f"no order {order_id}")


def build(llm: BaseChatModel | Any = default_llm) -> Any:
    """Return the agent (a compiled graph; `map_graph` recompiles its builder)."""
    with warnings.catch_warnings():
        # langchain 1.x's `create_agent` is the same loop; this keeps the example to LangGraph.
        warnings.simplefilter("ignore", DeprecationWarning)
        return create_react_agent(llm, [order_status])


graph = build()
