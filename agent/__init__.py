"""batch-agent: run LLM requests through provider batch APIs as a resumable LangGraph graph.

The package is split by concern:

- `agent.context`: run-time settings (`Context`, the graph's `context_schema`).
- `agent.state`: input, full and output state schemas.
- `agent.requests`: reading and validating request records (JSONL, TXT, graph input).
- `agent.planning`: splitting a request set into jobs and building their input files.
- `agent.providers`: one module per batch provider behind `BatchProvider` (plus the error
  classification and the parity-exact fast paths).
- `agent.graph`: nodes, routers and `build_graph()`.
- `agent.bulk`: request ids and result pages kept in the LangGraph store, out of state.
- `agent.persistence`: SQLite / PostgreSQL checkpointers, stores and per-thread locks.
- `agent.secrets`: keeping API keys out of everything stored or printed.
- `agent.emulator`: the offline emulator of the providers' batch HTTP protocols.
- `agent.cli`: the `batch-agent` command.
"""
