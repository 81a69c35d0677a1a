"""What both emulated protocols do the same way with files: read, list, delete, stream content.

OpenAI and Mistral differ in how a file is created and in their error shapes, not in how a stored
file is found, described or streamed, so those handlers live here once.
"""

from __future__ import annotations

from typing import Any

from agent.emulator.clock import Clock
from agent.emulator.store import Provider, Store
from agent.emulator.web import Request, Response, json_response


def public(record: dict[str, Any]) -> dict[str, Any]:
    """Drop private (underscore) keys from a stored record."""
    return {key: value for key, value in record.items() if not key.startswith("_")}


class FileRoutes:
    """File handlers shared by the protocol route classes.

    Subclasses set `provider`, `store` and `clock`, and implement `_require_file` (the
    protocol's own 404).
    """

    provider: Provider
    store: Store
    clock: Clock

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
