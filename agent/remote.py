"""Drive a served batch graph (LangGraph Server, `langgraph dev`) through `langgraph-sdk`.

`batch-agent ... --url URL` uses this instead of a local checkpoint database. The served graph is
`batch` (see `langgraph.json`); each call below is one plain LangGraph Server API call, so the
same can be done with `RemoteGraph` or curl (see the README).

- Input: a served graph cannot read the client's files, so `run --url` validates the file locally
  (file, line and request id in every error, before anything is sent) and sends the records inline
  as the graph's `requests`, normalised to `{"id", "messages", "params"}`. The records are encoded
  one at a time into a single pre-serialised JSON fragment, so the client holds the JSON text once
  rather than a dict per request; the server still receives them as one request body, which is why
  inline input is capped (`INLINE_MAX_BYTES`). Larger sets go as `input_path`, a file the
  *server* can read (`--server-input`).
- Progress: each advance is one run (`runs.wait`) with the CLI's context; the thread's state is
  then read back. `--wait` polls with the same backoff as local mode (`agent.drive`) and, while the server has
  already booked the thread's next poll itself (`agent.scheduling`), only reads the state.
- Results: always paged from the server's store (`/store/items`, namespace `("batch_agent",
  <thread id>, "results")`, keys `000000`, ...), since thread state holds them only for small
  batches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import orjson

from agent.requests import InputError, iter_file_requests

if TYPE_CHECKING:
    from langgraph_sdk.client import SyncLangGraphClient

GRAPH_ID = "batch"
API_KEY_ENV = "LANGGRAPH_API_KEY"
# One run input is one HTTP body that the server parses and checkpoints whole: keep it modest.
INLINE_MAX_BYTES = 32 * 1024 * 1024


class RemoteError(Exception):
    """A served graph could not be reached or refused a call (one line, never the API key)."""


def inline_requests(path: Path, max_bytes: int = INLINE_MAX_BYTES) -> orjson.Fragment:
    """Validate a request file and encode its records for the graph's `requests` input.

    Returns:
        The JSON array of normalised records, pre-serialised (sent as it is by the SDK).

    Raises:
        InputError: A record is invalid, or the encoded set is larger than `max_bytes`.
    """
    # One growing buffer, not a list of small `bytes`: orjson's per-call output buffers are
    # not given back to the allocator, so 100,000 kept records cost ~400 MB instead of ~10 MB.
    body = bytearray(b"[")
    for request in iter_file_requests(path):
        record: dict[str, Any] = {"id": request.id, "messages": request.messages}
        if request.params:
            record["params"] = request.params
        if len(body) > 1:
            body += b","
        body += orjson.dumps(record)
        if len(body) + 1 > max_bytes:
            raise InputError(
                f"more than {max_bytes // (1024 * 1024)} MiB of requests to send inline to a "
                "served graph; put the file where the server can read it and pass "
                "`--server-input PATH` instead",
                source=str(path),
                request_id=request.id,
            )
    body += b"]"
    return orjson.Fragment(bytes(body))


def holds_batch(values: Any) -> TypeGuard[dict[str, Any]]:
    """Tell whether a thread's state values (local or served) hold a batch: others are not ours."""
    return isinstance(values, dict) and bool(values.get("jobs") or values.get("status"))


class RemoteBatch:
    """The batch graph on a LangGraph server, addressed by thread id."""

    def __init__(self, url: str, *, api_key: str | None = None) -> None:
        """Connect to `url`; the key is `api_key`, else `LANGGRAPH_API_KEY`, else none.

        Only `LANGGRAPH_API_KEY` is read, never the LangSmith keys the SDK would otherwise pick
        up on its own, so a key meant for one service is not sent to another server.
        """
        from langgraph_sdk import get_sync_client

        self.url = url.rstrip("/")
        key = api_key or os.environ.get(API_KEY_ENV) or None
        self.client: SyncLangGraphClient = get_sync_client(url=self.url, api_key=key)

    @contextmanager
    def _calling(self, what: str, *, not_found: str | None = None) -> Iterator[None]:
        """Turn SDK and network errors into one-line `RemoteError`s (`not_found` for a 404)."""
        import httpx

        try:
            yield
        except httpx.HTTPStatusError as exc:
            if not_found and exc.response.status_code == 404:
                raise RemoteError(not_found) from None
            detail = _error_detail(exc.response)
            raise RemoteError(
                f"{what} on {self.url}: HTTP {exc.response.status_code}{detail}"
            ) from None
        except httpx.HTTPError as exc:
            raise RemoteError(
                f"{what}: cannot reach {self.url} ({type(exc).__name__}: {exc})"
            ) from None

    def create_thread(self, thread_id: str | None = None) -> str:
        """Create a thread (or reuse `thread_id` if it exists); return its id."""
        with self._calling("creating a thread"):
            thread = self.client.threads.create(thread_id=thread_id, if_exists="do_nothing")
        return str(thread["thread_id"])

    def list_threads(self, limit: int) -> list[tuple[str, dict[str, Any], str]]:
        """Return `(thread id, state values, updated at)` of the newest batch threads.

        Only threads the batch graph has run on (the server records its `graph_id`) that hold a
        batch, newest update first.
        """
        with self._calling("listing threads"):
            found = self.client.threads.search(
                metadata={"graph_id": GRAPH_ID},
                limit=limit,
                sort_by="updated_at",
                sort_order="desc",
            )
        rows = []
        for thread in found:
            values = thread.get("values")
            if holds_batch(values):
                rows.append((str(thread["thread_id"]), values, str(thread.get("updated_at"))))
        return rows

    def thread_values(self, thread_id: str) -> dict[str, Any]:
        """Return a batch thread's state values.

        Raises:
            RemoteError: The server has no such thread, or it holds no batch.
        """
        missing = f"no batch thread {thread_id!r} on {self.url}"
        with self._calling(f"reading thread {thread_id}", not_found=missing):
            state = self.client.threads.get_state(thread_id)
        values = state.get("values") if isinstance(state, dict) else None
        if not holds_batch(values):
            raise RemoteError(missing)
        return values

    def advance(
        self, thread_id: str, graph_input: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        """Run the graph once on the thread (queued behind a run in progress); return its state.

        Raises:
            RemoteError: The run failed (bad input, a graph error); the message says why.
        """
        with self._calling(f"running thread {thread_id}"):
            output = self.client.runs.wait(
                thread_id,
                GRAPH_ID,
                input=graph_input,
                context=context or None,
                # Like the local thread lock: a run already going on the thread finishes first.
                multitask_strategy="enqueue",
                raise_error=False,
            )
        if isinstance(output, dict) and isinstance(output.get("__error__"), dict):
            error = output["__error__"]
            raise RemoteError(f"{error.get('message') or error.get('error')} [thread {thread_id}]")
        return self.thread_values(thread_id)

    def has_pending_run(self, thread_id: str) -> bool:
        """Tell whether a run is already queued or booked on the thread (it will poll)."""
        with self._calling(f"listing runs of thread {thread_id}"):
            return bool(self.client.runs.list(thread_id, status="pending", limit=1))

    def check(self, thread_id: str, context: dict[str, Any]) -> dict[str, Any]:
        """Check the thread once while waiting for it; return its state.

        Advances the thread with one run, unless a run is already pending on it (booked by the
        server's self-scheduling, or another client's): then it only reads the state, so the
        thread never piles up runs.
        """
        if self.has_pending_run(thread_id):
            return self.thread_values(thread_id)
        return self.advance(thread_id, {}, context)

    def iter_result_pages(self, thread_id: str, values: dict[str, Any]) -> Iterator[bytes]:
        """Yield a finished thread's result pages from the server's store, in input order.

        Each page is JSONL ending in a newline: the lines `batch-agent results` prints.
        """
        from agent.bulk import result_pages

        namespace, keys = result_pages(thread_id, values)
        for n, key in enumerate(keys):
            missing = f"result page {key} of thread {thread_id} is missing on {self.url}"
            with self._calling(f"reading result page {n}", not_found=missing):
                item = self.client.store.get_item(namespace, key=key)
            jsonl = (item or {}).get("value", {}).get("jsonl")
            if not jsonl:
                raise RemoteError(missing)
            yield jsonl.encode() + b"\n"


def _error_detail(response: Any) -> str:
    """Return `: <message>` from an error response's JSON body (empty when it has none)."""
    try:
        body = orjson.loads(response.read())
    except Exception:  # an unread stream or a non-JSON body: the status says enough
        return ""
    if isinstance(body, dict):
        message = body.get("detail") or body.get("message") or body.get("error")
        if message:
            return f": {message}"
    return ""
