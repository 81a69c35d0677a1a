"""The README's "How it works" diagram draws exactly the edges of the served graph."""

from __future__ import annotations

import re
from pathlib import Path

from graphs.batch import graph

README = Path(__file__).resolve().parents[2] / "README.md"
# `a & b -->|label| c`, `a --> c`, `a -.-> c`; a node may carry a shape: `START([START])`.
EDGE = re.compile(r"^(?P<sources>.+?)\s*(?:-->|-\.->|==>)(?:\|[^|]*\|)?\s*(?P<targets>.+)$")
NAMES = {"START": "__start__", "END": "__end__"}


def node_ids(side: str) -> set[str]:
    ids = (re.split(r"[(\[{]", part.strip(), maxsplit=1)[0] for part in side.split("&"))
    return {NAMES.get(name, name) for name in ids}


def readme_edges() -> set[tuple[str, str]]:
    """Return the (source, target) pairs of the mermaid diagram under "## How it works"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## How it works", 1)[1].split("\n## ", 1)[0]
    diagram = section.split("```mermaid", 1)[1].split("```", 1)[0]
    edges: set[tuple[str, str]] = set()
    for line in diagram.splitlines():
        if match := EDGE.match(line.strip()):
            sources, targets = node_ids(match["sources"]), node_ids(match["targets"])
            edges |= {(source, target) for source in sources for target in targets}
    return edges


def test_readme_diagram_draws_every_edge_of_the_served_graph() -> None:
    drawn = {(edge.source, edge.target) for edge in graph.get_graph().edges}
    documented = readme_edges()
    assert sorted(drawn - documented) == [], "edges the README diagram does not show"
    assert sorted(documented - drawn) == [], "README edges the graph does not have"


def test_the_diagram_parser_reads_grouped_and_labelled_edges() -> None:
    assert node_ids("poll & wait & cancel") == {"poll", "wait", "cancel"}
    assert node_ids("END([END])") == {"__end__"}
    match = EDGE.match("START([START]) -->|a job in flight| poll")
    assert match is not None
    assert node_ids(match["sources"]) == {"__start__"} and node_ids(match["targets"]) == {"poll"}
