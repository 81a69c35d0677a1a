"""Example: a `Send` map-reduce: one call per section of a report, then one to combine them.

    batch-agent map examples/graphs/map_reduce.py:graph examples/reports.jsonl --out items.jsonl

The `Send` branches of every report are one round (one batch job for all sections of all
reports), the combining calls a second.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

from examples.graphs.model import llm as default_llm


class Report(TypedDict, total=False):
    """A report, its sections' notes and the combined summary."""

    title: str
    """The report's title (input)."""
    sections: list[str]
    """Its sections' texts (input)."""
    notes: Annotated[list[str], operator.add]
    """One note per section (the map step, in any order)."""
    summary: str
    """The combined summary (the reduce step)."""


class Section(TypedDict):
    """What one `Send` branch gets."""

    title: str
    text: str


def build(llm: BaseChatModel | Any = default_llm) -> StateGraph[Any, Any, Any, Any]:
    """Return the map-reduce's builder, its nodes calling `llm` (batched or realtime)."""

    def fan_out(state: Report) -> list[Send]:
        return [Send("note", {"title": state["title"], "text": s}) for s in state["sections"]]

    def note(section: Section) -> dict[str, Any]:
        answer = llm.invoke(f"One note on this section of {section['title']}: {section['text']}")
        return {"notes": [answer.content]}

    def combine(state: Report) -> dict[str, Any]:
        notes = "\n".join(sorted(state["notes"]))  # branches finish in any order
        return {"summary": llm.invoke(f"Combine these notes on {state['title']}: {notes}").content}

    builder = StateGraph(Report)
    builder.add_node("note", note)
    builder.add_node("combine", combine)
    builder.add_conditional_edges(START, fan_out, ["note"])
    builder.add_edge("note", "combine")
    builder.add_edge("combine", END)
    return builder


graph = build().compile()
