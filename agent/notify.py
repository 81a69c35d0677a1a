"""The completion webhook: one small POST when a thread's results are collected.

LangGraph Server's own run webhook fires after *every* run (each self-scheduled poll is a run) and
carries the full state, results included; a batch of 200,000 requests needs neither. This notice
is sent once per thread, by the graph's `notify` step, and stays small whatever the batch size:
status, counts, token usage, cost, and where to fetch the results (the store namespace and page
layout, and the CLI command).

Delivery is at least once: the thread records `notified_at` only after the receiver accepted the
notice (any 2xx), so a crash in between sends it again on the next run; receivers can de-duplicate
on `thread_id`, which is also sent as the `X-Batch-Agent-Thread` header. A receiver that keeps
failing is given up on after a few tries, and the batch itself is never failed by it.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import httpx2

from agent.secrets import redact

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_SECONDS = 10.0


def completion_payload(thread_id: str, state: dict[str, Any]) -> dict[str, Any]:
    """Build the notice for a finished thread: a few hundred bytes at any batch size."""
    store = state.get("results_store") or {}
    return {
        "event": "batch.finished",
        "thread_id": thread_id,
        "status": state.get("status"),
        "counts": state.get("counts"),
        "usage": state.get("usage"),
        "cost": state.get("cost"),
        # With a deadline's fallback: what was paid by how results were obtained (else None).
        "cost_by_via": state.get("cost_by_via"),
        "jobs": [
            {"job_id": j.get("job_id"), "provider": j.get("provider"), "status": j.get("status")}
            for j in state.get("jobs") or []
        ][:50],
        "results": {
            "count": store.get("count", state.get("request_count", 0)),
            "store_namespace": store.get("namespace"),
            "pages": store.get("pages"),
            "page_size": store.get("page_size"),
            "in_thread_state": bool(state.get("results")),
            "cli": f"batch-agent results {thread_id}",
        },
        "error": state.get("error"),
    }


def send_notice(url: str, payload: dict[str, Any], *, sleep: Any = time.sleep) -> str | None:
    """POST `payload` to `url`, retrying a few times on errors.

    Args:
        url: The receiver.
        payload: The JSON notice.
        sleep: Pause function between tries (tests pass a fake).

    Returns:
        None when the receiver accepted it (2xx), else why it was given up on; the message names
        only the URL's host, since webhook URLs often carry a token.
    """
    problem = ""
    headers = {"X-Batch-Agent-Thread": str(payload.get("thread_id", ""))}
    with httpx2.Client(timeout=WEBHOOK_TIMEOUT_SECONDS) as client:
        for attempt in range(WEBHOOK_ATTEMPTS):
            if attempt:
                sleep(2.0**attempt)
            try:
                response = client.post(url, json=payload, headers=headers)
            except httpx2.HTTPError as exc:
                problem = type(exc).__name__
                continue
            if 200 <= response.status_code < 300:
                return None
            problem = f"HTTP {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code not in {408, 429}:
                break  # the receiver refuses this notice; asking again will not help
    return redact(f"webhook to {safe_target(url)} failed: {problem}")


def safe_target(url: str) -> str:
    """Return `scheme://host[:port]` of a URL: enough to recognise it, without path or token."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"
