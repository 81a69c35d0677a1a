"""The thread commands of `batch-agent`: run, cancel, status, threads, results and plan.

Each is written once for both places a thread can live (`agent.cli.backend`: the local checkpoint
database, or a served graph with `--url`). Human-readable progress goes to stderr; machine
output (results JSONL/CSV, `--json`) goes to stdout or `--out`. Heavy modules (the graph, the
provider SDKs, LangChain) are imported inside the commands that need them, so the read-only
commands start fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from agent.cli.backend import Backend, check_input_file, open_backend
from agent.cli.errors import EXIT_FAILED_REQUESTS, CliError
from agent.cli.map_ops import cancel_map, open_map, show_map
from agent.cli.options import (
    AllowFailuresOption,
    BaseUrlOption,
    CheckModelsOption,
    DbOption,
    DeadlineMarginOption,
    DeadlineOption,
    DedupeOption,
    DimensionsOption,
    EndpointOption,
    FallbackConcurrencyOption,
    FallbackOption,
    FormatOption,
    JsonOption,
    KeepFilesOption,
    MaxCostOption,
    ModelOption,
    OutOption,
    PollBackoffOption,
    PollIntervalOption,
    PriceOverrideOption,
    ProviderOption,
    SchemaMethodOption,
    SchemaOption,
    ServerInputOption,
    StrictOption,
    SystemOption,
    ThreadArgument,
    ThreadOption,
    ToolChoiceOption,
    ToolsOption,
    UrlOption,
    ValidateSchemaOption,
    WaitOption,
    WebhookOption,
)
from agent.cli.render import (
    cost_line,
    deadline_line,
    dedup_line,
    limits_line,
    status_renderables,
    status_report,
    summary_table,
    thread_line,
    thread_summary,
)
from agent.context import Context
from agent.drive import drive_until_done
from agent.export import ResultFormat
from agent.statuses import TERMINAL_THREAD_STATUSES

if TYPE_CHECKING:
    from agent.batched.records import MapRecords
    from agent.cli.progress import WaitDisplay

err = Console(stderr=True, highlight=False, soft_wrap=True)


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
    base_url: BaseUrlOption = None,
    endpoint: EndpointOption = None,
    thread: ThreadOption = None,
    db: DbOption = None,
    wait: WaitOption = False,
    poll_interval: PollIntervalOption = None,
    poll_backoff: PollBackoffOption = None,
    out: OutOption = None,
    max_cost: MaxCostOption = None,
    price_override: PriceOverrideOption = None,
    dedupe: DedupeOption = None,
    webhook_url: WebhookOption = None,
    url: UrlOption = None,
    server_input: ServerInputOption = None,
    fmt: FormatOption = ResultFormat.jsonl,
    tools: ToolsOption = None,
    schema: SchemaOption = None,
    tool_choice: ToolChoiceOption = None,
    schema_method: SchemaMethodOption = None,
    strict: StrictOption = None,
    validate_schema: ValidateSchemaOption = False,
    check_models: CheckModelsOption = None,
    keep_files: KeepFilesOption = None,
    max_enqueued_tokens: Annotated[
        int | None,
        typer.Option(
            help="Quota: estimated input tokens a model's running jobs may hold (OpenAI's "
            "enqueued-token pool); jobs over it are sent in waves."
        ),
    ] = None,
    deadline: DeadlineOption = None,
    fallback: FallbackOption = None,
    deadline_margin: DeadlineMarginOption = None,
    fallback_concurrency: FallbackConcurrencyOption = None,
    allow_failures: AllowFailuresOption = False,
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
        "endpoint": endpoint,
        "poll_interval_seconds": poll_interval,
        "poll_backoff": poll_backoff,
        "check_models": check_models,
        "keep_files": keep_files,
        "max_enqueued_tokens": max_enqueued_tokens,
        "deadline": deadline,
        "fallback": fallback,
        "deadline_margin_seconds": deadline_margin,
        "fallback_concurrency": fallback_concurrency,
    }
    check_input_file(input_file)
    spec_input = _spec_input(input_file, tools, schema, tool_choice, schema_method, strict)
    run_thread(
        overrides,
        input_file=input_file,
        server_input=server_input,
        graph_input=spec_input,
        thread=thread,
        db=db,
        url=url,
        wait=wait,
        out=out,
        fmt=fmt,
        allow_failures=allow_failures,
    )


def run_thread(
    overrides: dict[str, Any],
    *,
    input_file: Path | None,
    server_input: str | None,
    graph_input: dict[str, Any],
    thread: str | None,
    db: str | None,
    url: str | None,
    wait: bool,
    out: Path | None,
    fmt: ResultFormat,
    allow_failures: bool,
) -> None:
    """Submit INPUT on a new thread (or `thread`), or resume it; with `wait`, finish it.

    The one body of `run` and `embed`: `overrides` are the context flags given (None: not
    given), `graph_input` what the input adds besides its file (tools, a schema, `embed`).
    """
    from agent.cli.progress import WaitDisplay

    context = _context(overrides)
    check_input_file(input_file)
    if wait:
        _check_destination(out, fmt)
    _say_what_run_does(input_file, server_input, thread)
    spec_input = graph_input
    # Served: only the flags given go to the server; its own defaults (and environment) apply
    # otherwise. Locally a thread that is only resumed must exist; a new one may make the file.
    run_context = {k: v for k, v in overrides.items() if v is not None}
    resuming = input_file is None and server_input is None
    with open_backend(db, url, context, run_context, existing=resuming) as backend:
        thread_id, graph_input = backend.start(input_file, server_input, spec_input, thread)
        with (
            backend.storage_errors(thread_id, input_file, "run"),
            _resume_hint_on_interrupt(thread_id, backend.flag),
        ):
            if not wait:
                values = backend.advance(thread_id, graph_input)
                _print_progress(thread_id, values, to_stderr=False)
                return
            with WaitDisplay(err, thread_id) as display:
                values = backend.advance(thread_id, graph_input, display.event)
                values = _wait(backend, thread_id, context, values, display)
            _require_collected(thread_id, values, backend.flag)
            _write_results(backend, thread_id, values, out, fmt)
            _print_summary(values, display.elapsed())
    _exit_on_failed_requests(values, allow_failures)


def cancel(
    thread: ThreadArgument,
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
    """Cancel a thread's provider jobs and collect whatever partial results exist.

    Given a map's id (`batch-agent map`), cancel the map: the batch threads of its round in
    flight are cancelled, nothing more is sent, and resuming it fails its waiting items.
    """
    context = Context() if poll_interval is None else Context(poll_interval_seconds=poll_interval)
    run_context = {} if poll_interval is None else {"poll_interval_seconds": poll_interval}
    with (
        open_backend(db, url, context, run_context) as backend,
        backend.storage_errors(thread, None, "cancel"),
    ):
        values, records = _thread_or_map(backend, thread)
        if records is not None:
            cancel_map(backend, records, lambda t: _cancel_thread(backend, t, context, wait), err)
            return
        if values.get("status") in TERMINAL_THREAD_STATUSES:
            raise CliError(
                f"thread {thread} is already {values.get('status')!r}; nothing to cancel"
            )
        _cancel_thread(backend, thread, context, wait)


def _thread_or_map(backend: Backend, thread: str) -> tuple[dict[str, Any], MapRecords | None]:
    """Return a batch thread's values, or ({}, its records) when the id names a map.

    Raises:
        CliError: The id is neither (the batch thread's own error).
    """
    try:
        return backend.values(thread), None
    except CliError:
        records = open_map(backend, thread)
        if records is None:
            raise
        return {}, records


def _cancel_thread(backend: Backend, thread: str, context: Context, wait: bool) -> dict[str, Any]:
    """Cancel one thread's jobs; with `wait`, wait through 'cancelling' and collect."""
    from agent.cli.progress import WaitDisplay

    values = backend.advance(thread, {"cancel": True})
    _print_progress(thread, values, to_stderr=True)
    if wait:
        with WaitDisplay(err, thread) as display:
            values = _wait(backend, thread, context, values, display)
        _print_summary(values, display.elapsed())
    return values


def status(
    thread: ThreadArgument,
    db: DbOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """Show a thread's status, job IDs, provider status and request counts (as last polled).

    Given a map's id (`batch-agent map`), show the map: its items, rounds, the batch threads
    of its round in flight (as for a thread) and its cost so far.
    """
    with open_backend(db, url, Context()) as backend:
        values, records = _thread_or_map(backend, thread)
        if records is not None:
            show_map(backend, records, as_json=as_json)
            return
    report = status_report(thread, values)
    if as_json:
        typer.echo(json.dumps(report))
        return
    out = Console(highlight=False)
    for renderable in status_renderables(report, out):
        out.print(renderable, soft_wrap=isinstance(renderable, str))
    cost = cost_line(values)
    if cost:
        typer.echo(cost)
    deadline = deadline_line(values)
    if deadline:
        typer.echo(deadline)
    if report["error"]:
        err.print(f"error: {report['error']}")


def threads(
    db: DbOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many threads.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
    url: UrlOption = None,
) -> None:
    """List the batch threads in the database (or on --url), newest first, with their status."""
    with open_backend(db, url, Context()) as backend:
        rows = backend.threads(limit)
    reports = [thread_summary(thread_id, values, updated) for thread_id, values, updated in rows]
    if as_json:
        typer.echo(json.dumps(reports))
        return
    if not reports:
        err.print("no batch threads yet: `batch-agent run INPUT` starts one")
        return
    for report in reports:
        typer.echo(thread_line(report))


def results(
    thread: ThreadArgument,
    db: DbOption = None,
    out: OutOption = None,
    fmt: FormatOption = ResultFormat.jsonl,
    url: UrlOption = None,
) -> None:
    """Write a finished thread's results (JSONL, CSV; Parquet, npy), one per request, in input order.

    Parquet and npy (an embeddings thread's float32 vectors) need --out FILE.
    """
    _check_destination(out, fmt)
    with open_backend(db, url, Context()) as backend:
        values = backend.values(thread)
        _require_collected(thread, values, backend.flag)
        _write_results(backend, thread, values, out, fmt)


def plan(
    input_file: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Requests file, as for `run`.")
    ],
    provider: ProviderOption = None,
    model: ModelOption = None,
    system: SystemOption = None,
    endpoint: EndpointOption = None,
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
    as_json: JsonOption = False,
    tools: ToolsOption = None,
    schema: SchemaOption = None,
    tool_choice: ToolChoiceOption = None,
    schema_method: SchemaMethodOption = None,
    strict: StrictOption = None,
    validate_schema: ValidateSchemaOption = False,
    check_models: CheckModelsOption = None,
    embed: Annotated[
        bool, typer.Option("--embed", help="Plan INPUT's texts as `embed` would send them.")
    ] = False,
    dimensions: DimensionsOption = None,
) -> None:
    """Check INPUT; show its jobs, estimated tokens and cost, without uploading anything.

    With --max-cost, exits non-zero (after the report) when `run` would refuse the batch.
    --validate-schema is taken as `run` takes it; it changes how answers are read, not the plan.
    """
    from rich.table import Table

    from agent.endpoints import CHAT, EMBEDDINGS
    from agent.estimate import check_budget, describe, price_plan
    from agent.planning import dedup_estimate, effective_limits, plan_requests
    from agent.pricing import format_usd
    from agent.providers import resolve_provider
    from agent.requests import InputError, iter_file_requests, iter_with_system_prompt
    from agent.structured import OutputSpec

    overrides = {
        "validate_schema": True if validate_schema else None,
        "provider": provider,
        "model": model,
        "system_prompt": system,
        "endpoint": endpoint,
        "max_requests_per_job": max_requests_per_job,
        "max_file_bytes": max_file_bytes,
        "max_tokens": max_tokens,
        "max_cost": max_cost,
        "price_override": price_override,
        "dedupe": dedupe,
        "check_models": check_models,
        "dimensions": dimensions,
    }
    context = _context(overrides)
    chosen = resolve_provider(context)
    requests = iter_with_system_prompt(iter_file_requests(input_file), context.system_prompt)
    spec = OutputSpec.from_values(
        _spec_input(input_file, tools, schema, tool_choice, schema_method, strict)
    )
    checked = plan_requests(
        requests,
        provider=chosen,
        context=context,
        spec=spec,
        endpoint=EMBEDDINGS if embed else CHAT,
        spool=False,  # nothing is uploaded: build and check every line, keep only counts
    )
    checked.discard()
    summary, estimate = price_plan(checked.summary(), chosen.name, context.price_override)
    try:
        check_budget(estimate, context.max_cost)
        refused = None
    except InputError as exc:
        refused = str(exc)
    dedup = dedup_estimate(checked, chosen.name, context)
    limits = effective_limits(chosen, context)
    report = {
        "provider": chosen.name,
        "emulated": chosen.emulated,
        # What one job may hold (the provider's documented limits, lowered by the caps given).
        "limits": {
            "max_requests": limits.max_requests,
            "max_file_bytes": limits.max_file_bytes,
            "provider_max_requests": chosen.limits.max_requests,
            "provider_max_file_bytes": chosen.limits.max_file_bytes,
        },
        "requests": checked.request_count,
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
        typer.echo(limits_line(chosen.name, report["limits"]))
        typer.echo(describe(estimate))
        if dedup:
            typer.echo(dedup_line(dedup))
    if refused:
        raise CliError(refused)


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


def _say_what_run_does(
    input_file: Path | None, server_input: str | None, thread: str | None
) -> None:
    """Print `run`'s first line at once, before LangChain, LangGraph and the SDKs are imported.

    Those imports take seconds on a slow machine; the user should see the command has started.
    """
    source = input_file if input_file is not None else server_input
    on = f" on thread {thread}" if thread else ""
    if source is not None:
        err.print(f"planning {source}{on}")
    elif thread is not None:
        err.print(f"resuming thread {thread}")


def _context(overrides: dict[str, Any]) -> Context:
    """Build the run context from the flags that were given (unset flags keep the defaults)."""
    return Context(**{k: v for k, v in overrides.items() if v is not None})


def _wait(
    backend: Backend, thread_id: str, context: Context, values: dict[str, Any], display: WaitDisplay
) -> dict[str, Any]:
    """Check the thread with the context's growing pauses until it is terminal (`agent.drive`)."""
    return drive_until_done(
        lambda: backend.check(thread_id, display.event),
        values,
        context.next_poll_interval,
        on_wait=display.values,
    )


@contextmanager
def _resume_hint_on_interrupt(thread_id: str, flag: str) -> Iterator[None]:
    """Turn Ctrl-C into the commands that pick the thread up again (exit code 130).

    Typer ends an interrupted command with 130 and not a word. Nothing is lost (every step is
    checkpointed before the next provider call, and the jobs run on at the provider), but the
    user needs the thread id to get back to it.
    """
    try:
        yield
    except KeyboardInterrupt:
        err.print(
            f"interrupted: thread {thread_id} is saved and its jobs run on at the provider; "
            f"resume: batch-agent run{flag} --thread {thread_id} --wait "
            f"(or stop them: batch-agent cancel {thread_id}{flag})"
        )
        raise typer.Exit(130) from None


def _write_results(
    backend: Backend,
    thread_id: str,
    values: dict[str, Any],
    out: Path | None,
    fmt: ResultFormat = ResultFormat.jsonl,
) -> None:
    """Stream a thread's results, page by page, to `out` (else stdout; JSONL and CSV only).

    The store keeps each result as the very line JSONL output prints (an embeddings line with
    its vector as base64, written out as floats), so chat pages are copied out without decoding
    a single result. Parquet and .npy write an embeddings thread's vectors as float32.
    """
    from agent.export import ExportError, export_results, write_results

    fmt = ResultFormat(fmt)
    _check_destination(out, fmt)
    count = int(values.get("request_count") or 0)
    pages = backend.result_pages(thread_id, values)
    try:
        if out is None:
            write_results(pages, sys.stdout.buffer, fmt)
            sys.stdout.flush()
            return
        report = export_results(pages, out, fmt, count if fmt.vectors_only else None)
    except ExportError as exc:
        raise CliError(f"thread {thread_id}: {exc}") from None
    err.print(f"wrote {report.rows if fmt.vectors_only else count} results to {out}")
    if report.failed:
        blank = "NaN rows" if fmt is ResultFormat.npy else "null embeddings"
        err.print(
            f"warning: {report.failed:,} of {report.rows:,} requests failed: their rows are "
            f"{blank} (their errors: --format jsonl or parquet)"
        )


def _check_destination(out: Path | None, fmt: ResultFormat) -> None:
    """Refuse a binary format (Parquet, .npy) to stdout, before anything is run or read."""
    if out is None and not ResultFormat(fmt).streams:
        raise CliError(f"--format {fmt} writes a binary file: give --out FILE (not stdout)")


def _require_collected(thread_id: str, values: dict[str, Any], flag: str) -> None:
    """Refuse to write results of a thread that has not collected them yet."""
    if values.get("status") not in TERMINAL_THREAD_STATUSES:
        raise CliError(
            f"thread {thread_id} is {values.get('status')!r}: results are not collected yet (run `batch-agent run{flag} --thread {thread_id} --wait`)"
        )


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
    from agent.cli.progress import progress_line

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
        err.print(dedup_line(values["dedup"]))
    line = cost_line(values)
    if line:
        err.print(line)
    deadline = deadline_line(values)
    if deadline:
        err.print(deadline)
