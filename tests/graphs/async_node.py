"""Test graph: an `async def` node that calls a batched model with a sync `.invoke()`."""

from __future__ import annotations

from typing import Any

from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from agent.batched import batched

llm = batched(ChatOpenAI(model="gpt-4o-mini", api_key="unused-key"))  # type: ignore[arg-type]


class Question(TypedDict, total=False):
    """A question and its answer."""

    text: str
    answer: str


async def ask(state: Question) -> dict[str, Any]:
    """One call, sync, from an async node (it runs on the server's event loop)."""
    return {"answer": llm.invoke(state["text"]).content}


_builder = StateGraph(Question)
_builder.add_node("ask", ask)
_builder.add_edge(START, "ask")
_builder.add_edge("ask", END)
graph = _builder.compile()
