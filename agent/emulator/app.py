"""The WSGI application: authentication, protocol dispatch and error rendering.

Each protocol lives under its own prefix so an SDK's base URL can point at it
unchanged: ``/openai/v1`` for the openai SDK (``base_url=<root>/openai/v1``),
``/mistral/v1`` for the mistralai SDK (``server_url=<root>/mistral``, the SDK adds
``/v1``), ``/anthropic/v1`` for the anthropic SDK (``base_url=<root>/anthropic``) and
``/gemini`` for google-genai (``HttpOptions(base_url=<root>/gemini)``; the SDK adds
``/v1`` or ``/v1beta``, and ``/upload/v1...`` for uploads). Every request must carry a
non-empty key (a bearer token, Anthropic's ``x-api-key``, Google's ``x-goog-api-key`` or
``?key=``); its value is ignored unless ``BATCH_AGENT_EMULATOR_API_KEY`` is set.

Every request is recorded in ``<state_dir>/access.log`` (`agent.emulator.access_log`),
and the fault knobs of ``BATCH_AGENT_EMULATOR_FAULTS`` (`agent.emulator.faults`) are
parsed once per request: a malformed value answers 500, ``http_error_rate`` may
answer 429/500 before any route runs.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agent.emulator.access_log import append_access_log
from agent.emulator.anthropic_routes import AnthropicRoutes
from agent.emulator.anthropic_routes import render_error as render_anthropic_error
from agent.emulator.clock import SYSTEM_CLOCK, Clock
from agent.emulator.faults import (
    ERROR_SHAPES,
    Faults,
    current_faults,
    delete_refused,
    listing_removed,
)
from agent.emulator.gemini_routes import GeminiRoutes, check_gemini_auth
from agent.emulator.gemini_routes import render_error as render_gemini_error
from agent.emulator.mistral_routes import MistralRoutes
from agent.emulator.mistral_routes import render_error as render_mistral_error
from agent.emulator.openai_routes import OpenAIRoutes
from agent.emulator.openai_routes import render_error as render_openai_error
from agent.emulator.realtime_routes import RealtimeRoutes
from agent.emulator.store import Store
from agent.emulator.web import HttpError, Request, Response, json_response
from agent.emulator.webhooks import start_sender

logger = logging.getLogger(__name__)

OPENAI_PREFIX = "/openai/v1"
MISTRAL_PREFIX = "/mistral/v1"
ANTHROPIC_PREFIX = "/anthropic/v1"
GEMINI_PREFIX = "/gemini"

StartResponse = Callable[..., Any]


class EmulatorApp:
    """WSGI application emulating the OpenAI, Mistral, Anthropic and Gemini batch HTTP protocols.

    Each protocol's realtime chat endpoint is served too (`agent.emulator.realtime_routes`).

    Args:
        state_dir: Where files and jobs persist; defaults to `default_state_dir()`.
            Several apps (or processes) on one directory share the same state.
        clock: The time source jobs advance by (default: the wall clock). A test passes an
            `agent.emulator.clock.ManualClock` and advances it instead of sleeping.
    """

    def __init__(self, state_dir: str | Path | None = None, clock: Clock | None = None) -> None:
        """Open the state store and build the four protocols' routes."""
        self.store = Store(state_dir)
        self.clock = clock or SYSTEM_CLOCK
        self.openai = OpenAIRoutes(self.store, self.clock)
        self.mistral = MistralRoutes(self.store, self.clock)
        self.anthropic = AnthropicRoutes(self.store, self.clock)
        self.gemini = GeminiRoutes(self.store, self.clock)
        # The realtime chat endpoints live on each protocol's router: same prefix, auth and
        # error shape as that protocol's batch routes.
        self.realtime = RealtimeRoutes(self.clock)
        for protocol, routes in (
            ("openai", self.openai),
            ("mistral", self.mistral),
            ("anthropic", self.anthropic),
            ("gemini", self.gemini),
        ):
            self.realtime.register(routes.router, protocol)
        # `http_error_rate` draws: one seeded generator per app (per process).
        self._rng_lock = threading.Lock()
        self._rngs: dict[int, random.Random] = {}
        # Signed `batch.*` events to a webhook URL, when one is configured.
        self.webhooks = start_sender({"openai": self.openai.jobs, "gemini": self.gemini.jobs})

    @property
    def state_dir(self) -> Path:
        """Return the state directory in use."""
        return self.store.root

    def list_jobs(self) -> list[dict[str, Any]]:
        """Summarise every job of every protocol, oldest first.

        Reading a job that has reached its terminal state finalises it (writes its
        outputs), exactly as an API read would.

        Returns:
            Dicts with ``provider``, ``id``, ``status`` (current), ``created_at``,
            ``request_count`` and ``metadata``.
        """
        now = self.clock.now()
        rows: list[tuple[float, dict[str, Any]]] = []
        for routes in (self.openai, self.mistral, self.anthropic, self.gemini):
            lifecycle = routes.jobs
            for job in self.store.list_jobs(lifecycle.provider):
                status = lifecycle.status_now(job, now)
                rows.append((job["_created"], _summary(lifecycle.provider, job, status)))
        rows.sort(key=lambda row: (row[0], row[1]["id"]))
        return [row[1] for row in rows]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one WSGI request and record it in the access log."""
        arrived = self.clock.now()
        response = self.respond(environ)
        append_access_log(
            self.store.root,
            arrived,
            str(environ.get("REQUEST_METHOD", "GET")),
            str(environ.get("PATH_INFO", "") or "/"),
            str(environ.get("QUERY_STRING", "") or ""),
            response.status,
        )
        start_response(response.status_line(), response.wsgi_headers())
        return response.body

    def respond(self, environ: dict[str, Any]) -> Response:
        """Compute the response to a WSGI environ (never raises)."""
        path = environ.get("PATH_INFO", "") or "/"
        routes: OpenAIRoutes | MistralRoutes | AnthropicRoutes | GeminiRoutes | None
        render: Callable[[HttpError], Response]
        provider = "openai"
        if path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/"):
            routes, render, rest = self.openai, render_openai_error, path[len(OPENAI_PREFIX) :]
        elif path == MISTRAL_PREFIX or path.startswith(MISTRAL_PREFIX + "/"):
            routes, render, rest = self.mistral, render_mistral_error, path[len(MISTRAL_PREFIX) :]
            provider = "mistral"
        elif path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/"):
            routes, render = self.anthropic, render_anthropic_error
            rest, provider = path[len(ANTHROPIC_PREFIX) :], "anthropic"
        elif path == GEMINI_PREFIX or path.startswith(GEMINI_PREFIX + "/"):
            routes, render = self.gemini, render_gemini_error
            rest, provider = path[len(GEMINI_PREFIX) :], "gemini"
        else:
            routes, render, rest = None, render_openai_error, path
        try:
            if routes is None:
                if path in ("/", "/health") and environ.get("REQUEST_METHOD") == "GET":
                    # Unauthenticated readiness probe for whoever starts the server.
                    return json_response({"status": "ok"})
                raise HttpError(404, f"Unknown path: {path}", code="unknown_url")
            try:
                faults = current_faults()
            except ValueError as exc:
                response = render(HttpError(500, str(exc), error_type="emulator_config_error"))
                # A configuration error will not go away: tell the openai SDK not to retry.
                response.headers.append(("x-should-retry", "false"))
                return response
            request = Request.from_environ(environ, rest or "/")
            request.faults = faults
            if provider == "gemini":
                check_gemini_auth(request)
            else:
                _check_auth(request)
            if listing_removed(faults, provider, request.method, request.path):
                raise HttpError(405, f"Method Not Allowed: GET {request.path}", code="405")
            injected = self._injected_http_error(faults, provider)
            if injected is None and delete_refused(faults, request.method, request.path):
                status, message, error_type, code = ERROR_SHAPES[provider]["server_error"]
                injected = HttpError(status, message, error_type=error_type, code=code)
            if injected is not None:
                response = render(injected)
                response.headers.extend([("retry-after-ms", "10"), ("retry-after", "0")])
                return response
            return routes.handle(request)
        except HttpError as error:
            return render(error)
        except Exception:  # noqa: BLE001 - a test double must answer, not crash the server
            logger.exception("emulator error on %s %s", environ.get("REQUEST_METHOD"), path)
            return render(HttpError(500, "Internal emulator error.", error_type="server_error"))

    def _injected_http_error(self, faults: Faults, provider: str) -> HttpError | None:
        """Draw whether `http_error_rate` turns this call into a 429 or a 500."""
        if faults.http_error_rate <= 0:
            return None
        with self._rng_lock:
            rng = self._rngs.setdefault(faults.seed, random.Random(faults.seed))
            if rng.random() >= faults.http_error_rate:
                return None
            kind = "rate_limit" if rng.random() < 0.5 else "server_error"
        status, message, error_type, code = ERROR_SHAPES[provider][kind]
        return HttpError(status, message, error_type=error_type, code=code)


def _summary(provider: str, job: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "provider": provider,
        # Gemini's wire id is the resource name (`batches/...`), not the bare id it is stored by.
        "id": job.get("name") or job["id"],
        "status": status,
        "created_at": job["created_at"],
        "request_count": job["_total"],
        "metadata": job.get("metadata"),
    }


def _check_auth(request: Request) -> None:
    """Accept any non-empty bearer (or ``x-api-key``) key, or exactly ``BATCH_AGENT_EMULATOR_API_KEY``.

    Requiring a given key lets tests exercise a real 401 (a wrong key the user fixes). The
    message never echoes the key that was sent.

    Raises:
        HttpError: 401 without an ``Authorization: Bearer <key>`` header, or with another key.
    """
    header = (request.header("Authorization") or "").strip()
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        # Anthropic's own header (its SDK sends a bearer token; curl examples use x-api-key).
        key = (request.header("x-api-key") or "").strip()
    if not key.strip():
        raise HttpError(
            401,
            "Missing or invalid Authorization header: expected 'Bearer <api key>'.",
            error_type="invalid_request_error",
            code="invalid_api_key",
        )
    required = os.environ.get("BATCH_AGENT_EMULATOR_API_KEY")
    if required and key.strip() != required:
        raise HttpError(
            401,
            "Incorrect API key provided.",
            error_type="invalid_request_error",
            code="invalid_api_key",
        )
