"""What the three embeddings providers share: a text's request, float32 vectors, a capturing transport.

An embeddings batch line holds one text (`agent.requests.request_text`), and its result is the
one vector the provider's LangChain embeddings class returns for that text, stored as
little-endian float32 bytes (`vector_bytes`). The reference paths run the class's own
`embed_documents([text])` with an HTTP transport that never reaches the network: it records
the body the class sends and answers with what a batch line answered (`CapturingTransport`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from agent.requests import BatchRequest, InputError, request_text
from agent.vectors import DTYPE

# The dtype every stored vector has (`RequestOutcome.vector`, `agent.vectors.DTYPE`).
VECTOR_DTYPE: Final = np.dtype(DTYPE)
# The probe texts a builder's fast path is checked against its reference path with.
PROBE_TEXTS: Final = ("ping", "", "Two lines\nof text, with punctuation: ok?")


def vector_bytes(values: Sequence[float] | np.ndarray) -> bytes:
    """Return a vector as it is stored: little-endian float32 bytes."""
    return np.asarray(values, dtype=VECTOR_DTYPE).tobytes()


def embedding_text(request: BatchRequest) -> str:
    """Return the one text an embeddings request embeds.

    `embed_documents` takes no per-call model parameters the way `invoke` does, so a request
    naming its own parameters is refused rather than sent without them.

    Raises:
        InputError: The request is a conversation, or carries its own parameters.
    """
    text = request_text(request)
    if request.params:
        raise InputError(
            "an embeddings request takes only its text, not its own parameters "
            f"({', '.join(sorted(request.params))}): set them on the embeddings model",
            source=request.source,
            line=request.line,
            request_id=request.id,
        )
    return text


def plain_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """Return run settings without the unset (None) ones, which leave the class's defaults."""
    return {key: value for key, value in params.items() if value is not None}


def embedding_settings(
    cls: Any, params: Mapping[str, Any], field_name: str | None, provider: str
) -> dict[str, Any]:
    """Return the run's settings as the embeddings class takes them, refusing unknown ones.

    The generic `dimensions` is renamed to the class's own output-dimension field. A key that
    is no field of the class is refused: some classes ignore unknown keys, and OpenAI's
    moves them into `model_kwargs` (sent as API parameters) with only a warning.

    Args:
        cls: The LangChain embeddings class.
        params: The run's embeddings settings (None values: the class's defaults).
        field_name: The class's output-dimension field (None: the class has none).
        provider: The provider's name, for the refusals.

    Raises:
        InputError: An unknown setting, or `dimensions` for a class without such a field,
            or given twice.
    """
    settings = plain_settings(params)
    fields = cls.model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias} | {"dimensions"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InputError(
            f"model setting {', '.join(map(repr, unknown))} is not a setting of {cls.__name__} "
            f"({provider})",
            source="context",
        )
    if "dimensions" not in settings or field_name == "dimensions":
        return settings
    if field_name is None:
        raise InputError(
            f"model setting 'dimensions': {provider}'s LangChain embeddings class has no "
            "output dimension setting, so a batch cannot ask for one",
            source="context",
        )
    if field_name in settings:
        raise InputError(
            f"model settings 'dimensions' and {field_name!r} name the same setting; give one",
            source="context",
        )
    settings[field_name] = settings.pop("dimensions")
    return settings


@dataclass
class CapturingTransport:
    """The handler of a mock HTTP transport: records request bodies, answers what it is given.

    Works with httpx2's and httpx's `MockTransport` alike (`response_type` is the library's
    `Response`). Calls go out one at a time (`lock`), since the answer is shared state.
    """

    response_type: Callable[..., Any]
    answer: Callable[[dict[str, Any]], Any] | None = None
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Any) -> Any:
        """Record the request's JSON body and answer it (200 with `answer(body)`)."""
        body = json.loads(request.read() or b"{}")
        self.bodies.append(body)
        if self.answer is None:
            raise RuntimeError(
                f"batch-agent's reference embeddings model never calls the API ({request.url})"
            )
        return self.response_type(200, json=self.answer(body))

    @contextmanager
    def answering(self, answer: Callable[[dict[str, Any]], Any]) -> Iterator[list[dict[str, Any]]]:
        """Answer every call made inside the block with `answer(body)`; yield the bodies sent."""
        with self.lock:
            self.answer, self.bodies = answer, []
            try:
                yield self.bodies
            finally:
                self.answer = None


def probe_vector(dimensions: int) -> list[float]:
    """Return a unit vector of `dimensions` float32 values (an answer for self-checks)."""
    values = np.arange(1, dimensions + 1, dtype=np.float64)
    return [float(v) for v in (values / np.linalg.norm(values)).astype(VECTOR_DTYPE)]
