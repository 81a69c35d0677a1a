"""The `batch-agent` command: run the batch graph standalone with a SQLite checkpointer.

Every command opens the same checkpoint database (`--db`, `BATCH_AGENT_DB`, default
`.batch-agent/checkpoints.sqlite`), so a batch submitted by one process can be inspected and
resumed by any other. Human-readable progress goes to stderr; machine output (results JSONL,
`--json`) goes to stdout or `--out`.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent.cli_progress import WaitDisplay, progress_line, summary_table
from agent.context import Context
from agent.export import ResultFormat
from agent.statuses import TERMINAL_THREAD_STATUSES

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph.state import CompiledStateGraph

    from agent.remote import RemoteBatch


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
ProviderOption = Annotated[
    str | None, typer.Option(help="openai, mistral, anthropic, emulator or auto.")
]
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
    Path | None, typer.Option("--out", help="Write results to this file instead of stdout.")
]
FormatOption = Annotated[
    ResultFormat,
    typer.Option(
        "--format",
        help="Results as JSONL (one object per request) or CSV (id, status, content, input_tokens, output_tokens, error).",
    ),
]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="BATCH_AGENT_URL",
        help="Drive the graph served at this LangGraph Server URL (key: $LANGGRAPH_API_KEY) instead of a local one.",
    ),
]
MaxCostOption = Annotated[
    float | None,
    typer.Option(
        help="Budget in USD: refuse before uploading when the estimated batch cost exceeds it."
    ),
]
DedupeOption = Annotated[
    bool | None,
    typer.Option(
        "--dedupe/--no-dedupe",
        help="Send requests with identical bodies once and give every id the answer (default: on).",
    ),
]
WebhookOption = Annotated[
    str | None,
    typer.Option(
        help="POST a small notice here once the results are collected (remembered by the thread).",
    ),
]
PriceOverrideOption = Annotated[
    str | None,
    typer.Option(
        help='Prices instead of genai-prices\', as JSON: {"MODEL" or "*": {"batch": [IN, OUT], "realtime": [IN, OUT]}} USD per million tokens.'
    ),
]

ToolsOption = Annotated[
    Path | None,
    typer.Option(
        "--tools",
        help="JSON file with a list of tool definitions (OpenAI function tools) bound to every request; answers carry tool_calls.",
    ),
]
SchemaOption = Annotated[
    Path | None,
    typer.Option(
        "--schema",
        help="JSON file with the answer's JSON schema (top-level title = its name); answers are parsed into 'parsed' as with_structured_output(...).invoke() parses them.",
    ),
]
ToolChoiceOption = Annotated[
    str | None, typer.Option(help="With --tools: a tool name, auto, any/required or none.")
]
SchemaMethodOption = Annotated[
    str | None,
    typer.Option(
        help="With --schema: json_schema, function_calling or json_mode (default: the provider's)."
    ),
]
StrictOption = Annotated[
    bool | None,
    typer.Option("--strict/--no-strict", help="OpenAI strict mode for --tools/--schema."),
]
ValidateSchemaOption = Annotated[
    bool,
    typer.Option(
        "--validate-schema",
        help="With --schema: also fail answers whose parsed JSON does not match the schema (code 'schema'); realtime .invoke() does not validate, so this is off by default.",
    ),
]


NO_COUNTS = {"total": 0, "succeeded": 0, "failed": 0, "pending": 0}
# `run --wait`: the thread finished, its results are written, but some or all requests failed.
EXIT_FAILED_REQUESTS = 3


class CliError(Exception):
    """An error reported as one line on stderr with exit code 1."""


def open_graph(
    db: Path | str | None, *, existing: bool = False
) -> AbstractContextManager[CompiledStateGraph[Any, Any, Any, Any]]:
    """Compile the batch graph on `db`: a SQLite file or a `postgresql://` URL.

    Args:
        db: `--db` (None: `BATCH_AGENT_DB`, else the default file).
        existing: Only read threads: a SQLite file that does not exist is an error, rather than
            a new empty database left behind by a mistyped path.
    """
    from agent.persistence import open_batch_graph, resolve_db

    resolved = resolve_db(db)
    if existing and isinstance(resolved, Path) and not resolved.is_file():
        raise CliError(
            f"no checkpoint database at {resolved}: name the one `run` used with --db or "
            "BATCH_AGENT_DB"
        )
    return open_batch_graph(resolved)


def thread_values(graph: CompiledStateGraph[Any, Any, Any, Any], thread_id: str) -> dict[str, Any]:
    """Return a thread's state values, or raise if the database has no such thread."""
    from agent.remote import holds_batch

    values = graph.get_state({"configurable": {"thread_id": thread_id}}).values
    if not holds_batch(values):
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
    max_cost: MaxCostOption = None,
    price_override: PriceOverrideOption = None,
    dedupe: DedupeOption = None,
    webhook_url: WebhookOption = None,
    url: UrlOption = None,
    server_input: Annotated[
        str | None,
        typer.Option(
            help="With --url: a request file on the server's file system (any size), instead of sending INPUT inline.",
        ),
    ] = None,
    fmt: FormatOption = ResultFormat.jsonl,
    tools: ToolsOption = None,
    schema: SchemaOption = None,
    tool_choice: ToolChoiceOption = None,
    schema_method: SchemaMethodOption = None,
    strict: StrictOption = None,
    validate_schema: ValidateSchemaOption = False,
    allow_failures: Annotated[
        bool,
        typer.Option(
            "--allow-failures",
            help=f"With --wait: exit 0 even when requests failed (else {EXIT_FAILED_REQUESTS}).",
        ),
    ] = False,
) -> None:
    """Submit INPUT on a new thread (or --thread), or resume --thread; with --wait, finish it.

    With --wait the exit code is 0 when every request succeeded, 3 when the thread finished
    with failed requests (their results and errors are written all the same; --allow-failures
    makes that 0), 1 on an error and 130 on Ctrl-C.
    """
    overrides = {
        "validate_schema": True if validate_schema else None,
        "max_cost": max_cost,
        "price_override": price_override,
        "dedupe": dedupe,
        "webhook_url": webhook_url,
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
    spec_input = _spec_input(input_file, tools, schema, tool_choice, schema_method, strict)
    if url:
        _remote_run(
            url,
            input_file,
            server_input,
            spec_input,
            thread,
            overrides,
            wait=wait,
            out=out,
            fmt=fmt,
            allow_failures=allow_failures,
        )
        return
    if server_input is not None:
        raise CliError("--server-input needs --url (locally, give the file as INPUT)")
    if input_file is None and thread is None:
        raise CliError("give an INPUT file to submit, or --thread ID to resume")
    if input_file is not None and not input_file.is_file():
        raise CliError(f"{input_file}: file not found")
    thread_id = thread or str(uuid.uuid4())
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    with (
        _storage_errors_say_where(thread_id, db=db, input_file=input_file),
        _resume_hint_on_interrupt(thread_id, db=db),
        open_graph(db, existing=input_file is None) as graph,
    ):
        if input_file is None:
            thread_values(graph, thread_id)  # fail clearly on an unknown thread
        # The graph streams the file itself: any size, never loaded into state.
        graph_input = {"input_path": str(input_file.resolve()), **spec_input} if input_file else {}
        if input_file and thread is None:
            graph_input["new_thread"] = True  # a made-up id: no earlier life to look for jobs of
        if not wait:
            values = _advance(graph, config, context, graph_input)
            _print_progress(thread_id, values, to_stderr=False)
            return
        with WaitDisplay(err, thread_id) as display:
            values = _advance(graph, config, context, graph_input, display.event)
            values = _wait_until_done(graph, config, context, values, display)
        _write_results(graph, thread_id, values, out, fmt)
        _print_summary(values, display.elapsed())
    _exit_on_failed_requests(values, allow_failures)


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
    url: UrlOption = None,
) -> None:
    """Cancel a thread's provider jobs and collect whatever partial results exist."""
    context = Context() if poll_interval is None else Context(poll_interval_seconds=poll_interval)
    if url:
        _remote_cancel(url, thread, context, wait=wait)
        return
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    with (
        _storage_errors_say_where(thread, db=db, command="cancel"),
        open_graph(db, existing=True) as graph,
    ):
        values = thread_values(graph, thread)
        if values.get("status") in TERMINAL_THREAD_STATUSES:
            raise CliError(
                f"thread {thread} is already {values.get('status')!r}; nothing to cancel"
            )
        values = _advance(graph, config, context, {"cancel": True})
        _print_progress(thread, values, to_stderr=True)
        if wait:
            with WaitDisplay(err, thread) as display:
                values = _wait_until_done(graph, config, context, values, display)
            _print_summary(values, display.elapsed())


@app.command()
def status(
    thread: Annotated[str, typer.Argument(help="Thread ID printed by `run`.")],
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    url: UrlOption = None,
) -> None:
    """Show a thread's status, job IDs, provider status and request counts (as last polled)."""
    if url:
        values = _remote(url).thread_values(thread)
    else:
        with open_graph(db, existing=True) as graph:
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
    cost = _cost_line(values)
    if cost:
        typer.echo(cost)
    if report["error"]:
        err.print(f"error: {report['error']}")


@app.command()
def threads(
    db: DbOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many threads.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
    url: UrlOption = None,
) -> None:
    """List the batch threads in the database (or on --url), newest first, with their status."""
    if url:
        rows = _remote(url).list_threads(limit)
    else:
        with open_graph(db, existing=True) as graph:
            rows = _local_threads(graph, limit)
    reports = [thread_summary(thread_id, values, updated) for thread_id, values, updated in rows]
    if as_json:
        typer.echo(json.dumps(reports))
        return
    if not reports:
        err.print("no batch threads yet: `batch-agent run INPUT` starts one")
        return
    # Plain lines, not a table: the full thread id must survive a narrow or piped terminal.
    for r in reports:
        c = r["counts"]
        typer.echo(
            f"{r['updated_at'][:16].replace('T', ' ')}  {r['thread_id']}  {r['status']:<10} "
            f"succeeded {c.get('succeeded', 0)}/{c.get('total', 0)}  failed {c.get('failed', 0)}  "
            f"jobs {r['jobs']}"
        )


def _local_threads(
    graph: CompiledStateGraph[Any, Any, Any, Any], limit: int
) -> list[tuple[str, dict[str, Any], str]]:
    """Return `(thread id, state values, last checkpoint time)` of the newest `limit` threads."""
    from agent.bulk import stored_thread_ids
    from agent.remote import holds_batch

    rows: list[tuple[str, dict[str, Any], str]] = []
    if graph.store is None:  # `open_batch_graph` always gives one; a bare compile may not
        return rows
    for thread_id in stored_thread_ids(graph.store):
        snapshot = graph.get_state({"configurable": {"thread_id": thread_id}})
        values = snapshot.values
        if holds_batch(values):
            rows.append((thread_id, dict(values), str(snapshot.created_at)))
    rows.sort(key=lambda row: row[2], reverse=True)
    return rows[:limit]


@app.command()
def results(
    thread: Annotated[str, typer.Argument(help="Thread ID printed by `run`.")],
    db: DbOption = None,
    out: OutOption = None,
    fmt: FormatOption = ResultFormat.jsonl,
    url: UrlOption = None,
) -> None:
    """Write a finished thread's results (JSONL or CSV), one per request, in input order."""
    if url:
        remote = _remote(url)
        values = remote.thread_values(thread)
        _require_collected(thread, values, url)
        count = int(values.get("request_count") or 0)
        _write_pages(remote.iter_result_pages(thread, values), count, out, fmt)
        return
    with open_graph(db, existing=True) as graph:
        values = thread_values(graph, thread)
        _require_collected(thread, values, None)
        _write_results(graph, thread, values, out, fmt)


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
    max_tokens: Annotated[
        int | None, typer.Option(help="Output cap per request (bounds the output cost).")
    ] = None,
    max_cost: MaxCostOption = None,
    price_override: PriceOverrideOption = None,
    dedupe: DedupeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    tools: ToolsOption = None,
    schema: SchemaOption = None,
    tool_choice: ToolChoiceOption = None,
    schema_method: SchemaMethodOption = None,
    strict: StrictOption = None,
    validate_schema: ValidateSchemaOption = False,
) -> None:
    """Check INPUT; show its jobs, estimated tokens and cost, without uploading anything.

    With --max-cost, exits non-zero (after the report) when `run` would refuse the batch.
    --validate-schema is taken as `run` takes it; it changes how answers are read, not the plan.
    """
    from agent.estimate import check_budget, describe, price_plan
    from agent.planning import plan_requests
    from agent.pricing import format_usd
    from agent.providers import resolve_provider
    from agent.requests import InputError, iter_file_requests, iter_with_system_prompt

    overrides = {
        "validate_schema": True if validate_schema else None,
        "provider": provider,
        "model": model,
        "system_prompt": system,
        "max_requests_per_job": max_requests_per_job,
        "max_file_bytes": max_file_bytes,
        "max_tokens": max_tokens,
        "max_cost": max_cost,
        "price_override": price_override,
        "dedupe": dedupe,
    }
    context = _context(overrides)
    chosen = resolve_provider(context)
    requests = iter_with_system_prompt(iter_file_requests(input_file), context.system_prompt)
    from agent.structured import OutputSpec

    spec = OutputSpec.from_values(
        _spec_input(input_file, tools, schema, tool_choice, schema_method, strict)
    )
    checked = plan_requests(requests, provider=chosen, context=context, spec=spec)
    checked.discard()
    summary, estimate = price_plan(checked.summary(), chosen.name, context.price_override)
    try:
        check_budget(estimate, context.max_cost)
        refused = None
    except InputError as exc:
        refused = str(exc)
    from agent.planning import dedup_estimate

    dedup = dedup_estimate(checked, chosen.name, context)
    report = {
        "provider": chosen.name,
        "emulated": chosen.emulated,
        "requests": len(checked.request_ids),
        "bytes": sum(j["bytes"] for j in summary),
        "jobs": summary,
        "dedup": dedup,
        "estimate": estimate,
        "max_cost": context.max_cost,
        "refused": refused,
    }
    if as_json:
        typer.echo(json.dumps(report))
    else:
        table = Table(
            title=f"plan: {report['requests']:,} requests in {len(summary)} job(s) on {chosen.name}"
        )
        columns = ("job", "model", "requests", "bytes", "input tokens", "batch", "realtime")
        for column in columns:
            table.add_column(column, justify="right" if column != "model" else "left")
        for job in summary:
            table.add_row(
                str(job["part"]),
                job["model"],
                f"{job['requests']:,}",
                f"{job['bytes']:,}",
                f"{job['input_tokens']:,}",
                format_usd(job["batch_usd"]),
                format_usd(job["realtime_usd"]),
            )
        Console(highlight=False).print(table)
        typer.echo(describe(estimate))
        if dedup:
            typer.echo(_dedup_line(dedup))
    if refused:
        raise CliError(refused)


@emulator_app.command("serve")
def emulator_serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    state_dir: EmulatorDirOption = None,
) -> None:
    """Serve the emulator over HTTP: OpenAI at /openai/v1, Mistral at /mistral, Anthropic at /anthropic."""
    from agent.emulator import serve

    def ready(actual_port: int) -> None:
        base = f"http://{host}:{actual_port}"
        typer.echo(
            f"emulator listening on {base} (openai: {base}/openai/v1, mistral: {base}/mistral, "
            f"anthropic: {base}/anthropic)"
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


def thread_summary(thread_id: str, values: dict[str, Any], updated_at: str) -> dict[str, Any]:
    """Return one `threads --json` entry: id, status, counts, number of jobs, last update."""
    return {
        "thread_id": thread_id,
        "status": values.get("status", "new"),
        "counts": values.get("counts") or dict(NO_COUNTS),
        "jobs": len(values.get("jobs") or []),
        "updated_at": updated_at,
    }


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
            | {"cost": job.get("cost")}
            for job in jobs
        ],
        "counts": values.get("counts") or dict(NO_COUNTS),
        "usage": values.get("usage"),
        "cost": values.get("cost"),
        "estimate": values.get("estimate"),
        "attempt": values.get("attempt", 1),
        "polls": values.get("polls", 0),
        "error": values.get("error"),
    }


def _spec_input(
    input_file: Path | None,
    tools: Path | None,
    schema: Path | None,
    tool_choice: str | None,
    schema_method: str | None,
    strict: bool | None,
) -> dict[str, Any]:
    """Read and check `--tools` / `--schema` (naming the bad file) into graph input fields.

    Every field is present, None when not given, so input re-sent to a thread without the
    flags is a different request set from one sent with them.
    """
    options = {"tool_choice": tool_choice, "schema_method": schema_method, "strict": strict}
    if input_file is None:
        if tools is not None or schema is not None or any(v is not None for v in options.values()):
            raise CliError("--tools/--schema and their options go with a new INPUT file")
        return {}
    from agent.structured import SPEC_KEYS, spec_from_files

    spec = spec_from_files(tools, schema, **options)
    values = spec.to_state() if spec else {}
    return {key: values.get(key) for key in SPEC_KEYS}


def _context(overrides: dict[str, Any]) -> Context:
    """Build the run context from the flags that were given (unset flags keep the defaults)."""
    return Context(**{k: v for k, v in overrides.items() if v is not None})


def _advance(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    config: RunnableConfig,
    context: Context,
    graph_input: dict[str, Any],
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the thread once and return its state (a run that only ends writes no output).

    `on_event` receives the run's custom stream events (`batch_progress` after each check).

    Raises:
        CliError: The run stopped on a provider error; the message says how to resume.
    """
    from agent.persistence import active_thread_lock

    thread_id = str(config.get("configurable", {}).get("thread_id"))
    # One worker at a time runs a thread: one that waited here starts from the other's checkpoint.
    with active_thread_lock(thread_id):
        # durability="sync": each step's checkpoint is on disk before the next provider call.
        for event in graph.stream(
            graph_input, config, context=context, durability="sync", stream_mode="custom"
        ):
            if on_event is not None and isinstance(event, dict):
                on_event(event)
        values = dict(graph.get_state(config).values)
    if values.get("status") == "error":
        raise CliError(
            f"{values.get('error')} [thread {thread_id}; resume: batch-agent run --thread {thread_id} --wait]"
        )
    return values


@contextmanager
def _resume_hint_on_interrupt(
    thread_id: str, *, db: str | None = None, url: str | None = None
) -> Iterator[None]:
    """Turn Ctrl-C into the commands that pick the thread up again (exit code 130).

    Typer ends an interrupted command with 130 and not a word. Nothing is lost (every step is
    checkpointed before the next provider call, and the jobs run on at the provider), but the
    user needs the thread id to get back to it.
    """
    try:
        yield
    except KeyboardInterrupt:
        from agent.persistence import redact_db_url

        # A --db given on the command line is repeated (a PostgreSQL password as ***).
        where = f" --url {url}" if url else f" --db {redact_db_url(db)}" if db else ""
        err.print(
            f"interrupted: thread {thread_id} is saved and its jobs run on at the provider; "
            f"resume: batch-agent run{where} --thread {thread_id} --wait "
            f"(or stop them: batch-agent cancel {thread_id}{where})"
        )
        raise typer.Exit(130) from None


@contextmanager
def _storage_errors_say_where(
    thread_id: str, *, db: str | None, input_file: Path | None = None, command: str = "run"
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
        where = f" --db {redact_db_url(db)}" if db else ""
        if command == "cancel":
            again = f"batch-agent cancel {thread_id}{where}"
        else:
            # With INPUT, the same command: it also works if the thread holds nothing yet.
            source = f" {input_file}" if input_file is not None else ""
            again = f"batch-agent run{source}{where} --thread {thread_id} --wait"
        raise CliError(
            f"{described.problem}. Thread {thread_id} keeps what was saved; "
            f"{described.remedy}, then run again: {again}"
        ) from None


def _wait_until_done(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    config: RunnableConfig,
    context: Context,
    values: dict[str, Any],
    display: WaitDisplay,
) -> dict[str, Any]:
    """Re-run the thread with growing pauses until it reaches a terminal status."""
    checks = 0
    while values.get("status") not in TERMINAL_THREAD_STATUSES:
        pause = context.next_poll_interval(checks)
        display.values(values, pause)
        time.sleep(pause)
        checks += 1
        values = _advance(graph, config, context, {}, display.event)
    display.values(values, None)
    return values


def _write_results(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    thread_id: str,
    values: dict[str, Any],
    out: Path | None,
    fmt: ResultFormat = ResultFormat.jsonl,
) -> None:
    """Stream a thread's results from the store as JSONL or CSV, page by page.

    The store keeps each result as the very line JSONL output prints, so pages are copied out
    without decoding a single result.
    """
    from agent.bulk import ThreadData

    count = int(values.get("request_count") or 0)
    pages = ThreadData(graph.store, thread_id).iter_result_pages(count)
    _write_pages(pages, count, out, fmt)


def _write_pages(pages: Iterator[bytes], count: int, out: Path | None, fmt: ResultFormat) -> None:
    """Write result pages (local or remote) to `out`, else stdout, in `fmt`."""
    from agent.export import write_results

    if out is None:
        write_results(pages, sys.stdout.buffer, fmt)
        sys.stdout.flush()
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        write_results(pages, fh, fmt)
    err.print(f"wrote {count} results to {out}")


def _require_collected(thread_id: str, values: dict[str, Any], url: str | None) -> None:
    """Refuse to write results of a thread that has not collected them yet."""
    if values.get("status") not in TERMINAL_THREAD_STATUSES:
        where = f" --url {url}" if url else ""
        raise CliError(
            f"thread {thread_id} is {values.get('status')!r}: results are not collected yet (run `batch-agent run{where} --thread {thread_id} --wait`)"
        )


# --------------------------------------------------------------------------- --url (served graph)


def _remote(url: str) -> RemoteBatch:
    """Connect to the served graph at `url` (`agent.remote`)."""
    from agent.remote import RemoteBatch

    return RemoteBatch(url)


def _remote_advance(
    remote: RemoteBatch, thread_id: str, graph_input: Any, context: dict[str, Any]
) -> dict[str, Any]:
    """Run the served thread once; a run that stopped on a provider error fails like locally."""
    values = remote.advance(thread_id, graph_input, context)
    if values.get("status") == "error":
        raise CliError(
            f"{values.get('error')} [thread {thread_id}; resume: batch-agent run --url {remote.url} --thread {thread_id} --wait]"
        )
    return values


def _remote_run(
    url: str,
    input_file: Path | None,
    server_input: str | None,
    spec_input: dict[str, Any],
    thread: str | None,
    overrides: dict[str, Any],
    *,
    wait: bool,
    out: Path | None,
    fmt: ResultFormat,
    allow_failures: bool = False,
) -> None:
    """`run --url`: submit (inline records or a server-side path) or resume a served thread.

    `spec_input` (`--tools` / `--schema`, read locally) goes with the records, as locally.
    """
    from agent.remote import inline_requests

    if input_file is not None and server_input is not None:
        raise CliError("give INPUT or --server-input, not both")
    if input_file is None and server_input is None and thread is None:
        raise CliError("give an INPUT file to submit, or --thread ID to resume")
    if input_file is not None and not input_file.is_file():
        raise CliError(f"{input_file}: file not found")
    # Only the flags given go to the server: its own defaults (and environment) apply otherwise.
    run_context = {k: v for k, v in overrides.items() if v is not None}
    graph_input: dict[str, Any] = {}
    if input_file is not None:
        # Validated here, before anything is sent: file, line and request id in every error.
        graph_input = {"requests": inline_requests(input_file), **spec_input}
    elif server_input is not None:
        graph_input = {"input_path": server_input, **spec_input}
    remote = _remote(url)
    if graph_input:
        thread_id = remote.create_thread(thread)
        if thread is None:
            graph_input["new_thread"] = True  # the server made the id: no earlier life
    else:
        thread_id = str(thread)
        remote.thread_values(thread_id)  # fail clearly on an unknown thread
    with _resume_hint_on_interrupt(thread_id, url=url):
        values = _remote_advance(remote, thread_id, graph_input, run_context)
        if not wait:
            _print_progress(thread_id, values, to_stderr=False)
            return
        with WaitDisplay(err, thread_id) as display:
            values = _remote_wait(
                remote, thread_id, _context(overrides), run_context, values, display
            )
    _require_collected(thread_id, values, url)
    pages = remote.iter_result_pages(thread_id, values)
    _write_pages(pages, int(values.get("request_count") or 0), out, fmt)
    _print_summary(values, display.elapsed())
    _exit_on_failed_requests(values, allow_failures)


def _remote_cancel(url: str, thread_id: str, context: Context, *, wait: bool) -> None:
    """`cancel --url`: cancel a served thread's jobs, then (by default) wait for the partial results."""
    remote = _remote(url)
    values = remote.thread_values(thread_id)
    if values.get("status") in TERMINAL_THREAD_STATUSES:
        raise CliError(f"thread {thread_id} is already {values.get('status')!r}; nothing to cancel")
    values = _remote_advance(remote, thread_id, {"cancel": True}, {})
    _print_progress(thread_id, values, to_stderr=True)
    if wait:
        run_context = {"poll_interval_seconds": context.poll_interval_seconds}
        with WaitDisplay(err, thread_id) as display:
            values = _remote_wait(remote, thread_id, context, run_context, values, display)
        _print_summary(values, display.elapsed())


def _remote_wait(
    remote: RemoteBatch,
    thread_id: str,
    context: Context,
    run_context: dict[str, Any],
    values: dict[str, Any],
    display: WaitDisplay,
) -> dict[str, Any]:
    """Poll a served thread to a terminal status, with the local mode's backoff."""
    values = remote.wait_until_done(thread_id, context, run_context, values, display.values)
    if values.get("status") == "error":
        raise CliError(
            f"{values.get('error')} [thread {thread_id}; resume: batch-agent run --url {remote.url} --thread {thread_id} --wait]"
        )
    return values


def _exit_on_failed_requests(values: dict[str, Any], allow_failures: bool) -> None:
    """End `run --wait` with `EXIT_FAILED_REQUESTS` when the finished thread has failed requests.

    A script that checks only the exit code must not take a batch in which every request was
    refused for a success; the results (with each error) are already written.
    """
    counts = values.get("counts") or {}
    failed = int(counts.get("failed") or 0)
    if not failed and values.get("status") != "failed":
        return
    total = int(counts.get("total") or 0)
    if allow_failures:
        err.print(f"{failed:,} of {total:,} requests failed (allowed by --allow-failures)")
        return
    err.print(
        f"{failed:,} of {total:,} requests failed (their errors are in the results): exit code "
        f"{EXIT_FAILED_REQUESTS}; --allow-failures exits 0"
    )
    raise typer.Exit(EXIT_FAILED_REQUESTS)


def _print_progress(thread_id: str, values: dict[str, Any], *, to_stderr: bool) -> None:
    line = progress_line(
        thread_id, values.get("status"), values.get("counts") or {}, values.get("jobs") or []
    )
    if to_stderr:
        err.print(line)
    else:
        typer.echo(line)


def _print_summary(values: dict[str, Any], elapsed: float | None = None) -> None:
    err.print(summary_table(values, elapsed))
    if values.get("dedup"):
        err.print(_dedup_line(values["dedup"]))
    line = _cost_line(values)
    if line:
        err.print(line)


def _dedup_line(dedup: Mapping[str, Any]) -> str:
    """Describe identical requests sent once (planned, or collected) in one line."""
    from agent.pricing import format_usd

    if dedup.get("saved_batch_usd") is not None:
        saved = (
            f"saved {format_usd(dedup['saved_batch_usd'])} at the batch price "
            f"({format_usd(dedup['saved_realtime_usd'])} realtime)"
        )
    else:
        saved = f"estimated saving {format_usd(dedup.get('estimated_batch_usd'))}"
    return f"duplicates: {dedup['requests']:,} identical requests sent once; {saved}"


def _cost_line(values: dict[str, Any]) -> str | None:
    """Describe the collected cost (or, before collection, the estimate) in one line."""
    from agent.estimate import describe
    from agent.pricing import format_usd

    cost = values.get("cost")
    if not cost:
        estimate = values.get("estimate")
        return describe(estimate) if estimate else None
    line = (
        f"cost: batch {format_usd(cost['batch_usd'])}, realtime {format_usd(cost['realtime_usd'])}, "
        f"saving {format_usd(cost['saving_usd'])} ({cost['source']})"
    )
    if cost["note"]:
        line += f"; {cost['note']}"
    if any(job.get("emulated") for job in values.get("jobs") or []):
        line += "; emulated run: token counts are synthetic"
    return line


def main() -> None:
    """Entry point of the `batch-agent` console script: one-line errors, non-zero exit codes."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpx2", "openai", "mistralai", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    code: int = 0
    try:
        app()
    except SystemExit as exc:  # typer ends every command this way, 0 on success
        if isinstance(exc.code, str):
            typer.echo(exc.code, err=True)
            code = 1
        else:
            code = exc.code or 0
    except Exception as exc:  # one line for the user, never a traceback with local variables
        typer.echo(f"error: {exc}", err=True)
        code = 1
    _exit_now(code)


def _exit_now(code: int) -> None:
    """End the process without the interpreter's module teardown.

    Tearing down the ~2,000 modules LangGraph, LangChain and the SDKs import takes about half a
    second, more than many commands' own work. By now every database and file this CLI opened is
    closed by its context manager; stdio and logging are flushed and the atexit handlers run (a
    LangSmith tracer flushes there), so nothing is lost by skipping the rest.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    main()
