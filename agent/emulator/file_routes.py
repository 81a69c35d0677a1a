"""What both emulated protocols do the same way with files: read, list, delete, stream content.

OpenAI and Mistral differ in how a file is created and in their error shapes, not in how a stored
file is found, described or streamed, so those handlers (and the ``/files`` routes to them) live
here once.
"""

from __future__ import annotations

from typing import Any

from agent.emulator.clock import Clock
from agent.emulator.store import Provider, Store
from agent.emulator.web import Request, Response, Router, json_response


def public(record: dict[str, Any]) -> dict[str, Any]:
    """Drop private (underscore) keys from a stored record."""
    return {key: value for key, value in record.items() if not key.startswith("_")}


class FileRoutes:
    """File handlers shared by the protocol route classes.

    Subclasses implement `create_file`, `list_files`, `get_file` and `_require_file` (the
    protocol's own 404), and add their job routes to `router`.

    Args:
        provider: The protocol, naming its part of the store.
        store: The shared state store.
        clock: The emulator's time source.
    """

    def __init__(self, provider: Provider, store: Store, clock: Clock) -> None:
        """Start the protocol's router with the ``/files`` routes."""
        self.provider = provider
        self.store = store
        self.clock = clock
        self.router = Router()
        self.router.add("POST", "/files", self.create_file)
        self.router.add("GET", "/files", self.list_files)
        self.router.add("GET", "/files/{file_id}", self.get_file)
        self.router.add("DELETE", "/files/{file_id}", self.delete_file)
        self.router.add("GET", "/files/{file_id}/content", self.file_content)

    def handle(self, request: Request) -> Response:
        """Dispatch a request whose path is relative to the protocol's ``/v1`` root."""
        return self.router.dispatch(request)

    def create_file(self, request: Request) -> Response:
        """``POST /files``: store an upload (the protocol's own form)."""
        raise NotImplementedError

    def list_files(self, request: Request) -> Response:
        """``GET /files``: the protocol's own listing."""
        raise NotImplementedError

    def get_file(self, request: Request) -> Response:
        """``GET /files/{id}``: the protocol's own file object."""
        raise NotImplementedError

    def _require_file(self, file_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def _file_object(self, meta: dict[str, Any]) -> dict[str, Any]:
        obj = public(meta)
        obj["bytes"] = meta.get("_size", 0)
        return obj

    def _file_metas(self) -> list[dict[str, Any]]:
        """Every stored file record of this protocol, newest first."""
        directory = self.store.root / self.provider / "files"
        metas = []
        for path in directory.glob("*.json") if directory.is_dir() else []:
            if path.name.startswith(".tmp-"):
                continue
            meta = self.store.read_json(path)
            if meta is not None:
                metas.append(meta)
        metas.sort(key=lambda m: (m.get("created_at", 0), m["id"]), reverse=True)
        return metas

    def delete_file(self, request: Request) -> Response:
        """``DELETE /files/{id}``."""
        file_id = request.params["file_id"]
        self._require_file(file_id)
        self.store.delete_file(self.provider, file_id)
        return json_response({"id": file_id, "object": "file", "deleted": True})

    def file_content(self, request: Request) -> Response:
        """``GET /files/{id}/content``: stream the raw bytes."""
        meta = self._require_file(request.params["file_id"])
        return Response(
            status=200,
            body=self.store.iter_file_chunks(self.provider, meta["id"]),
            content_type="application/octet-stream",
            length=meta.get("_size"),
        )
