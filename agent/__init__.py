"""batch-agent: run LLM requests through provider batch APIs as a resumable LangGraph graph.

The package is split by concern:

- `agent.context`: run-time settings (`Context`, the graph's `context_schema`).
- `agent.state`: input, full and output state schemas.
- `agent.requests`: reading and validating request records (JSONL, TXT, graph input).
- `agent.providers`: one module per batch provider behind `BatchProvider`.
- `agent.graph`: nodes, routers and `build_graph()`.
- `agent.persistence`: SQLite checkpointers for the CLI and `langgraph dev`.
- `agent.emulator`: the offline emulator of the providers' batch HTTP protocols.
- `agent.cli`: the `batch-agent` command.
"""
