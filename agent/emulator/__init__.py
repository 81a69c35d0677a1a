"""Offline emulator of the OpenAI, Mistral, Anthropic and Gemini batch HTTP protocols.

A stdlib-only WSGI application that speaks OpenAI Files + Batches under
``/openai/v1``, Mistral Files + Batch Jobs under ``/mistral/v1``, Anthropic
Message Batches under ``/anthropic/v1`` and the Gemini Developer API's Files +
Batch mode under ``/gemini`` (``v1`` and ``v1beta``), so the real SDKs work
against it unchanged, either in-process::

    client = openai.OpenAI(
        api_key="x",
        base_url=f"{IN_PROCESS_BASE_URL}/openai/v1",
        http_client=emulator_http_client(state_dir),
    )
    gemini = genai.Client(
        api_key="x",
        http_options=types.HttpOptions(
            base_url=f"{IN_PROCESS_BASE_URL}/gemini",
            httpx_client=emulator_http_client(state_dir),
        ),
    )

or over loopback with `serve` / `running_emulator`. Each provider's realtime chat endpoint
answers too, by the batch's rule (`agent.emulator.realtime_routes`). Jobs advance by the wall
clock (``BATCH_AGENT_EMULATOR_DELAY`` seconds, default 2, read at creation), or by a
`ManualClock` a test passes in and advances (`agent.emulator.clock`), state
persists under a directory shared by every process (``BATCH_AGENT_EMULATOR_DIR``,
default ``.batch-agent/emulator``), and answers follow the deterministic rule of
`agent.emulator.answers`.

Every request is appended to ``<state_dir>/access.log`` (read it with
`read_access_log`; headers and bodies are never logged), and
``BATCH_AGENT_EMULATOR_FAULTS`` injects provider misbehaviour (rate-limited or
failed requests, expired jobs, shuffled or late results, unknown statuses, HTTP
errors, slow creates) and the providers' caps on what is in flight (enqueued tokens, pending
or queued requests, concurrent jobs, file storage: `agent.emulator.caps`): see
`agent.emulator.faults` for every knob.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx2

from agent.emulator.access_log import read_access_log
from agent.emulator.app import EmulatorApp
from agent.emulator.clock import Clock, ManualClock, SystemClock
from agent.emulator.server import running_emulator, serve
from agent.emulator.store import default_state_dir

IN_PROCESS_BASE_URL = "http://emulator"

__all__ = [
    "IN_PROCESS_BASE_URL",
    "Clock",
    "EmulatorApp",
    "ManualClock",
    "SystemClock",
    "default_state_dir",
    "emulator_http_client",
    "list_jobs",
    "read_access_log",
    "running_emulator",
    "serve",
    "use_clock",
]


def emulator_http_client(
    state_dir: str | Path | None = None, clock: Clock | None = None
) -> httpx2.Client:
    """Return an `httpx2.Client` that sends requests to an in-process emulator.

    Pass it as ``http_client=`` to `openai.OpenAI` / `anthropic.Anthropic`, ``client=`` to
    `mistralai.client.Mistral` or ``HttpOptions(httpx_client=...)`` to `google.genai.Client`,
    with base URLs under `IN_PROCESS_BASE_URL`.

    Args:
        state_dir: State directory (default: `default_state_dir()`).
        clock: The time source jobs advance by. Given one, this process's in-process
            emulator for `state_dir` runs on it from now on, so clients built later
            without a clock (the graph's providers) see the same time. Default: the
            clock that emulator already has (the wall clock for a new one).

    Returns:
        A client whose transport calls `EmulatorApp` directly (no sockets).
    """
    app = use_clock(clock, state_dir) if clock is not None else _in_process_app(state_dir)
    return httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url=IN_PROCESS_BASE_URL)


_apps: dict[Path, EmulatorApp] = {}
_apps_lock = threading.Lock()


def use_clock(clock: Clock, state_dir: str | Path | None = None) -> EmulatorApp:
    """Run this process's in-process emulator for `state_dir` on `clock` from now on.

    Every in-process client built afterwards for that directory, with or without a clock
    (the graph's providers build theirs with none), reads the same time, so a test can
    advance a `ManualClock` instead of sleeping while a graph polls. Clients built before
    keep the app (and clock) they had.

    Args:
        clock: The time source.
        state_dir: State directory (default: `default_state_dir()`).

    Returns:
        The directory's in-process app.
    """
    return _in_process_app(state_dir, clock)


def _in_process_app(state_dir: str | Path | None, clock: Clock | None = None) -> EmulatorApp:
    """Return this process's one app per state directory.

    The graph builds a provider (and so a client) at every step; one app per directory keeps the
    `http_error_rate` draws going on from call to call instead of restarting the seeded sequence,
    which would replay the same first draws (often no error at all) at every step. A new
    `clock` replaces the directory's app by one on that clock.
    """
    key = Path(state_dir or default_state_dir()).resolve()
    with _apps_lock:
        app = _apps.get(key)
        if app is None or (clock is not None and app.clock is not clock):
            app = _apps[key] = EmulatorApp(key, clock)
        return app


def list_jobs(state_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """List every emulated job of every protocol with its current status.

    The statuses are those this process's in-process emulator reports (on its clock: see
    `use_clock`).

    Args:
        state_dir: State directory (default: `default_state_dir()`).

    Returns:
        ``{"provider", "id", "status", "created_at", "request_count", "metadata"}``
        dicts sorted by creation time.
    """
    return _in_process_app(state_dir).list_jobs()
