"""batch-agent: run LLM requests through provider batch APIs as a resumable LangGraph graph.

The package is split by concern:

- `agent.context`: run-time settings (`Context`, the graph's `context_schema`).
- `agent.state`: input, full and output state schemas.
- `agent.requests`: reading and validating request records (JSONL, TXT, graph input).
- `agent.planning`: splitting a request set into jobs and building their input files (the
  graph's first step on a new thread: `plan_batch`).
- `agent.providers`: one module per batch provider behind `BatchProvider` (plus the error
  classification and the parity-exact fast paths).
- `agent.graph`: nodes, routers and `build_graph()`; what its nodes do is in
  `agent.submission` (an intent becomes exactly one provider job: the create journal, adoption),
  `agent.job_records` (a job record's transitions: status checks, cancels, prices, progress) and
  `agent.results` (one result per request of a collected job, and the thread's totals).
- `agent.bulk`: request ids and result pages kept in the LangGraph store, out of state.
- `agent.persistence`: SQLite / PostgreSQL checkpointers, stores and per-thread locks.
- `agent.checkpoint_reader`: a SQLite database's threads and result pages read without LangGraph
  (the read-only CLI commands).
- `agent.structured`, `agent.model_spec`: tools and response schemas (`bind_tools` /
  `with_structured_output`), from graph input or a LangChain chat model.
- `agent.pricing`, `agent.estimate`: what a batch cost (genai-prices), estimates and the budget.
- `agent.scheduling`: self-scheduled polls on a LangGraph server (delayed runs).
- `agent.notify`: the completion webhook.
- `agent.secrets`: keeping API keys out of everything stored or printed.
- `agent.emulator`: the offline emulator of the providers' batch HTTP protocols.
- `agent.cli`: the `batch-agent` command (a package: app, commands, backends, rendering).
- `agent.drive`: the drive loop (check a thread with growing pauses until it is done).
- `agent.remote`: the same commands against a served graph (`--url`, `langgraph-sdk`).
- `agent.export`: results as JSONL or CSV, page by page.
- `agent.api`: `run_batch`, the Python API (exported here, imported on first use).
- `agent.embedding_api`: `run_batch_embeddings`, vectors for texts (the same graph, `embed` input).
- `agent.endpoints`, `agent.vectors`: what a job calls (chat, responses, embeddings); how a
  vector is stored (float32 in the result pages).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.api import BatchError, BatchResult, BatchResults, run_batch
    from agent.embedding_api import EmbeddingResults, run_batch_embeddings

__all__ = [
    "BatchError",
    "BatchResult",
    "BatchResults",
    "EmbeddingResults",
    "run_batch",
    "run_batch_embeddings",
]
_EMBEDDINGS_API = frozenset({"EmbeddingResults", "run_batch_embeddings"})


def __getattr__(name: str) -> Any:
    """Import the Python API on first use, so `import agent` (and the CLI) stays cheap."""
    if name in _EMBEDDINGS_API:
        from agent import embedding_api

        return getattr(embedding_api, name)
    if name in __all__:
        from agent import api

        return getattr(api, name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
