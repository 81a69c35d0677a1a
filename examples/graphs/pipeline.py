"""Example: a three-step per-document pipeline (extract -> classify -> summarise).

    batch-agent map examples/graphs/pipeline.py:graph examples/documents.jsonl --out items.jsonl

Three model calls per document, one after the other: batch-agent runs them in three rounds, each
round one batch job for every document's call at that step. `classify` answers with a Pydantic
object (`with_structured_output`).
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from examples.graphs.model import llm as default_llm


class Ticket(BaseModel):
    """A support ticket's category."""

    category: Literal["billing", "bug", "account", "other"] = Field(
        description="What the ticket is about."
    )


class Document(TypedDict, total=False):
    """One document's way through the pipeline."""

    text: str
    """The document (the input)."""
    facts: str
    """Its key facts, extracted."""
    category: str
    """Its category, from the facts."""
    summary: str
    """A one-line summary for the category's queue."""


def build(llm: BaseChatModel | Any = default_llm) -> StateGraph[Any, Any, Any, Any]:
    """Return the pipeline's builder, its nodes calling `llm` (batched or realtime)."""
    classifier = llm.with_structured_output(Ticket)

    def extract(state: Document) -> dict[str, Any]:
        answer = llm.invoke(f"List the key facts of this support ticket: {state['text']}")
        return {"facts": answer.content}

    def classify(state: Document) -> dict[str, Any]:
        ticket = classifier.invoke(f"Categorise the ticket with these facts: {state['facts']}")
        return {"category": ticket.category}

    def summarise(state: Document) -> dict[str, Any]:
        answer = llm.invoke(
            [
                ("system", "Write one short line."),
                ("user", f"Summarise for the {state['category']} queue: {state['facts']}"),
            ]
        )
        return {"summary": answer.content}

    builder = StateGraph(Document)
    builder.add_node("extract", extract)
    builder.add_node("classify", classify)
    builder.add_node("summarise", summarise)
    builder.add_edge(START, "extract")
    builder.add_edge("extract", "classify")
    builder.add_edge("classify", "summarise")
    builder.add_edge("summarise", END)
    return builder


graph = build().compile()
