"""What `batch-agent run --wait` shows while it waits: a live bar on a terminal, plain lines otherwise.

The display is fed the graph's `batch_progress` stream events (emitted by every status check,
see `agent.job_records.progress_event`) and the thread's values after each run. On a terminal it is a
rich progress bar (completed / failed / total, elapsed, next check counting down); when stderr is
a pipe or a file (CI, logs, `2> log`), it prints one plain line per check, so logs stay readable.

The bar starts with the first news of the thread, not before: until then the first run is still
planning and submitting, and what it says (the emulator notice, warnings) gets lines of its own
instead of being glued to an empty `0/?` bar. While the bar is up, log records are printed above
it by the console, for the same reason.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

Clock = Callable[[], float]


class _StatusColumn(ProgressColumn):
    """The thread's status and the seconds to its next check, counted down at each refresh."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def render(self, task: Task) -> Text:
        """Return `status  next check in Ns` as of now."""
        status = task.fields.get("status") or ""
        at = task.fields.get("next_check_at")
        wait = f"next check in {_seconds_left(at, self.clock)}s" if at is not None else ""
        return Text(f"{status}  {wait}".strip())


class WaitDisplay:
    """Progress of one thread while the CLI polls it."""

    def __init__(self, console: Console, thread_id: str, clock: Clock = time.monotonic) -> None:
        """Show progress on `console` (stderr); a live bar only if it is a terminal.

        Args:
            console: Where to draw.
            thread_id: The thread shown.
            clock: Monotonic seconds (injectable, so a test moves time instead of sleeping).
        """
        self.console = console
        self.thread_id = thread_id
        self.clock = clock
        self.started = clock()
        self.live = console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._next_check_at: float | None = None
        self._stack = ExitStack()  # undoes what starting the bar did

    def __enter__(self) -> WaitDisplay:
        """Get ready; the live bar itself starts with the first progress shown."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the live bar, leaving its last state on screen."""
        self._stack.close()

    def _start(self, fields: dict[str, Any]) -> None:
        """Draw the bar, its first frame already showing `fields` (never an empty `0/?`)."""
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            _StatusColumn(self.clock),
            console=self.console,
            transient=False,
        )
        self._task = progress.add_task(f"thread {self.thread_id[:8]}", **fields)
        progress.start()
        self._stack.callback(progress.stop)
        # After start: `sys.stderr` is now the bar's proxy, which prints above the bar.
        self._stack.enter_context(_logs_to_current_stderr())
        self._progress = progress

    def event(self, event: dict[str, Any]) -> None:
        """Take one `batch_progress` stream event (sent by each status check)."""
        if event.get("event") != "batch_progress":
            return
        if not self.live:
            return  # plain output prints once per run, from the values that follow
        seconds = event.get("next_check_seconds")
        self._next_check_at = None if seconds is None else self.clock() + float(seconds)
        self._show(event.get("status"), event.get("counts") or {}, event.get("jobs") or [])

    def values(self, values: dict[str, Any], next_pause: float | None) -> None:
        """Take the thread's values after a run, and the pause before the next one."""
        self._next_check_at = None if next_pause is None else self.clock() + next_pause
        self._show(values.get("status"), values.get("counts") or {}, values.get("jobs") or [])

    def _show(self, status: Any, counts: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        total = int(counts.get("total") or 0)
        done = int(counts.get("succeeded") or 0) + int(counts.get("failed") or 0)
        if self.live:
            fields = {
                "total": total or None,
                "completed": done,
                "failed": int(counts.get("failed") or 0),
                "status": status,
                "next_check_at": self._next_check_at,
            }
            if self._progress is None:
                self._start(fields)
            else:
                assert self._task is not None
                self._progress.update(self._task, **fields)
            return
        wait = (
            f"next check in {_seconds_left(self._next_check_at, self.clock)}s"
            if self._next_check_at is not None
            else ""
        )
        elapsed = f"elapsed {self.clock() - self.started:.0f}s  {wait}".rstrip()
        self.console.print(progress_line(self.thread_id, status, counts, jobs, elapsed))

    def elapsed(self) -> float:
        """Seconds since the display started."""
        return self.clock() - self.started


def _seconds_left(at: float, clock: Clock) -> str:
    return f"{max(0.0, at - clock()):.0f}"


@contextmanager
def _logs_to_current_stderr() -> Iterator[None]:
    """Point the root logger's stderr handlers at the current `sys.stderr` for a while.

    `logging.basicConfig` keeps the stderr stream it was given; the live bar redirects
    `sys.stderr` (writes then appear above the bar), but not a stream object held elsewhere, so
    a record written there would land in the middle of the bar's line.
    """
    original = getattr(sys.stderr, "rich_proxied_file", sys.stderr)
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream in (original, sys.__stderr__)
    ]
    previous = [h.setStream(sys.stderr) for h in handlers]
    try:
        yield
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            if stream is not None:
                handler.setStream(stream)


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
