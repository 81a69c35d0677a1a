"""`batch-agent map GRAPH INPUT.jsonl`: a user's graph over a dataset, its model calls batched.

GRAPH is `path/to/file.py:name` or `package.module:name` (a compiled graph or a `StateGraph`
builder whose nodes call `batched(...)` models); each INPUT line is one item's input (a JSON
object). The map runs round by round (`agent.batched.bridge.map_graph`) until every item's thread
has ended, then writes one line per item, in input order: its status, final state, error,
calls and tokens. `--thread MAP_ID` resumes a map that was stopped or killed.

With `--no-wait` the run goes as far as it can without waiting on a provider job: it submits a
round's batches (or checks them once), prints the map's id and how to go on, and exits 0; the
same command with `--thread MAP_ID`, repeated, goes on round by round, and the one that ends the
map writes what a waiting run writes. `batch-agent status MAP_ID` and `cancel MAP_ID` see and
stop a map (`agent.cli.map_ops`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from agent.cli.errors import EXIT_FAILED_REQUESTS
from agent.cli.options import DbOption, MaxCostOption, OutOption
from agent.pricing import format_usd
from agent.requests import InputError

err = Console(stderr=True, highlight=False, soft_wrap=True)


def map_(
    graph: Annotated[
        str,
        typer.Argument(
            metavar="GRAPH",
            help="The graph to run per item: path/to/file.py:name or package.module:name.",
        ),
    ],
    input_file: Annotated[
        Path | None,
        typer.Argument(metavar="INPUT", help="One JSON object per line: each item's input."),
    ] = None,
    thread: Annotated[
        str | None, typer.Option(help="The map to start or resume (default: a new one).")
    ] = None,
    db: DbOption = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Wait for each round's batches until every item has ended (the default); --no-wait submits the round's batches, or checks them once, and exits: run again with --thread to go on.",
        ),
    ] = True,
    out: OutOption = None,
    poll_interval: Annotated[
        float | None, typer.Option(help="First pause between polls of each round's batches.")
    ] = None,
    max_cost: MaxCostOption = None,
    allow_failures: Annotated[
        bool, typer.Option(help="Exit 0 even when some items failed.")
    ] = False,
    allow_realtime: Annotated[
        bool,
        typer.Option(
            help="Let nodes call models that are not batched(...), in realtime at full price (default: such a call stops the map)."
        ),
    ] = False,
) -> None:
    """Run a LangGraph graph over a dataset, every model call through a batch API."""
    from agent.batched import map_graph
    from agent.persistence import redact_db_url, resolve_db

    if input_file is None and thread is None:
        raise typer.BadParameter("give INPUT to start a map, or --thread to resume one")
    user_graph = load_graph(graph)
    numbered = read_items(input_file) if input_file is not None else None
    items = [item for _, item in numbered] if numbered is not None else None
    context: dict[str, Any] = {}
    if poll_interval is not None:
        context["poll_interval_seconds"] = poll_interval
    if max_cost is not None:
        context["max_cost"] = max_cost

    def progress(number: int, calls: int, done: int) -> None:
        err.print(f"round {number}: {calls} calls batched, {done} items done")

    results = map_graph(
        user_graph,
        items,
        map_id=thread,
        db=resolve_db(db),
        on_round=progress,
        source=str(input_file) if input_file is not None else "input",
        lines=[line for line, _ in numbered] if numbered is not None else None,
        allow_realtime=allow_realtime,
        wait=wait,
        **context,
    )
    flag = f" --db {redact_db_url(db)}" if db else ""
    if results.pending:
        _say_in_flight(results, graph, flag)
        return
    lines = b"".join(orjson.dumps(_item_json(item), default=_plain) + b"\n" for item in results)
    if out is None:
        sys.stdout.buffer.write(lines)
        sys.stdout.flush()
    else:
        out.write_bytes(lines)
    failed = sum(1 for item in results if item.status != "completed")
    cancelled = " (cancelled)" if results.status == "cancelled" else ""
    err.print(
        f"map {results.map_id}{cancelled}: {len(results) - failed} of {len(results)} items "
        f"completed in {len(results.rounds)} rounds this run (resume: --thread {results.map_id})"
    )
    if results.cost is not None:
        cost = results.cost
        err.print(
            f"cost: batch {format_usd(cost['batch_usd'])}, realtime "
            f"{format_usd(cost['realtime_usd'])}, saving {format_usd(cost['saving_usd'])} "
            f"({cost['source']})" + (f"; {cost['note']}" if cost["note"] else "")
        )
    if failed and not allow_failures:
        raise typer.Exit(EXIT_FAILED_REQUESTS)


def _say_in_flight(results: Any, graph: str, flag: str) -> None:
    """Say which round is in flight, and the commands that check, go on with, or stop the map."""
    round_ = results.rounds[-1]
    waiting = sum(1 for item in results if item.status == "waiting")
    err.print(
        f"round {round_.number}: {round_.calls:,} calls in {len(results.pending)} batch "
        f"thread(s), in flight; {waiting:,} of {len(results):,} items waiting"
    )
    map_id = results.map_id
    err.print(f"map {map_id}: not done; nothing waits here, the batches run on at the provider")
    err.print(f"  check: batch-agent status {map_id}{flag}")
    err.print(f"  go on: batch-agent map {graph} --thread {map_id}{flag} --no-wait (or --wait)")
    err.print(f"  stop:  batch-agent cancel {map_id}{flag}")


def load_graph(ref: str) -> Any:
    """Import `path/to/file.py:name` or `package.module:name` and return that object.

    Raises:
        InputError: The reference is malformed, the module cannot be imported, or it has no
            such name (before anything is uploaded).
    """
    module_ref, sep, name = ref.rpartition(":")
    if not sep or not module_ref or not name:
        raise InputError("GRAPH must be path/to/file.py:name or package.module:name", source=ref)
    try:
        if module_ref.endswith(".py"):
            module = _import_file(Path(module_ref), ref)
        else:
            module = importlib.import_module(module_ref)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 (whatever the user's module raises, said plainly)
        raise InputError(
            f"cannot import {module_ref}: {type(exc).__name__}: {exc}", source=ref
        ) from None
    if not hasattr(module, name):
        raise InputError(f"{module_ref} has no {name!r}", source=ref)
    return getattr(module, name)


def _import_file(file: Path, ref: str) -> Any:
    """Import a graph file as a module, registered in `sys.modules`.

    By its dotted name under its project's root (as `langgraph dev` imports from the folder of
    its `langgraph.json`), else under a name of its own; registered either way, so its
    annotations (`from __future__ import annotations`, Pydantic models) resolve.
    """
    path = file.resolve()
    if not path.is_file():
        raise InputError(f"{path}: no such file", source=ref)
    # Its sibling modules import as in a script; the project's packages import from its root
    # (the nearest folder up with a pyproject.toml or langgraph.json) or the working directory.
    root = next(
        (
            folder
            for folder in path.parents
            if (folder / "pyproject.toml").is_file() or (folder / "langgraph.json").is_file()
        ),
        Path.cwd(),
    )
    for folder in (str(Path.cwd()), str(root), str(path.parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    if path.is_relative_to(root):
        dotted = ".".join(path.relative_to(root).with_suffix("").parts)
        if all(part.isidentifier() for part in dotted.split(".")):
            return importlib.import_module(dotted)
    name = f"batch_agent_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: cannot be imported", source=ref)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_items(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Read one JSON object per non-empty line; return `(line number, object)` pairs.

    Raises:
        InputError: The file is missing, empty, or a line is not a JSON object (file and line).
    """
    if not path.is_file():
        raise InputError("file not found", source=str(path))
    items: list[tuple[int, dict[str, Any]]] = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc})", source=str(path), line=number) from None
        if not isinstance(value, dict):
            raise InputError("an item's input must be a JSON object", source=str(path), line=number)
        items.append((number, value))
    if not items:
        raise InputError("no items", source=str(path))
    return items


def _item_json(item: Any) -> dict[str, Any]:
    return {
        "index": item.index,
        "thread_id": item.thread_id,
        "status": item.status,
        "state": item.state,
        "error": item.error,
        "calls": item.calls,
        "usage": item.usage,
        "cost": item.cost,
    }


def _plain(value: Any) -> Any:
    """Serialise what a graph state holds beyond JSON: messages and pydantic models as dicts."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(value)
