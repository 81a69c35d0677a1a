"""Where the CLI's threads live: a local checkpoint database, or a graph served at `--url`.

Both sit behind one small interface, `Backend`, so each command (`run`, `cancel`, `status`,
`threads`, `results`) is written once. `LocalBackend` compiles the batch graph on the SQLite or
PostgreSQL database (`agent.persistence`) only when a command runs the graph; reading a thread
(`values`, `threads`, `result_pages`) goes through `agent.checkpoint_reader`, which reads a
SQLite file without importing LangGraph. `RemoteBackend` wraps `agent.remote.RemoteBatch`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.cli.errors import CliError

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from agent.context import Context
    from agent.remote import RemoteBatch

Values = dict[str, Any]
# The state keys the read-only commands show or test (`agent.cli.render`, `results`, `cancel`):
# a local read without the graph decodes only these, never a small batch's `results` (LangChain
# messages, whose classes cost ~0.4 s to import). A key missing here reads as absent.
READ_KEYS = frozenset(
    {
        "status",
        "jobs",
        "counts",
        "usage",
        "cost",
        "estimate",
        "dedup",
        "attempt",
        "polls",
        "error",
        "request_count",
        "endpoint",
        "results_store",
        "deadline_at",
        "cost_by_via",
        "fallback_report",
    }
)
ThreadRow = tuple[str, Values, str]
OnEvent = Callable[[dict[str, Any]], None]


class Backend(Protocol):
    """What a command needs from the place its threads live."""

    @property
    def flag(self) -> str:
        """The option naming this backend in a command we suggest (`" --db PATH"`, or `""`)."""
        ...

    def start(
        self,
        input_file: Path | None,
        server_input: str | None,
        spec_input: dict[str, Any],
        thread: str | None,
    ) -> tuple[str, dict[str, Any]]:
        """Check `run`'s input and return the thread id and the graph input to send it.

        Raises:
            CliError: The input is missing, both kinds are given, or the file does not exist.
        """
        ...

    def values(self, thread_id: str) -> Values:
        """Return a batch thread's state values (raises if there is no such thread)."""
        ...

    def threads(self, limit: int) -> list[ThreadRow]:
        """Return `(thread id, values, last update)` of the newest `limit` batch threads."""
        ...

    def advance(
        self, thread_id: str, graph_input: dict[str, Any], on_event: OnEvent | None = None
    ) -> Values:
        """Run the graph once on the thread and return its values.

        Raises:
            CliError: The run stopped on a provider error; the message says how to resume.
        """
        ...

    def check(self, thread_id: str, on_event: OnEvent | None = None) -> Values:
        """Check a thread once while waiting for it (a run, or a read if one is pending)."""
        ...

    def result_pages(self, thread_id: str, values: Values) -> Iterator[bytes]:
        """Yield a collected thread's results as JSONL pages, in input order."""
        ...

    def storage_errors(
        self, thread_id: str, input_file: Path | None, command: str
    ) -> AbstractContextManager[None]:
        """Turn a local storage failure into one line saying how to resume (a no-op remotely)."""
        ...


def resume_hint(thread_id: str, flag: str) -> str:
    """Return `[thread T; resume: batch-agent run ... --thread T --wait]`."""
    return f"[thread {thread_id}; resume: batch-agent run{flag} --thread {thread_id} --wait]"


def raise_on_error(thread_id: str, values: Values, flag: str) -> Values:
    """Return `values`, or raise `CliError` when the run stopped on a provider error."""
    if values.get("status") == "error":
        raise CliError(f"{values.get('error')} {resume_hint(thread_id, flag)}")
    return values


def check_input_file(input_file: Path | None) -> None:
    """Refuse a named INPUT that is not a file, before anything else is done."""
    if input_file is not None and not input_file.is_file():
        raise CliError(f"{input_file}: file not found")


class LocalBackend:
    """Threads in a local checkpoint database, run by the graph compiled on it."""

    def __init__(
        self, db: str | None, context: Context, stack: ExitStack, *, existing: bool
    ) -> None:
        """Use the database `db` (`--db`; None: `BATCH_AGENT_DB` or the default file).

        Args:
            db: `--db` as given.
            context: The run context of every graph run.
            stack: Closes the graph (and the database) when the command ends.
            existing: Only use a database that exists: a mistyped path is an error, not a new
                empty file.
        """
        from agent.persistence import redact_db_url, resolve_db

        self.db = db
        self.context = context
        self.resolved = resolve_db(db)
        self.existing = existing
        self._stack = stack
        self._graph: CompiledStateGraph[Any, Any, Any, Any] | None = None
        # A --db given on the command line is repeated in hints (a PostgreSQL password as ***).
        self._flag = f" --db {redact_db_url(db)}" if db else ""
        if existing and isinstance(self.resolved, Path) and not self.resolved.is_file():
            raise CliError(
                f"no checkpoint database at {self.resolved}: name the one `run` used with --db "
                "or BATCH_AGENT_DB"
            )

    @property
    def flag(self) -> str:
        """`" --db PATH"` when `--db` was given, else `""`."""
        return self._flag

    @property
    def graph(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The batch graph compiled on the database, opened on first use."""
        if self._graph is None:
            from agent.persistence import open_batch_graph

            self._graph = self._stack.enter_context(open_batch_graph(self.resolved))
        return self._graph

    def start(
        self,
        input_file: Path | None,
        server_input: str | None,
        spec_input: dict[str, Any],
        thread: str | None,
    ) -> tuple[str, dict[str, Any]]:
        """Return the thread (`--thread`, else a new id) and the graph input reading INPUT."""
        if server_input is not None:
            raise CliError("--server-input needs --url (locally, give the file as INPUT)")
        if input_file is None and thread is None:
            raise CliError("give an INPUT file to submit, or --thread ID to resume")
        check_input_file(input_file)
        thread_id = thread or str(uuid.uuid4())
        if input_file is None:
            self.values(thread_id)  # fail clearly on an unknown thread
            return thread_id, {}
        # The graph streams the file itself: any size, never loaded into state.
        graph_input = {"input_path": str(input_file.resolve()), **spec_input}
        if thread is None:
            graph_input["new_thread"] = True  # a made-up id: no earlier life to look for jobs of
        return thread_id, graph_input

    def values(self, thread_id: str) -> Values:
        """Return a thread's values (from the checkpoint), or raise if there is no such thread."""
        from agent.remote import holds_batch

        values = self._read_values(thread_id)
        if not holds_batch(values):
            raise CliError(f"no batch thread {thread_id!r} in this checkpoint database")
        return dict(values)

    def _read_values(self, thread_id: str) -> Any:
        if self._graph is None:
            from agent.checkpoint_reader import read_thread

            found = read_thread(self.resolved, thread_id, READ_KEYS)
            if found is not None:
                return found
        return self.graph.get_state({"configurable": {"thread_id": thread_id}}).values

    def threads(self, limit: int) -> list[ThreadRow]:
        """Return the newest `limit` batch threads with their last checkpoint's time."""
        from agent.remote import holds_batch

        if self._graph is None:
            from agent.checkpoint_reader import read_threads

            found = read_threads(self.resolved, READ_KEYS)
            if found is not None:
                rows = [(t.thread_id, t.values, t.created_at) for t in found]
                return _newest([row for row in rows if holds_batch(row[1])], limit)
        from agent.bulk import stored_thread_ids

        rows = []
        graph = self.graph
        if graph.store is None:  # `open_batch_graph` always gives one; a bare compile may not
            return rows
        for thread_id in stored_thread_ids(graph.store):
            snapshot = graph.get_state({"configurable": {"thread_id": thread_id}})
            if holds_batch(snapshot.values):
                rows.append((thread_id, dict(snapshot.values), str(snapshot.created_at)))
        return _newest(rows, limit)

    def advance(
        self, thread_id: str, graph_input: dict[str, Any], on_event: OnEvent | None = None
    ) -> Values:
        """Run the thread once, holding its lock, and return its values.

        `on_event` receives the run's custom stream events (`batch_progress` after each check).
        """
        from agent.persistence import active_thread_lock

        config: Any = {"configurable": {"thread_id": thread_id}}
        graph = self.graph
        # One worker at a time runs a thread: one that waited here starts from the other's checkpoint.
        with active_thread_lock(thread_id):
            # durability="sync": each step's checkpoint is on disk before the next provider call.
            for event in graph.stream(
                graph_input, config, context=self.context, durability="sync", stream_mode="custom"
            ):
                if on_event is not None and isinstance(event, dict):
                    on_event(event)
            values = dict(graph.get_state(config).values)
        return raise_on_error(thread_id, values, self.flag)

    def check(self, thread_id: str, on_event: OnEvent | None = None) -> Values:
        """Run the thread once more (locally nothing else polls it)."""
        return self.advance(thread_id, {}, on_event)

    def result_pages(self, thread_id: str, values: Values) -> Iterator[bytes]:
        """Stream the thread's result pages from the store, each the JSONL `results` prints."""
        from agent.bulk import ThreadData

        count = int(values.get("request_count") or 0)
        if self._graph is None:
            from agent.checkpoint_reader import StoreReader

            reader = StoreReader.open(self.resolved)
            if reader is not None:
                self._stack.callback(reader.close)
                return ThreadData(reader, thread_id).iter_result_pages(count)  # type: ignore[arg-type]
        return ThreadData(self.graph.store, thread_id).iter_result_pages(count)

    def storage_errors(
        self, thread_id: str, input_file: Path | None, command: str
    ) -> AbstractContextManager[None]:
        """Name the database, the thread and the command that resumes it on a storage failure."""
        return _storage_errors_say_where(thread_id, self.db, self.flag, input_file, command)


class RemoteBackend:
    """Threads of the batch graph served at a LangGraph Server URL (`agent.remote`)."""

    def __init__(self, url: str, run_context: dict[str, Any]) -> None:
        """Connect to `url`; `run_context` (only the flags given) goes with every run."""
        from agent.remote import RemoteBatch

        self.remote: RemoteBatch = RemoteBatch(url)
        self.run_context = run_context

    @property
    def flag(self) -> str:
        """`" --url URL"`."""
        return f" --url {self.remote.url}"

    def start(
        self,
        input_file: Path | None,
        server_input: str | None,
        spec_input: dict[str, Any],
        thread: str | None,
    ) -> tuple[str, dict[str, Any]]:
        """Validate INPUT locally and send it inline (or name `--server-input`); make the thread.

        `spec_input` (`--tools` / `--schema`, read locally) goes with the records, as locally.
        """
        from agent.remote import inline_requests

        if input_file is not None and server_input is not None:
            raise CliError("give INPUT or --server-input, not both")
        if input_file is None and server_input is None and thread is None:
            raise CliError("give an INPUT file to submit, or --thread ID to resume")
        check_input_file(input_file)
        graph_input: dict[str, Any] = {}
        if input_file is not None:
            # Validated here, before anything is sent: file, line and request id in every error.
            graph_input = {"requests": inline_requests(input_file), **spec_input}
        elif server_input is not None:
            graph_input = {"input_path": server_input, **spec_input}
        if not graph_input:
            thread_id = str(thread)
            self.values(thread_id)  # fail clearly on an unknown thread
            return thread_id, graph_input
        thread_id = self.remote.create_thread(thread)
        if thread is None:
            graph_input["new_thread"] = True  # the server made the id: no earlier life
        return thread_id, graph_input

    def values(self, thread_id: str) -> Values:
        """Return the served thread's values (`RemoteError` if there is no such thread)."""
        return self.remote.thread_values(thread_id)

    def threads(self, limit: int) -> list[ThreadRow]:
        """Return the newest batch threads the served graph ran on."""
        return self.remote.list_threads(limit)

    def advance(
        self, thread_id: str, graph_input: dict[str, Any], on_event: OnEvent | None = None
    ) -> Values:
        """Run the served thread once (`runs.wait`); a provider error fails as locally."""
        values = self.remote.advance(thread_id, graph_input, self.run_context)
        return raise_on_error(thread_id, values, self.flag)

    def check(self, thread_id: str, on_event: OnEvent | None = None) -> Values:
        """Run the thread, or only read it while a run is already pending on the server."""
        return raise_on_error(thread_id, self.remote.check(thread_id, self.run_context), self.flag)

    def result_pages(self, thread_id: str, values: Values) -> Iterator[bytes]:
        """Page the results out of the server's store."""
        return self.remote.iter_result_pages(thread_id, values)

    def storage_errors(
        self, thread_id: str, input_file: Path | None, command: str
    ) -> AbstractContextManager[None]:
        """Nothing is stored locally."""
        return nullcontext()


@contextmanager
def open_backend(
    db: str | None,
    url: str | None,
    context: Context,
    run_context: dict[str, Any] | None = None,
    *,
    existing: bool = True,
) -> Iterator[Backend]:
    """Open the backend a command's `--url` / `--db` name, closed when the command ends.

    Args:
        db: `--db` (local threads).
        url: `--url` (a served graph; `--db` is then unused).
        context: The local run context.
        run_context: What goes with each served run (default: nothing, the server's defaults).
        existing: Locally, only read a database that exists.
    """
    if url:
        yield RemoteBackend(url, run_context or {})
        return
    with ExitStack() as stack:
        yield LocalBackend(db, context, stack, existing=existing)


def _newest(rows: list[ThreadRow], limit: int) -> list[ThreadRow]:
    rows.sort(key=lambda row: row[2], reverse=True)
    return rows[:limit]


@contextmanager
def _storage_errors_say_where(
    thread_id: str, db: str | None, flag: str, input_file: Path | None, command: str
) -> Iterator[None]:
    """Turn a local storage failure into one line: the path, the thread, and how to resume.

    SQLite says only "database is locked" or "database or disk is full", and a full spool only
    "[Errno 28] No space left on device"; every step is checkpointed before the next provider
    call, so the thread keeps what was saved and the same command picks it up again.
    """
    try:
        yield
    except Exception as exc:
        from agent.persistence import redact_db_url, resolve_db
        from agent.storage_errors import storage_problem

        described = storage_problem(exc, redact_db_url(resolve_db(db)))
        if described is None:
            raise
        if command == "cancel":
            again = f"batch-agent cancel {thread_id}{flag}"
        else:
            # With INPUT, the same command: it also works if the thread holds nothing yet.
            source = f" {input_file}" if input_file is not None else ""
            again = f"batch-agent run{source}{flag} --thread {thread_id} --wait"
        raise CliError(
            f"{described.problem}. Thread {thread_id} keeps what was saved; "
            f"{described.remedy}, then run again: {again}"
        ) from None
