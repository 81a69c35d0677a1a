"""The WSGI application: authentication, protocol dispatch and error rendering.

Each protocol lives under its own prefix so an SDK's base URL can point at it
unchanged: ``/openai/v1`` for the openai SDK (``base_url=<root>/openai/v1``) and
``/mistral/v1`` for the mistralai SDK (``server_url=<root>/mistral``, the SDK adds
``/v1``). Every request must carry a non-empty bearer key; its value is ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agent.emulator.mistral_routes import MistralRoutes
from agent.emulator.mistral_routes import render_error as render_mistral_error
from agent.emulator.openai_routes import OpenAIRoutes
from agent.emulator.openai_routes import render_error as render_openai_error
from agent.emulator.store import Store
from agent.emulator.web import HttpError, Request, Response, json_response

logger = logging.getLogger(__name__)

OPENAI_PREFIX = "/openai/v1"
MISTRAL_PREFIX = "/mistral/v1"

StartResponse = Callable[..., Any]


class EmulatorApp:
    """WSGI application emulating the OpenAI and Mistral batch HTTP protocols.

    Args:
        state_dir: Where files and jobs persist; defaults to `default_state_dir()`.
            Several apps (or processes) on one directory share the same state.
    """

    def __init__(self, state_dir: str | Path | None = None) -> None:
        """Open the state store and build both protocols' routes."""
        self.store = Store(state_dir)
        self.openai = OpenAIRoutes(self.store)
        self.mistral = MistralRoutes(self.store)

    @property
    def state_dir(self) -> Path:
        """Return the state directory in use."""
        return self.store.root

    def list_jobs(self) -> list[dict[str, Any]]:
        """Summarise every job of both protocols, oldest first.

        Reading a job that has reached its terminal state finalises it (writes its
        outputs), exactly as an API read would.

        Returns:
            Dicts with ``provider``, ``id``, ``status`` (current), ``created_at``,
            ``request_count`` and ``metadata``.
        """
        now = time.time()
        rows: list[tuple[float, dict[str, Any]]] = []
        for job in self.store.list_jobs("openai"):
            view = self.openai.view_now(job, now)
            rows.append((job["_created"], _summary("openai", job, view["status"])))
        for job in self.store.list_jobs("mistral"):
            view = self.mistral.view_now(job, now)
            rows.append((job["_created"], _summary("mistral", job, view["status"])))
        rows.sort(key=lambda row: (row[0], row[1]["id"]))
        return [row[1] for row in rows]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one WSGI request."""
        response = self.respond(environ)
        start_response(response.status_line(), response.wsgi_headers())
        return response.body

    def respond(self, environ: dict[str, Any]) -> Response:
        """Compute the response to a WSGI environ (never raises)."""
        path = environ.get("PATH_INFO", "") or "/"
        routes: OpenAIRoutes | MistralRoutes | None
        render: Callable[[HttpError], Response]
        if path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/"):
            routes, render, rest = self.openai, render_openai_error, path[len(OPENAI_PREFIX) :]
        elif path == MISTRAL_PREFIX or path.startswith(MISTRAL_PREFIX + "/"):
            routes, render, rest = self.mistral, render_mistral_error, path[len(MISTRAL_PREFIX) :]
        else:
            routes, render, rest = None, render_openai_error, path
        try:
            if routes is None:
                if path in ("/", "/health") and environ.get("REQUEST_METHOD") == "GET":
                    # Unauthenticated readiness probe for whoever starts the server.
                    return json_response({"status": "ok"})
                raise HttpError(404, f"Unknown path: {path}", code="unknown_url")
            request = Request.from_environ(environ, rest or "/")
            _check_auth(request)
            return routes.handle(request)
        except HttpError as error:
            return render(error)
        except Exception:  # noqa: BLE001 - a test double must answer, not crash the server
            logger.exception("emulator error on %s %s", environ.get("REQUEST_METHOD"), path)
            return render(HttpError(500, "Internal emulator error.", error_type="server_error"))


def _summary(provider: str, job: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "provider": provider,
        "id": job["id"],
        "status": status,
        "created_at": job["created_at"],
        "request_count": job["_total"],
        "metadata": job.get("metadata"),
    }


def _check_auth(request: Request) -> None:
    """Accept any non-empty bearer key, like a real provider accepts a valid one.

    Raises:
        HttpError: 401 without an ``Authorization: Bearer <key>`` header.
    """
    header = (request.header("Authorization") or "").strip()
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HttpError(
            401,
            "Missing or invalid Authorization header: expected 'Bearer <api key>'.",
            error_type="invalid_request_error",
            code="invalid_api_key",
        )
