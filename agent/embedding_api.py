"""`run_batch_embeddings`: texts embedded through a provider batch API, from Python.

    from langchain_openai import OpenAIEmbeddings
    from agent import run_batch_embeddings
    vectors = run_batch_embeddings(texts, model=OpenAIEmbeddings(model="text-embedding-3-small"))
    vectors.array  # float32, one row per text in input order, as `embed_documents` returns them

The same graph as `run_batch` (`{"embed": [...]}` input), on the same in-memory pair or `db`, so
a thread resumes by id. `model=` takes a LangChain embeddings object (`OpenAIEmbeddings`,
`MistralAIEmbeddings`, `GoogleGenerativeAIEmbeddings`), whose provider, model and settings are
read by `agent.providers.embedding_spec`; or a model name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.api import ThreadSummary, drive_thread, open_graph, run_settings
from agent.statuses import TERMINAL_THREAD_STATUSES
from agent.vectors import DTYPE, decode

if TYPE_CHECKING:
    import numpy as np


class EmbeddingResults(ThreadSummary):
    """One vector per text in input order, plus the thread's id, status, counts and cost.

    `array` is a float32 array of shape (texts, dimensions), a failed text's row NaN (its
    error in `errors`, by id); `tolist()` gives `list[list[float]]`, as `embed_documents`
    returns. Empty while the batch is still running (`wait=False`).
    """

    def __init__(
        self,
        ids: list[str],
        array: np.ndarray[Any, Any],
        errors: dict[str, Any],
        thread_id: str,
        values: dict[str, Any],
    ) -> None:
        """Hold the vectors and the thread state's summary."""
        super().__init__(thread_id, values)
        self.ids = ids
        self.array = array
        self.errors = errors

    def __len__(self) -> int:
        """Return the number of texts with a row (0 while running)."""
        return len(self.ids)

    def __getitem__(self, index: int) -> np.ndarray[Any, Any]:
        """Return one text's vector (float32; NaN for a failed text)."""
        return self.array[index]  # type: ignore[no-any-return]

    def tolist(self) -> list[list[float]]:
        """Return the vectors as `embed_documents` returns them (failed texts: NaN rows)."""
        return self.array.tolist()  # type: ignore[no-any-return]


def run_batch_embeddings(
    texts: Sequence[Any] | os.PathLike[str] | None,
    *,
    model: Any = None,
    provider: str | None = None,
    dimensions: int | None = None,
    db: str | os.PathLike[str] | None = None,
    thread_id: str | None = None,
    wait: bool = True,
    **context: Any,
) -> EmbeddingResults:
    """Embed texts through a provider batch API; return one vector per text, in order.

    Args:
        texts: A list of texts (str) or `{"id", "text"}` records; or a `pathlib.Path` to a
            JSONL (`{"id", "text"}` records) or TXT (one text per line) file, streamed; or None
            to resume `thread_id`.
        model: An `OpenAIEmbeddings` / `MistralAIEmbeddings` / `GoogleGenerativeAIEmbeddings`
            (its provider, model and settings are used, its key never read), or a model name,
            or None for the provider's default embeddings model.
        provider: `openai`, `mistral`, `gemini`, `emulator` or `auto`.
        dimensions: The vector size to ask for (models that take one).
        db: A SQLite file or `postgresql://` URL to keep the thread in (None: memory).
        thread_id: The thread to submit on or resume (default: a new one).
        wait: Poll until the batch is done. False submits (or checks once) and returns.
        **context: Any other run-context field (`agent.context.Context`).

    Returns:
        The vectors (`.array`, `.tolist()`, `.errors`), with `.thread_id`, `.status`, `.counts`,
        `.usage` and `.cost`.

    Raises:
        agent.requests.InputError: A text is invalid (nothing is uploaded).
        BatchError: A provider call failed for good; resume the thread later.
        TypeError, ValueError: Bad arguments.
    """
    if texts is None and thread_id is None:
        raise ValueError("give texts to embed, or thread_id to resume")
    graph_input = _graph_input(texts)
    settings = run_settings(
        {"provider": provider, "dimensions": dimensions, **context, **_model_context(model)}
    )
    with open_graph(db) as graph:
        thread_id, values = drive_thread(
            graph, thread_id, settings, graph_input, resume=texts is None, wait=wait, where=db
        )
        if values.get("status") not in TERMINAL_THREAD_STATUSES:
            import numpy as np

            return EmbeddingResults([], np.empty((0, 0), DTYPE), {}, thread_id, values)
        return _read_vectors(graph, thread_id, values)


def _graph_input(texts: Sequence[Any] | os.PathLike[str] | None) -> dict[str, Any]:
    """Turn `texts` into the graph's `embed` input."""
    if texts is None:
        return {}
    if isinstance(texts, os.PathLike):
        path = Path(texts)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: text file not found")
        return {"embed": True, "input_path": str(path.resolve())}
    if isinstance(texts, str | bytes):
        raise TypeError(
            "texts must be a list of texts (or records) or a pathlib.Path, not a string"
        )
    return {"embed": list(texts)}


def _model_context(model: Any) -> dict[str, Any]:
    """Return the context fields a model name or a LangChain embeddings object sets."""
    if model is None:
        return {}
    if isinstance(model, str):
        return {"model": model}
    from agent.providers.embedding_spec import embeddings_spec

    spec = embeddings_spec(model)
    fields = {"provider": spec["provider"], "model": spec["model"]}
    if spec.get("params"):
        fields["model_settings"] = spec["params"]
    for key in ("base_url", "organization"):
        if spec.get(key):
            fields[key] = spec[key]
    return fields


def _read_vectors(graph: Any, thread_id: str, values: dict[str, Any]) -> EmbeddingResults:
    """Read the thread's vectors from the store into one float32 array, page by page."""
    import numpy as np

    from agent.bulk import ThreadData

    count = int(values.get("request_count") or 0)
    ids: list[str] = []
    errors: dict[str, Any] = {}
    array: np.ndarray[Any, Any] | None = None
    for position, stored in enumerate(ThreadData(graph.store, thread_id).iter_results(count)):
        ids.append(stored["id"])
        vector = stored.get("vector")
        if vector is None:
            errors[stored["id"]] = stored.get("error")
            continue
        row = decode(vector)
        if array is None:
            array = np.full((count, row.shape[0]), np.nan, dtype=DTYPE)
        array[position] = row
    if array is None:
        array = np.full((count, 0), np.nan, dtype=DTYPE)
    return EmbeddingResults(ids, array, errors, thread_id, values)
