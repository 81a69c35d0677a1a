"""`batch-agent status MAP_ID` and `batch-agent cancel MAP_ID`: a map seen and stopped by its id.

A map (`batch-agent map`, `agent.batched.map_graph`) is not a batch thread: its id names the
records it keeps in the store (`agent.batched.records`): its items' progress, each round's
calls and batch threads (recorded before they are submitted), and what its batches cost. The
commands `status` and `cancel` take a map's id where they take a thread's; this module is what
they do then. The batch threads of the round in flight are shown and cancelled exactly as
`status` and `cancel` show and cancel any thread (`agent.cli.render`, `agent.cli.commands`).
Maps live in the local checkpoint database only (`map` has no `--url`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from agent.cli.backend import Backend, LocalBackend
from agent.cli.errors import CliError
from agent.cli.render import cost_line, status_renderables, status_report
from agent.statuses import TERMINAL_THREAD_STATUSES

if TYPE_CHECKING:
    from agent.batched.records import MapRecords

Values = dict[str, Any]
ROUND_STATUS = {"pooled": "in flight", "done": "done", "cancelled": "cancelled"}
"""How `status` names a recorded round's status."""
WIDTH = 80
"""The columns `status` keeps to (a terminal's default width)."""


def open_map(backend: Backend, map_id: str) -> MapRecords | None:
    """Return the records of map `map_id` in the backend's database, or None if it holds none."""
    if not isinstance(backend, LocalBackend):
        return None
    from agent.batched.records import ROOT, MapRecords
    from agent.checkpoint_reader import StoreReader

    # A SQLite file is asked first, read-only and without LangGraph: an id that is neither a
    # thread nor a map is refused as fast as before, and the database is not touched.
    reader = StoreReader.open(backend.resolved)
    if reader is not None:
        try:
            if reader.get((ROOT, map_id), "inputs") is None:
                return None
        finally:
            reader.close()
    records = MapRecords(backend.graph.store, map_id)
    return records if records.exists() else None


def map_status(records: MapRecords) -> str:
    """Return the map's status: `cancelled`, else the last run's (`running`, `done`, ...)."""
    if records.cancelled() is not None:
        return "cancelled"
    return str(records.progress().get("status") or "running")


def map_report(backend: Backend, records: MapRecords) -> dict[str, Any]:
    """Return `status --json` of a map: its items' counts, rounds, pools in flight, cost.

    `pools` holds the `status --json` object of each batch thread of the round in flight
    (`submitted: false` for one the map had not submitted yet).
    """
    from agent.batched.records import PROGRESS_COUNTS

    progress = records.progress()
    pools: list[dict[str, Any]] = []
    for thread_id in records.in_flight():
        try:
            values = backend.values(thread_id)
        except CliError:  # recorded, not yet submitted (a kill in between, or a cancel)
            pools.append({"thread_id": thread_id, "submitted": False})
            continue
        pools.append({**status_report(thread_id, values), "submitted": True})
    return {
        "map_id": records.map_id,
        "status": map_status(records),
        "items": {name: int(progress.get(name) or 0) for name in PROGRESS_COUNTS},
        "rounds": records.rounds(),
        "pools": pools,
        "cost": records.cost(),
        "cancelled": records.cancelled(),
    }


def show_map(backend: Backend, records: MapRecords, *, as_json: bool) -> None:
    """Print a map's status: items, one line per round, the pools in flight, the cost."""
    report = map_report(backend, records)
    if as_json:
        typer.echo(json.dumps(report))
        return
    out = Console(highlight=False)
    items = report["items"]
    line = (
        f"map {report['map_id']}: {report['status']} · {items['items']:,} items: "
        f"{items['completed']:,} completed, {items['failed']:,} failed, "
        f"{items['waiting']:,} waiting"
    )
    if items["interrupted"]:
        line += f", {items['interrupted']:,} interrupted"
    typer.echo(line)
    for recorded in report["rounds"]:
        for text in round_lines(recorded):
            typer.echo(text)
    for pool in report["pools"]:
        if not pool["submitted"]:
            typer.echo(f"{pool['thread_id']}: not submitted")
            continue
        for renderable in status_renderables(pool, out):
            out.print(renderable, soft_wrap=isinstance(renderable, str))
    cost = cost_line({"cost": report["cost"]}) if report["cost"] else None
    typer.echo(cost or "cost: nothing collected yet")


def round_lines(recorded: Mapping[str, Any]) -> list[str]:
    """Describe a recorded round: its calls, status and batch threads (each id whole).

    One line when its one batch thread fits there in 80 columns, else one line per thread.
    """
    threads = list(recorded.get("batch_threads") or [])
    status = ROUND_STATUS.get(str(recorded.get("status")), str(recorded.get("status")))
    head = f"round {recorded['number']}: {int(recorded['calls']):,} calls"
    if not threads:
        return [f"{head}, {status}"]
    if len(threads) == 1 and len(f"{head}, {status}: {threads[0]}") <= WIDTH:
        return [f"{head}, {status}: {threads[0]}"]
    count = f"{len(threads)} batch thread{'s' if len(threads) > 1 else ''}"
    return [f"{head} in {count}, {status}:", *(f"  {t}" for t in threads)]


def cancel_map(
    backend: Backend,
    records: MapRecords,
    cancel_thread: Callable[[str], Values],
    err: Console,
) -> None:
    """Cancel a map: nothing more is sent, and the batch threads of its round in flight stop.

    The cancel is recorded first, so a map process still running sends no further pool; then
    each unfinished batch thread of the round in flight is cancelled as `cancel THREAD`
    cancels it (`cancel_thread`), and its (partial) cost is kept with the map. The items
    stay as they are; resumed, the map fails the waiting ones, naming the cancel.

    Raises:
        CliError: The map has ended, or was cancelled and has nothing left in flight.
    """
    status = map_status(records)
    if status == "done":
        raise CliError(f"map {records.map_id} has ended; nothing to cancel")
    pools: list[tuple[str, Values]] = []
    for thread_id in records.in_flight():
        try:
            pools.append((thread_id, backend.values(thread_id)))
        except CliError:
            continue  # recorded but never submitted: the cancel keeps it from being sent
    running = [(t, v) for t, v in pools if v.get("status") not in TERMINAL_THREAD_STATUSES]
    if status == "cancelled" and not running:
        raise CliError(f"map {records.map_id} is already cancelled; nothing to cancel")
    records.cancel()
    for thread_id, values in pools:
        if values.get("status") not in TERMINAL_THREAD_STATUSES:
            values = cancel_thread(thread_id)
        records.put_batch_cost(thread_id, values.get("cost"))
    rounds = records.rounds()
    if rounds and rounds[-1]["status"] == "pooled":
        records.finish_round(int(rounds[-1]["number"]), "cancelled")
    waiting = int(records.progress().get("waiting") or 0)
    err.print(
        f"map {records.map_id} cancelled: {len(running)} batch thread(s) cancelled; "
        f"resumed (batch-agent map GRAPH --thread {records.map_id}{backend.flag}), its "
        f"{waiting:,} waiting item(s) fail and nothing is sent again"
    )
