"""The `batch-agent` command: run the batch graph standalone with a SQLite checkpointer.

Every command opens the same checkpoint database (`--db`, `BATCH_AGENT_DB`, default
`.batch-agent/checkpoints.sqlite`), so a batch submitted by one process can be inspected and
resumed by any other. Human-readable progress goes to stderr; machine output (results JSONL,
`--json`) goes to stdout or `--out`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent.context import Context

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph.state import CompiledStateGraph


# Mirrors agent.graph.TERMINAL_THREAD_STATUSES; kept here so `batch-agent emulator ...` and
# `--help` start without importing LangGraph and the LangChain models (seconds of start-up).
TERMINAL_THREAD_STATUSES = frozenset({"completed", "failed", "cancelled"})

app = typer.Typer(
    help="Run LLM requests through provider batch APIs (half the price of realtime calls).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
emulator_app = typer.Typer(
    help="The offline emulator of the providers' batch APIs.", no_args_is_help=True
)
app.add_typer(emulator_app, name="emulator")

err = Console(stderr=True, highlight=False, soft_wrap=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Checkpoint database: a SQLite file or a postgresql:// URL (default: $BATCH_AGENT_DB or .batch-agent/checkpoints.sqlite).",
    ),
]
ProviderOption = Annotated[str | None, typer.Option(help="openai, mistral, emulator or auto.")]
ModelOption = Annotated[str | None, typer.Option(help="Model for requests that do not name one.")]
SystemOption = Annotated[str | None, typer.Option(help="System prompt for requests without one.")]
EmulatorDirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="State directory (default: $BATCH_AGENT_EMULATOR_DIR or .batch-agent/emulator).",
    ),
]
OutOption = Annotated[
    Path | None, typer.Option("--out", help="Write results JSONL to this file instead of stdout.")
]


class CliError(Exception):
    """An error reported as one line on stderr with exit code 1."""


@contextmanager
def open_graph(db: Path | str | None) -> Iterator[CompiledStateGraph[Any, Any, Any, Any]]:
    """Compile the batch graph on `db`: a SQLite file or a `postgresql://` URL.

    Inside the block the database's per-thread lock is the one `_advance` holds.
    """
    from agent.graph import build_graph
    from agent.persistence import ACTIVE_PERSISTENCE, open_persistence

    with open_persistence(db) as persistence:
        graph = build_graph().compile(
            checkpointer=persistence.checkpointer, store=persistence.store, name="batch"
        )
        token = ACTIVE_PERSISTENCE.set(persistence)
        try:
            yield graph
        finally:
            ACTIVE_PERSISTENCE.reset(token)


def thread_values(graph: CompiledStateGraph[Any, Any, Any, Any], thread_id: str) -> dict[str, Any]:
    """Return a thread's state values, or raise if the database has no such thread."""
    values = graph.get_state({"configurable": {"thread_id": thread_id}}).values
    if not values or not (values.get("jobs") or values.get("status")):
        raise CliError(f"no batch thread {thread_id!r} in this checkpoint database")
    return dict(values)


@app.command()
def run(
    input_file: Annotated[
        Path | None,
        typer.Argument(
            metavar="INPUT",
            help="Requests: .jsonl ({id, prompt|messages, params} or OpenAI batch lines) or .txt (one prompt per line).",
        ),
    ] = None,
    provider: ProviderOption = None,
    model: ModelOption = None,
    system: SystemOption = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Maximum tokens to generate per request.")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Send the provider SDK to this compatible endpoint.")
    ] = None,
    thread: Annotated[
        str | None, typer.Option(help="Thread to submit on or resume (default: a new thread).")
    ] = None,
    db: DbOption = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Poll until the job is done, then write results.")
    ] = False,
    poll_interval: Annotated[
        float | None,
        typer.Option(help="First pause between polls with --wait (grows by the backoff factor)."),
    ] = None,
    poll_backoff: Annotated[
        float | None,
        typer.Option(help="Factor by which the pause grows (1 keeps it constant; default 1.5)."),
    ] = None,
    out: OutOption = None,
) -> None:
    """Submit INPUT on a new thread (or --thread), or resume --thread; with --wait, finish it."""
    overrides = {
        "provider": provider,
        "model": model,
        "system_prompt": system,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "base_url": base_url,
        "poll_interval_seconds": poll_interval,
        "poll_backoff": poll_backoff,
    }
    context = _context(overrides)
    if input_file is None and thread is None:
        raise CliError("give an INPUT file to submit, or --thread ID to resume")
    if input_file is not None and not input_file.is_file():
        raise CliError(f"{input_file}: file not found")
    thread_id = thread or str(uuid.uuid4())
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    with open_graph(db) as graph:
        if input_file is None:
            thread_values(graph, thread_id)  # fail clearly on an unknown thread
        # The graph streams the file itself: any size, never loaded into state.
        graph_input = {"input_path": str(input_file.resolve())} if input_file else {}
        values = _advance(graph, config, context, graph_input)
        _print_progress(thread_id, values, to_stderr=wait and out is None)
        if wait:
            values = _wait_until_done(graph, config, context, values, thread_id)
            _write_results(graph, thread_id, values, out)
            _print_summary(values)


@app.command()
def cancel(
    thread: Annotated[str, typer.Argument(help="Thread ID printed by `run`.")],
    db: DbOption = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait", help="Wait through 'cancelling' and collect partial results."
        ),
    ] = True,
    poll_interval: Annotated[float | None, typer.Option(help="First pause between polls.")] = None,
) -> None:
    """Cancel a thread's provider jobs and collect whatever partial results exist."""
    context = Context() if poll_interval is None else Context(poll_interval_seconds=poll_interval)
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    with open_graph(db) as graph:
        values = thread_values(graph, thread)
        if values.get("status") in TERMINAL_THREAD_STATUSES:
            raise CliError(
                f"thread {thread} is already {values.get('status')!r}; nothing to cancel"
            )
        values = _advance(graph, config, context, {"cancel": True})
        _print_progress(thread, values, to_stderr=True)
        if wait:
            values = _wait_until_done(graph, config, context, values, thread)
            _print_summary(values)


@app.command()
def status(
    thread: Annotated[str, typer.Argument(help="Thread ID printed by `run`.")],
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a thread's status, job IDs, provider status and request counts (as last polled)."""
    with open_graph(db) as graph:
        values = thread_values(graph, thread)
    report = status_report(thread, values)
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"thread {thread}: {report['status']}")
    for column in ("job", "provider", "model", "provider status", "succeeded", "failed", "total"):
        table.add_column(column)
    for job in report["jobs"]:
        c = job["counts"]
        provider = job["provider"] + (" (emulator)" if job["emulated"] else "")
        table.add_row(
            job["job_id"],
            provider,
            job["model"],
            job["provider_status"],
            str(c["succeeded"]),
            str(c["failed"]),
            str(c["total"]),
        )
    Console(highlight=False).print(table)
    if report["error"]:
        err.print(f"error: {report['error']}")


@app.command()
def results(
    thread: Annotated[str, typer.Argument(help="Thread ID printed by `run`.")],
    db: DbOption = None,
    out: OutOption = None,
) -> None:
    """Write a finished thread's results as JSONL, one line per request, in input order."""
    with open_graph(db) as graph:
        values = thread_values(graph, thread)
        if values.get("status") not in TERMINAL_THREAD_STATUSES:
            raise CliError(
                f"thread {thread} is {values.get('status')!r}: results are not collected yet (run `batch-agent run --thread {thread} --wait`)"
            )
        _write_results(graph, thread, values, out)


@app.command()
def plan(
    input_file: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Requests file, as for `run`.")
    ],
    provider: ProviderOption = None,
    model: ModelOption = None,
    system: SystemOption = None,
    max_requests_per_job: Annotated[
        int | None, typer.Option(help="Cap on requests per job.")
    ] = None,
    max_file_bytes: Annotated[
        int | None, typer.Option(help="Cap on a job's input file size.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check INPUT and show how it would be split into jobs, without uploading anything."""
    from agent.planning import plan_requests
    from agent.providers import resolve_provider
    from agent.requests import iter_file_requests, iter_with_system_prompt

    overrides = {
        "provider": provider,
        "model": model,
        "system_prompt": system,
        "max_requests_per_job": max_requests_per_job,
        "max_file_bytes": max_file_bytes,
    }
    context = _context(overrides)
    chosen = resolve_provider(context)
    requests = iter_with_system_prompt(iter_file_requests(input_file), context.system_prompt)
    checked = plan_requests(requests, provider=chosen, context=context)
    checked.discard()
    summary = checked.summary()
    report = {
        "provider": chosen.name,
        "emulated": chosen.emulated,
        "requests": len(checked.request_ids),
        "bytes": sum(j["bytes"] for j in summary),
        "jobs": summary,
    }
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(
        title=f"plan: {report['requests']:,} requests in {len(summary)} job(s) on {chosen.name}"
    )
    for column in ("job", "model", "requests", "bytes"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for job in summary:
        table.add_row(str(job["part"]), job["model"], f"{job['requests']:,}", f"{job['bytes']:,}")
    Console(highlight=False).print(table)


@emulator_app.command("serve")
def emulator_serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    state_dir: EmulatorDirOption = None,
) -> None:
    """Serve the emulator over HTTP: OpenAI at /openai/v1, Mistral at /mistral."""
    from agent.emulator import serve

    def ready(actual_port: int) -> None:
        base = f"http://{host}:{actual_port}"
        typer.echo(
            f"emulator listening on {base} (openai: {base}/openai/v1, mistral: {base}/mistral)"
        )
        sys.stdout.flush()

    serve(host=host, port=port, state_dir=state_dir, ready=ready)


@emulator_app.command("jobs")
def emulator_jobs(
    state_dir: EmulatorDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the jobs the emulator holds (both protocols)."""
    from agent.emulator import list_jobs

    jobs = list_jobs(state_dir)
    if as_json:
        typer.echo(json.dumps(jobs))
        return
    for job in jobs:
        typer.echo(
            f"{job['provider']:8} {job['id']}  {job['status']:12} {job['request_count']} requests"
        )


def status_report(thread_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """Return the `status --json` object for a thread's state values."""
    jobs = values.get("jobs") or []
    return {
        "thread_id": thread_id,
        "status": values.get("status", "new"),
        "jobs": [
            {
                k: job[k]
                for k in (
                    "job_id",
                    "provider",
                    "model",
                    "emulated",
                    "provider_status",
                    "status",
                    "counts",
                    "created_at",
                    "errors",
                )
            }
            for job in jobs
        ],
        "counts": values.get("counts") or {"total": 0, "succeeded": 0, "failed": 0, "pending": 0},
        "usage": values.get("usage"),
        "attempt": values.get("attempt", 1),
        "polls": values.get("polls", 0),
        "error": values.get("error"),
    }


def _context(overrides: dict[str, Any]) -> Context:
    """Build the run context from the flags that were given (unset flags keep the defaults)."""
    return Context(**{k: v for k, v in overrides.items() if v is not None})


def _advance(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    config: RunnableConfig,
    context: Context,
    graph_input: dict[str, Any],
) -> dict[str, Any]:
    """Invoke the thread once and return its state (a run that only ends writes no output).

    Raises:
        CliError: The run stopped on a provider error; the message says how to resume.
    """
    from agent.persistence import active_thread_lock

    thread_id = str(config.get("configurable", {}).get("thread_id"))
    # One worker at a time runs a thread: one that waited here starts from the other's checkpoint.
    with active_thread_lock(thread_id):
        # durability="sync": each step's checkpoint is on disk before the next provider call.
        graph.invoke(graph_input, config, context=context, durability="sync")
        values = dict(graph.get_state(config).values)
    if values.get("status") == "error":
        raise CliError(
            f"{values.get('error')} [thread {thread_id}; resume: batch-agent run --thread {thread_id} --wait]"
        )
    return values


def _wait_until_done(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    config: RunnableConfig,
    context: Context,
    values: dict[str, Any],
    thread_id: str,
) -> dict[str, Any]:
    """Re-invoke the thread with growing pauses until it reaches a terminal status."""
    checks = 0
    while values.get("status") not in TERMINAL_THREAD_STATUSES:
        time.sleep(context.next_poll_interval(checks))
        checks += 1
        values = _advance(graph, config, context, {})
        _print_progress(thread_id, values, to_stderr=True)
    return values


def _write_results(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    thread_id: str,
    values: dict[str, Any],
    out: Path | None,
) -> None:
    """Stream a thread's results from the store as JSONL, page by page.

    The store keeps each result as the very line this command prints, so pages are copied out
    without decoding a single result.
    """
    from agent.bulk import ThreadData

    count = int(values.get("request_count") or 0)
    lines = (line + b"\n" for line in ThreadData(graph.store, thread_id).iter_result_lines(count))
    if out is None:
        sys.stdout.buffer.writelines(lines)
        sys.stdout.flush()
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        fh.writelines(lines)
    err.print(f"wrote {count} results to {out}")


def _print_progress(thread_id: str, values: dict[str, Any], *, to_stderr: bool) -> None:
    counts = values.get("counts") or {}
    jobs = ", ".join(
        f"{j['job_id']} ({j['provider_status'] or 'created'})" for j in values.get("jobs") or []
    )
    line = (
        f"thread {thread_id}  status {values.get('status')}  "
        f"succeeded {counts.get('succeeded', 0)}/{counts.get('total', 0)} failed {counts.get('failed', 0)}  jobs: {jobs}"
    )
    if to_stderr:
        err.print(line)
    else:
        typer.echo(line)


def _print_summary(values: dict[str, Any]) -> None:
    counts = values.get("counts") or {}
    usage = values.get("usage") or {}
    table = Table(title="batch summary")
    for column in ("status", "succeeded", "failed", "input tokens", "output tokens"):
        table.add_column(column)
    table.add_row(
        str(values.get("status")),
        str(counts.get("succeeded", 0)),
        str(counts.get("failed", 0)),
        str(usage.get("input_tokens", 0)),
        str(usage.get("output_tokens", 0)),
    )
    err.print(table)


def main() -> None:
    """Entry point of the `batch-agent` console script: one-line errors, non-zero exit codes."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpx2", "openai", "mistralai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app()
    except KeyboardInterrupt:
        err.print(
            "interrupted: the thread is saved; resume it with `batch-agent run --thread ID --wait`"
        )
        raise SystemExit(130) from None
    except Exception as exc:  # one line for the user, never a traceback with local variables
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
