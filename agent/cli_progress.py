"""What `batch-agent run --wait` shows while it waits: a live bar on a terminal, plain lines otherwise.

The display is fed the graph's `batch_progress` stream events (emitted by every status check,
see `agent.graph.progress_event`) and the thread's values after each run. On a terminal it is a
rich progress bar (completed / failed / total, elapsed, next check); when stderr is a pipe or a
file (CI, logs, `2> log`), it prints one plain line per check, so logs stay readable.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table


class WaitDisplay:
    """Progress of one thread while the CLI polls it."""

    def __init__(self, console: Console, thread_id: str) -> None:
        """Show progress on `console` (stderr); a live bar only if it is a terminal."""
        self.console = console
        self.thread_id = thread_id
        self.started = time.monotonic()
        self.live = console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._next_check_at: float | None = None

    def __enter__(self) -> WaitDisplay:
        """Start the live bar (terminals only)."""
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[next_check]}"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                f"thread {self.thread_id[:8]}", total=None, failed=0, next_check=""
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the live bar, leaving its last state on screen."""
        if self._progress is not None:
            self._progress.stop()

    def event(self, event: dict[str, Any]) -> None:
        """Take one `batch_progress` stream event (sent by each status check)."""
        if event.get("event") != "batch_progress":
            return
        if not self.live:
            return  # plain output prints once per run, from the values that follow
        seconds = event.get("next_check_seconds")
        self._next_check_at = None if seconds is None else time.monotonic() + float(seconds)
        self._show(event.get("status"), event.get("counts") or {}, event.get("jobs") or [])

    def values(self, values: dict[str, Any], next_pause: float | None) -> None:
        """Take the thread's values after a run, and the pause before the next one."""
        self._next_check_at = None if next_pause is None else time.monotonic() + next_pause
        self._show(values.get("status"), values.get("counts") or {}, values.get("jobs") or [])

    def _show(self, status: Any, counts: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        total = int(counts.get("total") or 0)
        done = int(counts.get("succeeded") or 0) + int(counts.get("failed") or 0)
        wait = (
            f"next check in {max(0.0, self._next_check_at - time.monotonic()):.0f}s"
            if self._next_check_at is not None
            else ""
        )
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task,
                total=total or None,
                completed=done,
                failed=int(counts.get("failed") or 0),
                next_check=f"{status}  {wait}".strip(),
            )
            return
        elapsed = f"elapsed {time.monotonic() - self.started:.0f}s  {wait}".rstrip()
        self.console.print(progress_line(self.thread_id, status, counts, jobs, elapsed))

    def elapsed(self) -> float:
        """Seconds since the display started."""
        return time.monotonic() - self.started


def progress_line(
    thread_id: str,
    status: Any,
    counts: dict[str, Any],
    jobs: list[dict[str, Any]],
    extra: str = "",
) -> str:
    """Return the one-line progress of a thread: status, counts, `extra`, then each job."""
    job_text = ", ".join(
        f"{j.get('job_id')} ({j.get('provider_status') or 'created'})" for j in jobs
    )
    return (
        f"thread {thread_id}  status {status}  "
        f"succeeded {counts.get('succeeded', 0)}/{counts.get('total', 0)} "
        f"failed {counts.get('failed', 0)}  {extra + '  ' if extra else ''}jobs: {job_text}"
    )


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
