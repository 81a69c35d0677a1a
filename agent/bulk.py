"""Bulk thread data (request ids, per-job ids, results) kept in the LangGraph store, in pages.

Why the store and not graph state: SqliteSaver writes the whole state into every checkpoint, so
200,000 request ids or results in state would be re-written on every poll (megabytes per step).
In the store they are written once, in pages of `PAGE_SIZE`, and the checkpointed state keeps only
counts and job records, so a poll step costs the same at 20 or 200,000 requests.

The store is the one the graph is compiled with: `SqliteStore` (CLI), `PostgresStore` (shared
workers), `InMemoryStore` (tests), and the server's store under `langgraph dev` / LangGraph Server,
where the pages are also readable through the store API (`GET /store/items`), which is the paged
way to fetch results of any size from a served thread.

Layout, under the namespace `("batch_agent", <thread id>, ...)`:

- `("request_ids",)`: keys `000000`, `000001`, ... each `{"ids": [...]}`: input order.
- `("jobs", <job key>)`: the ids of one job, same paging.
- `("settings",)`: key `webhook`: the thread's completion webhook URL, kept here rather than in
  checkpointed state, so that any later run of the thread (whatever its context) sends the notice.
- `("duplicates",)`: `{"pairs": [[request id, original id], ...]}` pages: requests not sent
  because an identical one was (`dedupe`); they take the original's answer at collect.
- `("creates",)`: key `<job key>`, `{"sent_at", "job_id", "created_at", "input_file_id",
  "verified"}`: the create journal, written before and right after each create call (and for a job
  a lookup found), so a resume adopts the job a crash or a lost answer left behind.
- `("inputs", <job key>)`: the job's input lines in pages like the results, for a provider that
  keeps no copy of its input (Anthropic), which follow-up jobs rebuild their requests from.
- `("fallback",)`: key `<request id>`, `{"result", "job_key"}`: each result a deadline's fallback got
  (`agent.fallback`), journaled as it arrives, so a resumed fallback never sends one twice.
- `("settings",)`, key `inventory`: set once the thread has looked for jobs an earlier life of it
  created (a lost checkpoint database).
- `("parked", <job key>)`: the results of a job stored as soon as it ended, while the thread's
  other jobs still ran (`agent.parking`), in pages like the results, one `[id, result,
  retryable]` line each; `("parked",)`, key `<job key>`, `{"rows", "pages"}` says the pages are
  complete. The collect of the job's round reads them instead of the provider's files (deleted
  by then), and removes them.

And one store-wide namespace, `("batch_agent_jobs",)`: key `<job id>`, `{"thread_id", "job_key"}`
for every job a thread holds, so that no other thread adopts it.
- `("results",)`: keys `000000`, ... each `{"count": n, "jsonl": "<one JSON result per line>"}`
  in input order, where a result is `{"id", "status", "content", "message" (an AIMessage as a
  dict) | None, "usage", "error", "attempts"}` (plus "tool_calls" and "parsed" for a request set
  with tools or a response schema): the same line `batch-agent results` prints. Pages hold serialised lines rather than nested objects because
  the store would otherwise re-encode every message of a 200,000-request batch field by field.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

# LangGraph and LangChain are imported where they are used: the read-only CLI commands read
# result pages through this module and must not pay for them.
if TYPE_CHECKING:
    from langgraph.store.base import BaseStore, PutOp

    from agent.state import Result

ROOT = "batch_agent"
# Store-wide index of every job id a thread of this store holds (`ThreadData.journal_job`), so no
# other thread adopts it. Outside `ROOT`, so it is not listed as a thread.
JOBS_INDEX = "batch_agent_jobs"
PAGE_SIZE = 1000
ID_PAGE_SIZE = 10_000
# Pages of ids written per store batch: bounded memory (100,000 ids) for any number of ids.
PUT_PAGES = 10


class MissingStoreError(RuntimeError):
    """The graph was compiled without a store, which large batches need."""


def stored_thread_ids(store: BaseStore) -> list[str]:
    """Return the ids of all threads with batch data in `store` (`batch-agent threads`).

    Every submitted thread keeps its request ids here from its first step on, so the store's
    namespaces list the threads with one query, where the checkpointer would have to read
    every checkpoint of every thread.
    """
    ids: set[str] = set()
    offset = 0
    while True:
        page = store.list_namespaces(prefix=(ROOT,), max_depth=2, limit=1000, offset=offset)
        ids.update(namespace[1] for namespace in page if len(namespace) > 1)
        if len(page) < 1000:
            return sorted(ids)
        offset += len(page)


class ThreadData:
    """Paged bulk data of one thread in a LangGraph store."""

    def __init__(self, store: BaseStore | None, thread_id: str) -> None:
        """Bind to `store` and a thread; raise a clear error when there is no store."""
        if store is None:
            raise MissingStoreError(
                "the batch graph needs a store for its bulk data: compile it with "
                "build_graph().compile(checkpointer=..., store=InMemoryStore()) (or SqliteStore / "
                "PostgresStore); LangGraph Server and `langgraph dev` provide one"
            )
        self.store = store
        self.thread_id = thread_id

    def namespace(self, *parts: str) -> tuple[str, ...]:
        """Return this thread's namespace for `parts`."""
        return (ROOT, self.thread_id, *parts)

    # ----------------------------------------------------------------- ids

    def put_ids(self, ids: Iterable[str], *parts: str) -> int:
        """Store `ids` in pages under `parts`; return the number of pages.

        `ids` is read once, a page at a time (a plan spools 10,000,000 ids to a file rather than
        a list): memory holds `PUT_PAGES` pages, whatever the count.
        """
        return self._put_pages(self.namespace(*parts), "ids", ids)

    def _put_pages(self, namespace: tuple[str, ...], name: str, values: Iterable[Any]) -> int:
        from langgraph.store.base import PutOp

        ops: list[PutOp] = []
        pages = 0
        iterator = iter(values)
        while page := list(islice(iterator, ID_PAGE_SIZE)):
            ops.append(PutOp(namespace, page_key(pages), {name: page}))
            pages += 1
            if len(ops) == PUT_PAGES:
                _put_all(self.store, ops)
                ops = []
        _put_all(self.store, ops)
        return pages

    def iter_ids(self, count: int, *parts: str) -> Iterator[str]:
        """Yield `count` ids stored under `parts`, in order."""
        namespace = self.namespace(*parts)
        pages = -(-count // ID_PAGE_SIZE)
        for n in range(pages):
            item = self.store.get(namespace, page_key(n))
            if item is None:
                raise KeyError(f"missing id page {n} of {namespace} in the store")
            yield from item.value["ids"]

    def request_ids(self, count: int) -> Iterator[str]:
        """Yield the thread's request ids in input order."""
        return self.iter_ids(count, "request_ids")

    def job_ids(self, job_key: str, count: int) -> list[str]:
        """Return the ids of one job, in input order."""
        return list(self.iter_ids(count, "jobs", job_key))

    # ----------------------------------------------------------------- create journal

    def journal_create(self, job_key: str) -> float:
        """Record that a create is about to be sent for `job_key`; return the time it records.

        The store write is durable at once, unlike state, which waits for the step's checkpoint:
        from here on a job may exist for this intent, and a resume looks for it.
        """
        sent_at = time.time()
        self.store.put(self.namespace("creates"), job_key, {"sent_at": sent_at, "job_id": None})
        return sent_at

    def journal_job(
        self,
        job_key: str,
        job_id: str,
        *,
        created_at: float,
        input_file_id: str,
        verified: bool = True,
    ) -> None:
        """Record the job a create for `job_key` made (or a lookup found), and claim its id.

        The claim is a store-wide index (`JOBS_INDEX`): no other thread of this store adopts it.
        """
        from langgraph.store.base import PutOp

        previous = self.create_record(job_key)
        self.store.batch(
            [
                PutOp(
                    self.namespace("creates"),
                    job_key,
                    {
                        "sent_at": previous.get("sent_at") if previous else None,
                        "job_id": job_id,
                        "created_at": created_at,
                        "input_file_id": input_file_id,
                        "verified": verified,
                    },
                ),
                PutOp((JOBS_INDEX,), job_id, {"thread_id": self.thread_id, "job_key": job_key}),
            ]
        )

    def forget_job(self, job_key: str) -> None:
        """Drop the journal entry of `job_key` (a job adopted unverified that was not ours)."""
        self.store.delete(self.namespace("creates"), job_key)

    def create_record(self, job_key: str) -> dict[str, Any] | None:
        """Return the create journal entry of `job_key` (`{"sent_at", "job_id", ...}`), if any."""
        item = self.store.get(self.namespace("creates"), job_key)
        return dict(item.value) if item is not None else None

    def forget_create(self, job_key: str) -> None:
        """Drop the create journal entry of `job_key` (its job was refused: a new one is due)."""
        self.store.delete(self.namespace("creates"), job_key)

    def claimed(self, own: Iterable[str]) -> ClaimedJobs:
        """Return the job ids no intent of this thread may adopt: `own` plus other threads'."""
        return ClaimedJobs(self.store, self.thread_id, set(own))

    def inventory_taken(self) -> bool:
        """Tell whether this thread already looked for jobs an earlier life of it created."""
        return self.store.get(self.namespace("settings"), "inventory") is not None

    def mark_inventory_taken(self) -> None:
        """Remember that the thread's look for earlier jobs is done (it runs once)."""
        self.store.put(self.namespace("settings"), "inventory", {"at": time.time()})

    # ----------------------------------------------------------------- fallback journal

    def put_fallback_result(self, request_id: str, result: dict[str, Any], job_key: str) -> None:
        """Journal one deadline-fallback result as soon as it arrives (`agent.fallback`).

        A run killed mid-fallback then re-sends only the requests with no entry here.
        `job_key` names the job whose input line was sent (its model prices the result).
        """
        self.store.put(
            self.namespace("fallback"), request_id, {"result": result, "job_key": job_key}
        )

    def fallback_results(self) -> dict[str, dict[str, Any]]:
        """Return every journaled fallback entry `{"result", "job_key"}`, by request id."""
        found: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = self.store.search(self.namespace("fallback"), limit=1000, offset=offset)
            found.update((item.key, dict(item.value)) for item in page)
            if len(page) < 1000:
                return found
            offset += len(page)

    # ----------------------------------------------------------------- kept inputs

    def put_input(self, job_key: str, path: Path) -> None:
        """Keep a job's input lines (for a provider that keeps no copy), in pages."""
        namespace = self.namespace("inputs", job_key)
        ops: list[PutOp] = []
        page: list[str] = []
        with path.open("rb") as fh:
            for raw in fh:
                if raw.strip():
                    page.append(raw.rstrip(b"\r\n").decode())
                    if len(page) == PAGE_SIZE:
                        ops.append(_text_page(namespace, len(ops), page))
                        page = []
        if page or not ops:
            ops.append(_text_page(namespace, len(ops), page))
        for start in range(0, len(ops), 20):
            _put_all(self.store, ops[start : start + 20])

    def has_input(self, job_key: str) -> bool:
        """Tell whether the store keeps the input lines of `job_key`."""
        return self.store.get(self.namespace("inputs", job_key), page_key(0)) is not None

    def input_lines(self, job_key: str, count: int) -> Iterator[bytes]:
        """Yield the `count` kept input lines of `job_key`, in order.

        Raises:
            KeyError: The store does not keep this job's input (a thread from before it did).
        """
        namespace = self.namespace("inputs", job_key)
        for n in range(-(-count // PAGE_SIZE)):
            item = self.store.get(namespace, page_key(n))
            if item is None:
                raise KeyError(f"missing input page {n} of {namespace} in the store")
            text = item.value["jsonl"]
            if text:
                yield from (line.encode() for line in text.split("\n"))

    def put_duplicates(self, pairs: Iterable[tuple[str, str] | list[str]]) -> None:
        """Store `(request id, original id)` pairs of requests answered from an identical one.

        Read once, a page at a time, like `put_ids`.
        """
        self._put_pages(self.namespace("duplicates"), "pairs", (list(pair) for pair in pairs))

    def duplicates_by_original(self, count: int) -> dict[str, list[str]]:
        """Return original id -> ids of the `count` stored duplicates that take its answer."""
        copies: dict[str, list[str]] = {}
        namespace = self.namespace("duplicates")
        for n in range(-(-count // ID_PAGE_SIZE)):
            item = self.store.get(namespace, page_key(n))
            if item is None:
                raise KeyError(f"missing duplicates page {n} of {namespace} in the store")
            for copy_id, original in item.value["pairs"]:
                copies.setdefault(original, []).append(copy_id)
        return copies

    # ----------------------------------------------------------------- parked results

    def put_parked(self, job_key: str, rows: Iterable[tuple[str, dict[str, Any], bool]]) -> int:
        """Store one job's `(request id, result, retryable)` rows, then the mark that they are all in.

        Returns:
            The number of rows stored.
        """
        from langgraph.store.base import PutOp

        namespace = self.namespace("parked", job_key)
        pages, page, count = 0, [], 0
        batch: list[PutOp] = []
        for row in rows:
            page.append(dumps(row))
            count += 1
            if len(page) == PAGE_SIZE:
                batch.append(
                    PutOp(namespace, page_key(pages), {"jsonl": b"\n".join(page).decode()})
                )
                pages, page = pages + 1, []
                if len(batch) >= 20:
                    _put_all(self.store, batch)
                    batch = []
        if page:
            batch.append(PutOp(namespace, page_key(pages), {"jsonl": b"\n".join(page).decode()}))
            pages += 1
        _put_all(self.store, batch)
        # Last, so a kill while writing pages leaves no mark and the job is parked again.
        self.store.put(self.namespace("parked"), job_key, {"rows": count, "pages": pages})
        return count

    def parked(self, job_key: str) -> bool:
        """Tell whether a job's results are parked in full (`put_parked` finished)."""
        return self.store.get(self.namespace("parked"), job_key) is not None

    def iter_parked(self, job_key: str) -> Iterator[tuple[str, dict[str, Any], bool]]:
        """Yield a parked job's `(request id, result, retryable)`, as `put_parked` stored them."""
        mark = self.store.get(self.namespace("parked"), job_key)
        if mark is None:
            raise KeyError(f"the results of job {job_key} are not parked in the store")
        namespace = self.namespace("parked", job_key)
        for n in range(int(mark.value["pages"])):
            item = self.store.get(namespace, page_key(n))
            if item is None:
                raise KeyError(f"missing parked page {n} of {namespace} in the store")
            for line in item.value["jsonl"].split("\n"):
                request_id, result, retryable = orjson.loads(line)
                yield request_id, result, retryable

    def forget_parked(self, job_key: str) -> None:
        """Delete a job's parked results (its round's results are stored)."""
        from langgraph.store.base import PutOp

        mark = self.store.get(self.namespace("parked"), job_key)
        if mark is None:
            return
        namespace = self.namespace("parked", job_key)
        _put_all(
            self.store, [PutOp(namespace, page_key(n), None) for n in range(mark.value["pages"])]
        )
        self.store.delete(self.namespace("parked"), job_key)

    # ----------------------------------------------------------------- settings

    def webhook_url(self) -> str:
        """Return the completion webhook remembered for this thread ('' when none)."""
        item = self.store.get(self.namespace("settings"), "webhook")
        return str(item.value.get("url") or "") if item is not None else ""

    def remember_webhook_url(self, url: str) -> None:
        """Remember `url` as this thread's completion webhook (the latest one given wins)."""
        if url and url != self.webhook_url():
            self.store.put(self.namespace("settings"), "webhook", {"url": url})

    # ----------------------------------------------------------------- collected rounds

    def round_record(self, attempt: int) -> dict[str, Any] | None:
        """Return what collecting round `attempt` gave, as `put_round_record` wrote it, if any."""
        item = self.store.get(self.namespace("rounds"), page_key(attempt))
        return dict(item.value) if item is not None else None

    def put_round_record(self, attempt: int, record: dict[str, Any]) -> None:
        """Record what collecting round `attempt` gave (durable at once, unlike state).

        A collect killed before its checkpoint runs again on resume; this record lets it give
        the same totals without reading the provider's files again (they may be deleted).
        """
        self.store.put(self.namespace("rounds"), page_key(attempt), record)

    # ----------------------------------------------------------------- results

    def put_result_pages(self, pages: Iterable[tuple[int, list[bytes]]]) -> None:
        """Store result pages `(page number, serialised results)`."""
        from langgraph.store.base import PutOp

        namespace = self.namespace("results")
        batch: list[PutOp] = []
        for n, lines in pages:
            jsonl = b"\n".join(lines).decode()
            batch.append(PutOp(namespace, page_key(n), {"count": len(lines), "jsonl": jsonl}))
            if len(batch) >= 20:
                _put_all(self.store, batch)
                batch = []
        _put_all(self.store, batch)

    def result_lines(self, n: int) -> list[bytes]:
        """Return result page `n` as serialised lines (empty if it does not exist)."""
        item = self.store.get(self.namespace("results"), page_key(n))
        if item is None or not item.value.get("jsonl"):
            return []
        return [line.encode() for line in item.value["jsonl"].split("\n")]

    def iter_result_pages(self, count: int) -> Iterator[bytes]:
        """Yield the stored result pages of `count` results, each as JSONL ending in a newline."""
        namespace = self.namespace("results")
        for n in range(-(-count // PAGE_SIZE)):
            item = self.store.get(namespace, page_key(n))
            if item is not None and item.value.get("jsonl"):
                yield item.value["jsonl"].encode() + b"\n"

    def iter_result_lines(self, count: int) -> Iterator[bytes]:
        """Yield `count` stored results, serialised, in input order."""
        for n in range(-(-count // PAGE_SIZE)):
            yield from self.result_lines(n)

    def iter_results(self, count: int) -> Iterator[dict[str, Any]]:
        """Yield `count` stored results in input order."""
        return (orjson.loads(line) for line in self.iter_result_lines(count))


class ClaimedJobs(Collection[str]):
    """Job ids taken already, which no lookup may adopt.

    A thread's own (a set) plus, probed one at a time, every job id another thread of the same
    store recorded in `JOBS_INDEX`.
    """

    def __init__(self, store: BaseStore, thread_id: str, own: set[str]) -> None:
        """Bind to the store's index and the thread's own ids."""
        self._store, self._thread_id, self._own = store, thread_id, own

    def __contains__(self, job_id: object) -> bool:
        """Tell whether `job_id` is this thread's or recorded by another thread."""
        if job_id in self._own:
            return True
        if not isinstance(job_id, str) or not job_id:
            return False
        item = self._store.get((JOBS_INDEX,), job_id)
        return item is not None and item.value.get("thread_id") != self._thread_id

    def __iter__(self) -> Iterator[str]:
        """Iterate over the thread's own ids (the index is only ever probed)."""
        return iter(self._own)

    def __len__(self) -> int:
        """Count the thread's own ids."""
        return len(self._own)


def _text_page(namespace: tuple[str, ...], n: int, lines: list[str]) -> PutOp:
    from langgraph.store.base import PutOp

    return PutOp(namespace, page_key(n), {"count": len(lines), "jsonl": "\n".join(lines)})


def page_key(n: int) -> str:
    """Return the store key of page `n` (zero-padded, so keys sort in page order)."""
    return f"{n:06d}"


def result_pages(thread_id: str, values: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Return where a thread's result pages are: their namespace and keys, in input order.

    Read from the thread's `results_store` (`agent.results.results_store`); a thread that has
    none yet is assumed to use the default layout for its `request_count`. For clients that
    read the pages through a server's API (`agent.remote`, `agent.batched.served`).
    """
    where = values.get("results_store") or {}
    count = int(where.get("count") or values.get("request_count") or 0)
    namespace = [str(part) for part in (where.get("namespace") or [ROOT, thread_id, "results"])]
    pages = int(where.get("pages") or -(-count // PAGE_SIZE))
    return namespace, [page_key(n) for n in range(pages)]


def _put_all(store: BaseStore, ops: list[PutOp]) -> None:
    if ops:
        store.batch(ops)


class ResultSpool:
    """One collect round's results, written to the thread's result pages in input order.

    A batch can hold 200,000 results and output lines may come in any order. In the first round,
    while results arrive in input order (the usual case), whole pages go straight to the store;
    from the first result out of order on, they are parked in a temporary SQLite table by input
    position and written out page by page at the end. Memory stays bounded by a page either way.
    A follow-up round parks its results and patches only the pages that hold a retried request.
    Each position must be put at most once per round.
    """

    def __init__(self, data: ThreadData, *, first_round: bool, count: int) -> None:
        """Prepare a round for `count` requests of `data`'s thread."""
        self.data = data
        self.first_round = first_round
        self.count = count
        self._ordered = first_round
        self._page: list[bytes] = []
        self._flushed_pages = 0
        self._pending: list[tuple[int, bytes]] = []

    def __enter__(self) -> ResultSpool:
        """Open the temporary table."""
        self._dir = tempfile.TemporaryDirectory(prefix="batch-agent-results-")
        self._db = sqlite3.connect(str(Path(self._dir.name) / "results.sqlite"))
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE results (position INTEGER PRIMARY KEY, result TEXT NOT NULL)"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        """Drop the temporary table."""
        self._db.close()
        self._dir.cleanup()

    def put(self, position: int, result: dict[str, Any]) -> None:
        """Record the result of the request at `position`."""
        raw = dumps(result)
        if self._ordered:
            if position == self._flushed_pages * PAGE_SIZE + len(self._page):
                self._page.append(raw)
                if len(self._page) == PAGE_SIZE:
                    self.data.put_result_pages([(self._flushed_pages, self._page)])
                    self._flushed_pages += 1
                    self._page = []
                return
            # Out of order: park what the current page holds and continue through the table.
            self._ordered = False
            start = self._flushed_pages * PAGE_SIZE
            self._pending.extend((start + i, line) for i, line in enumerate(self._page))
            self._page = []
        self._pending.append((position, raw))
        if len(self._pending) >= 2000:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", self._pending)
        self._pending = []

    def replaced(self) -> list[dict[str, Any]]:
        """Return the stored results this round's results will replace (none in the first round).

        Read before `merge` writes anything, so the caller can adjust its totals without
        re-reading every page, and record them before the store changes.
        """
        self._flush()
        if self.first_round:
            return []
        replaced: list[dict[str, Any]] = []
        for n in self._touched_pages():
            page = self.data.result_lines(n)
            for position, _ in self._page_rows(n):
                replaced.append(orjson.loads(page[position - n * PAGE_SIZE]))
        return replaced

    def merge(self) -> None:
        """Write whatever is not in the store yet (a follow-up round patches its pages)."""
        self._flush()
        pages = -(-self.count // PAGE_SIZE)
        if self.first_round:
            if self._ordered:
                if self._page:
                    self.data.put_result_pages([(self._flushed_pages, self._page)])
                return
            self.data.put_result_pages(
                (n, self._rows(n)) for n in range(self._flushed_pages, pages)
            )
            return

        def patched() -> Iterator[tuple[int, list[bytes]]]:
            for n in self._touched_pages():
                page = self.data.result_lines(n)
                for position, raw in self._page_rows(n):
                    page[position - n * PAGE_SIZE] = raw
                yield n, page

        self.data.put_result_pages(patched())

    def _touched_pages(self) -> list[int]:
        query = f"SELECT DISTINCT position / {PAGE_SIZE} FROM results ORDER BY 1"
        return [row[0] for row in self._db.execute(query)]

    def _page_rows(self, n: int) -> list[tuple[int, bytes]]:
        return list(
            self._db.execute(
                "SELECT position, result FROM results WHERE position >= ? AND position < ?",
                (n * PAGE_SIZE, (n + 1) * PAGE_SIZE),
            )
        )

    def _rows(self, n: int) -> list[bytes]:
        cursor = self._db.execute(
            "SELECT result FROM results WHERE position >= ? AND position < ? ORDER BY position",
            (n * PAGE_SIZE, (n + 1) * PAGE_SIZE),
        )
        rows = [raw for (raw,) in cursor]
        expected = min(PAGE_SIZE, self.count - n * PAGE_SIZE)
        if len(rows) != expected:
            raise RuntimeError(f"result page {n} has {len(rows)} of {expected} results")
        return rows


def dumps(value: Any) -> bytes:
    """Serialise a result compactly (orjson: UTF-8, no spaces; unknown types as strings)."""
    return orjson.dumps(value, default=str)


def to_result(stored: dict[str, Any]) -> Result:
    """Turn a stored result back into a `Result` with its `AIMessage`."""
    from langchain_core.messages import AIMessage

    from agent.state import Result

    message = stored.get("message")
    result = Result(
        id=stored["id"],
        status=stored["status"],
        message=AIMessage(**message) if message else None,
        usage=stored["usage"],
        error=stored.get("error"),
        attempts=stored.get("attempts", 1),
    )
    # Only request sets with tools or a response schema store these (`agent.structured`).
    if "tool_calls" in stored:
        result["tool_calls"] = stored["tool_calls"]
    if "parsed" in stored:
        result["parsed"] = stored["parsed"]
    if "duplicate_of" in stored:
        result["duplicate_of"] = stored["duplicate_of"]
    if "via" in stored:
        result["via"] = stored["via"]
    return result
