"""What the CLI prints about threads: `status`, `threads`, the summary table, cost and dedup lines.

Everything here turns state values into text or rich renderables and imports nothing heavy, so
the read-only commands stay fast. Job IDs are never cut short: a thread's ID is what every other
command takes, and a job's is what the provider's console shows.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table

from agent.endpoints import job_endpoint

NO_COUNTS = {"total": 0, "succeeded": 0, "failed": 0, "pending": 0}

# The fields of each job in `status --json`, in order (the README lists the same).
STATUS_JOB_FIELDS = (
    "job_id",
    "key",
    "attempt",
    "provider",
    "model",
    "endpoint",
    "emulated",
    "provider_status",
    "status",
    "counts",
    "created_at",
    "errors",
    "cost",
    "waiting_for",
)


def status_report(thread_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """Return the `status --json` object for a thread's state values."""
    jobs = values.get("jobs") or []
    return {
        "thread_id": thread_id,
        "status": values.get("status", "new"),
        "jobs": [_job_report(job) for job in jobs],
        "counts": values.get("counts") or dict(NO_COUNTS),
        "usage": values.get("usage"),
        "cost": values.get("cost"),
        "estimate": values.get("estimate"),
        "attempt": values.get("attempt", 1),
        # Intents held back until earlier jobs free the provider's quota (`agent.quotas`).
        "waiting_for_quota": sum(1 for job in jobs if job.get("waiting_for")),
        "polls": values.get("polls", 0),
        "deadline_at": values.get("deadline_at"),
        "cost_by_via": values.get("cost_by_via"),
        "fallback": values.get("fallback_report"),
        "error": values.get("error"),
    }


def _job_report(job: Mapping[str, Any]) -> dict[str, Any]:
    """One job of `status --json`: its record's fields, `key` being the record's `job_key`."""
    report = {name: job.get(name) for name in STATUS_JOB_FIELDS}
    report["key"] = job.get("job_key")
    report["attempt"] = job.get("attempt", 1)
    report["endpoint"] = job_endpoint(job)
    return report


def thread_summary(thread_id: str, values: dict[str, Any], updated_at: str) -> dict[str, Any]:
    """Return one `threads --json` entry: id, status, counts, number of jobs, last update."""
    return {
        "thread_id": thread_id,
        "status": values.get("status", "new"),
        "counts": values.get("counts") or dict(NO_COUNTS),
        "jobs": len(values.get("jobs") or []),
        "updated_at": updated_at,
    }


def thread_line(summary: Mapping[str, Any]) -> str:
    """Return a `threads` line (plain, not a table: the full thread id survives a narrow pipe)."""
    c = summary["counts"]
    return (
        f"{summary['updated_at'][:16].replace('T', ' ')}  {summary['thread_id']}  "
        f"{summary['status']:<10} succeeded {c.get('succeeded', 0)}/{c.get('total', 0)}  "
        f"failed {c.get('failed', 0)}  jobs {summary['jobs']}"
    )


def status_renderables(report: Mapping[str, Any], console: Console) -> list[RenderableType]:
    """Return `status`'s table, with every job ID and model whole at `console`'s width.

    When the table with the IDs in it is wider than the console, the table numbers the jobs
    and the IDs follow it, one per line, where nothing can cut or fold them.
    """
    full = _status_table(report, with_ids=True)
    # Measured without the console's limit (which would cap the answer at its width).
    unbounded = console.options.update_width(sys.maxsize)
    if Measurement.get(console, unbounded, full).maximum <= console.width:
        return [full]
    lines = [f"job {n}: {job['job_id']}" for n, job in enumerate(report["jobs"], start=1)]
    return [_status_table(report, with_ids=False), *lines]


def _status_table(report: Mapping[str, Any], *, with_ids: bool) -> Table:
    # The provider (a thread's jobs share one) and "(emulator)" go in the title, not on every
    # row: the columns then fit 80 characters, Gemini's BATCH_STATE_SUCCEEDED included.
    jobs = report["jobs"]
    providers = sorted({str(job["provider"]) for job in jobs})
    title = f"thread {report['thread_id']}: {report['status']}"
    if len(providers) == 1:
        title += f" · {providers[0]}"
    if any(job["emulated"] for job in jobs):
        title += " (emulator)"
    waiting = [str(job["waiting_for"]) for job in jobs if job.get("waiting_for")]
    # Why the intents wait (the first one's reason; all wait on the same full quota).
    caption = f"{len(waiting)} job(s) {waiting[0]}" if waiting else None
    table = Table(title=title, caption=caption)
    table.add_column("job", no_wrap=with_ids)
    if len(providers) > 1:
        table.add_column("provider")
    # A model name can be long too: wrapped onto more lines, never cut to "gpt-4o-m…".
    models = [len(str(job["model"])) for job in jobs]
    table.add_column("model", overflow="fold", min_width=max(models, default=0) or None)
    table.add_column("provider status", overflow="fold")
    for column in ("succeeded", "failed", "total"):
        table.add_column(column)
    for n, job in enumerate(jobs, start=1):
        c = job["counts"]
        table.add_row(
            str(job["job_id"]) if with_ids else str(n),
            *([job["provider"]] if len(providers) > 1 else []),
            job["model"],
            job["provider_status"] or ("waiting for quota" if job.get("waiting_for") else ""),
            str(c["succeeded"]),
            str(c["failed"]),
            str(c["total"]),
        )
    return table


def summary_table(values: dict[str, Any], elapsed: float | None) -> Table:
    """Return the end-of-run table: status, succeeded, failed, tokens in/out, time."""
    counts = values.get("counts") or {}
    usage = values.get("usage") or {}
    table = Table(title="batch summary")
    columns = ["status", "succeeded", "failed", "input tokens", "output tokens"]
    row = [
        str(values.get("status")),
        f"{counts.get('succeeded', 0):,}",
        f"{counts.get('failed', 0):,}",
        f"{usage.get('input_tokens', 0):,}",
        f"{usage.get('output_tokens', 0):,}",
    ]
    if elapsed is not None:
        columns.append("time")
        row.append(_duration(elapsed))
    for column in columns:
        table.add_column(column, justify="left" if column == "status" else "right")
    table.add_row(*row)
    return table


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def deadline_line(values: Mapping[str, Any]) -> str | None:
    """Describe the thread's deadline and, once it came, how its results were obtained."""
    from datetime import UTC, datetime

    from agent.pricing import format_usd

    at = values.get("deadline_at")
    if at is None:
        return None
    when = datetime.fromtimestamp(float(at), tz=UTC).isoformat(timespec="seconds")
    line = f"deadline: {when}"
    report = values.get("fallback_report")
    if report:
        line += f"; fallback {report['via']}: {report['succeeded']} of {report['requests']} missing requests answered"
        if report.get("refused"):
            line += " (not run: over max_cost)"
    by_via = values.get("cost_by_via") or {}
    if by_via:
        line += "; cost by via: " + ", ".join(
            f"{via} {format_usd(usd)}" for via, usd in sorted(by_via.items())
        )
    return line


def dedup_line(dedup: Mapping[str, Any]) -> str:
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


def limits_line(provider: str, limits: Mapping[str, int]) -> str:
    """Describe what one job may hold (`plan`'s `limits`), and the provider's own limits."""
    line = (
        f"limits: at most {limits['max_requests']:,} requests and "
        f"{byte_size(limits['max_file_bytes'])} of input per job"
    )
    own = (limits["provider_max_requests"], limits["provider_max_file_bytes"])
    if own != (limits["max_requests"], limits["max_file_bytes"]):
        line += f" ({provider}'s: {own[0]:,} requests, {byte_size(own[1])})"
    else:
        line += f" ({provider}'s limits)"
    return line


def byte_size(size: int) -> str:
    """Name a byte count the way providers document their limits (2 GB, 200 MiB)."""
    for unit, scale in (("GiB", 1024**3), ("GB", 1000**3), ("MiB", 1024**2), ("MB", 1000**2)):
        if size >= scale and size % scale == 0:
            return f"{size // scale:,} {unit}"
    return f"{size:,} bytes"


def cost_line(values: dict[str, Any]) -> str | None:
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
