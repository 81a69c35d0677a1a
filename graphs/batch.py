"""Entry point for `langgraph dev` / LangGraph Server: the batch graph, compiled without a checkpointer.

The server supplies persistence (see `checkpointer` in langgraph.json); the CLI and the tests
compile `agent.graph.build_graph()` with their own SQLite or in-memory saver.
"""

from agent.graph import build_graph

graph = build_graph().compile(name="batch")
