"""Test graphs: a three-step pipeline, a `Send` fan-out, and a node that calls `.batch`."""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

from agent.batched import batched

llm = batched(ChatOpenAI(model="gpt-4o-mini", api_key="unused-key"))


class Doc(TypedDict, total=False):
    """One document through the pipeline."""

    text: str
    fact: str
    label: str
    summary: str


def extract(state: Doc) -> dict[str, Any]:
    """First call: extract a fact."""
    return {"fact": llm.invoke(f"Extract the key fact: {state['text']}").content}


def classify(state: Doc) -> dict[str, Any]:
    """Second call, on the first's answer."""
    return {"label": llm.invoke(f"Classify: {state['fact']}").content}


def summarise(state: Doc) -> dict[str, Any]:
    """Third call, with a system message."""
    answer = llm.invoke([("system", "Be brief."), ("user", f"Summarise: {state['label']}")])
    return {"summary": answer.content}


def pipeline_builder() -> StateGraph[Any, Any, Any, Any]:
    """Return extract -> classify -> summarise."""
    builder = StateGraph(Doc)
    builder.add_node("extract", extract)
    builder.add_node("classify", classify)
    builder.add_node("summarise", summarise)
    builder.add_edge(START, "extract")
    builder.add_edge("extract", "classify")
    builder.add_edge("classify", "summarise")
    builder.add_edge("summarise", END)
    return builder


pipeline = pipeline_builder().compile()


class Topics(TypedDict, total=False):
    """A list of topics, each answered in its own `Send` branch."""

    topics: list[str]
    answers: Annotated[list[str], operator.add]


def fan_out(state: Topics) -> list[Send]:
    """One branch per topic."""
    return [Send("answer", {"topic": topic}) for topic in state["topics"]]


def answer(state: dict[str, Any]) -> dict[str, Any]:
    """One call per branch."""
    return {"answers": [llm.invoke(f"Explain {state['topic']}").content]}


def fan_out_builder() -> StateGraph[Any, Any, Any, Any]:
    """Return START -> Send(answer) per topic -> END."""
    builder = StateGraph(Topics)
    builder.add_node("answer", answer)
    builder.add_conditional_edges(START, fan_out, ["answer"])
    builder.add_edge("answer", END)
    return builder


def batch_call(state: Topics) -> dict[str, Any]:
    """Several calls at once, through `.batch`."""
    answers = llm.batch([f"Define {topic}" for topic in state["topics"]])
    return {"answers": [a.content for a in answers]}


def batch_call_builder() -> StateGraph[Any, Any, Any, Any]:
    """Return START -> batch_call -> END."""
    builder = StateGraph(Topics)
    builder.add_node("batch_call", batch_call)
    builder.add_edge(START, "batch_call")
    builder.add_edge("batch_call", END)
    return builder
