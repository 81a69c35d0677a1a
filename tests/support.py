"""Test helpers shared by unit and integration tests: a webhook receiver, a run-to-the-end loop,
the input lines planning builds and a JSON-schema description check."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.context import Context
from agent.pause import pause
from agent.providers.base import BatchProvider, line_builder_for
from agent.requests import BatchRequest
from agent.structured import OutputSpec


class WebhookReceiver:
    """A loopback webhook receiver on a free port that records what it is sent."""

    def __init__(self, status: int = 204) -> None:
        """Serve in a daemon thread, answering every POST with `status`."""
        received: list[tuple[dict[str, str], bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # The token stands for the secret many webhook URLs carry: it must never be stored.
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/batch?token=s3cret-tok"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def bodies(self) -> list[bytes]:
        """The POST bodies received so far."""
        return [body for _, body in self.received]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def run_to_end(
    graph: Any,
    config: dict[str, Any],
    context: Context,
    records: list[dict[str, Any]] | None,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Submit `records` (None: resume the thread), then re-invoke it until it is finished."""
    graph.invoke({"requests": records} if records else {}, config, context=context)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = dict(graph.get_state(config).values)
        if values["status"] in {"completed", "failed", "cancelled"}:
            return values
        pause(0.1)  # the emulator's clock in unit tests (`virtual_waits`), else a sleep
        graph.invoke({}, config, context=context)
    raise AssertionError("the batch did not finish")


# Short poll intervals so a graph run waits for the emulator's jobs in well under a second.
FAST_POLLING: dict[str, Any] = {
    "max_wait_seconds": 20.0,
    "poll_interval_seconds": 0.05,
    "poll_backoff": 1.5,
    "max_poll_interval_seconds": 0.3,
    "output_wait_seconds": 5.0,
}


def run_with_wait_budget(
    provider: str,
    records: list[dict[str, Any]],
    thread: str = "t",
    graph_input: dict[str, Any] | None = None,
    **context: Any,
) -> tuple[dict[str, Any], Any]:
    """Run a batch in memory, each invocation waiting in-run (`FAST_POLLING`), until it ends.

    `graph_input` adds input fields next to the records (tools, a response schema).

    Returns:
        The thread's final values and the compiled graph.
    """
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.store.memory import InMemoryStore

    from agent.graph import build_graph

    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": thread}}
    ctx = Context(provider=provider, **{**FAST_POLLING, **context})  # type: ignore[arg-type]
    graph.invoke({"requests": records, **(graph_input or {})}, config, context=ctx)
    deadline = time.monotonic() + 60
    values = graph.get_state(config).values
    while (
        values.get("status") not in {"completed", "failed", "cancelled", "error"}
        and time.monotonic() < deadline
    ):
        graph.invoke({}, config, context=ctx)
        values = graph.get_state(config).values
    return values, graph


def assert_all_accounted(values: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Every request has exactly one result, in input order, and the counts add up."""
    results = values["results"]
    assert [r["id"] for r in results] == [r["id"] for r in records]
    for r in results:
        assert r["status"] in {"succeeded", "failed"}
        assert (r["message"] is None) == (r["status"] == "failed")
        assert (r["error"] is None) == (r["status"] == "succeeded")
        if r["error"]:
            assert r["error"]["code"] and r["error"]["message"]
    counts = values["counts"]
    assert counts["succeeded"] + counts["failed"] == counts["total"] == len(records)
    assert counts["succeeded"] == sum(r["status"] == "succeeded" for r in results)


def assert_retried_in_follow_ups(values: dict[str, Any], retried: dict[str, Any]) -> None:
    """The `retried` results (by id) all succeeded, some in follow-up jobs that carry only them.

    A follow-up job names the job it retries, and the second attempt's jobs hold exactly the
    requests that needed a second attempt (rebuilt from the kept input or the store).
    """
    assert all(r["status"] == "succeeded" for r in retried.values())
    assert any(r["attempts"] > 1 for r in retried.values()), "30% failures need follow-up jobs"
    follow_ups = [j for j in values["jobs"] if j["attempt"] > 1]
    assert follow_ups and all(j["retry_of"] and j["job_id"] for j in follow_ups)
    assert sum(j["request_count"] for j in follow_ups if j["attempt"] == 2) == len(
        [r for r in values["results"] if r["attempts"] >= 2]
    )


def undescribed(schema: dict[str, Any]) -> list[str]:
    """Return a JSON schema's properties without a description: top level and our own records.

    Nested records from langchain-core (`AIMessage`, `ToolCall`, `UsageMetadata`, ...) are
    skipped: their schemas are langchain-core's.
    """
    import langchain_core.messages

    missing = [name for name, spec in schema["properties"].items() if not spec.get("description")]
    for record, spec in schema.get("$defs", {}).items():
        if hasattr(langchain_core.messages, record):
            continue
        missing += [
            f"{record}.{name}"
            for name, field in spec.get("properties", {}).items()
            if not field.get("description")
        ]
    return missing


def built_lines(
    provider: BatchProvider,
    requests: list[BatchRequest],
    model: str,
    params: dict[str, Any],
    spec: OutputSpec | None = None,
) -> bytes:
    """Return the JSONL input lines planning builds for `requests` (`line_builder_for`, the
    builder `BatchProvider.check_ready` returns)."""
    build = line_builder_for(provider, model, params, spec)
    return b"".join(build(request) for request in requests)
