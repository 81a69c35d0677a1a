"""How an embedding is stored: float32 bytes, base64 in the thread's JSON result pages.

The LangGraph store takes JSON values only, so a vector's little-endian float32 bytes travel as
base64: 5.33 bytes per dimension, against about 20 for the same numbers written as JSON floats,
and decoded straight into numpy without parsing a number. A stored embeddings result is

    {"id", "status", "vector": <base64> | null, "dimensions": int | null, "usage", "error",
     "attempts"}   (+ "duplicate_of" for a deduplicated request)

and vectors never enter graph state. A failed request keeps the `vector` key (null): that key
is what tells an embeddings line from a chat line (`is_vector_line`).

numpy is imported only by `decode`: the read-only commands that print chat results must not pay
for it (`tests/unit_tests/test_startup_imports.py`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import numpy as np

VECTOR_KEY: Final = "vector"
DIMENSIONS_KEY: Final = "dimensions"
FLOAT32_BYTES: Final = 4
# Little-endian float32 whatever the machine: the bytes the providers send and `.npy` records.
DTYPE: Final = "<f4"


class VectorFormatError(ValueError):
    """A stored vector that is not base64 of whole float32 values."""


def encode(raw: bytes) -> str:
    """Return little-endian float32 bytes as the base64 text a result page stores.

    Raises:
        VectorFormatError: `raw` is not a whole number of float32 values.
    """
    if len(raw) % FLOAT32_BYTES:
        raise VectorFormatError(f"a float32 vector has a multiple of 4 bytes, not {len(raw)}")
    return base64.b64encode(raw).decode("ascii")


def decode_bytes(text: str) -> bytes:
    """Return the little-endian float32 bytes of a stored vector.

    Raises:
        VectorFormatError: `text` is not base64 of whole float32 values.
    """
    try:
        # Not `b64decode(validate=True)`: its check costs more than the decoding (an export
        # decodes a million of these); a damaged text still fails here or on its length below.
        raw = binascii.a2b_base64(text)
    except (binascii.Error, ValueError) as exc:
        raise VectorFormatError(f"a stored vector is not base64: {exc}") from None
    if len(raw) % FLOAT32_BYTES:
        raise VectorFormatError(f"a stored vector has {len(raw)} bytes, not whole float32 values")
    return raw


def decode(text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Return a stored vector as a (read-only) float32 array.

    Raises:
        VectorFormatError: `text` is not base64 of whole float32 values.
    """
    import numpy as np

    return np.frombuffer(decode_bytes(text), dtype=DTYPE)


def dimensions_of(text: str) -> int:
    """Return the number of dimensions of a stored vector."""
    return len(decode_bytes(text)) // FLOAT32_BYTES


def vector_fields(raw: bytes) -> dict[str, Any]:
    """Return the `vector` and `dimensions` fields of a stored result for float32 bytes."""
    return {VECTOR_KEY: encode(raw), DIMENSIONS_KEY: len(raw) // FLOAT32_BYTES}


def is_vector_line(result: Mapping[str, Any]) -> bool:
    """Tell whether a stored result is an embeddings result (succeeded or not)."""
    return VECTOR_KEY in result


def vector_result(
    request_id: str, raw: bytes, usage: Mapping[str, object], attempts: int
) -> dict[str, Any]:
    """Return the stored result of an embedded text (what `agent.results` stores for one).

    Args:
        request_id: The request's id.
        raw: The vector as little-endian float32 bytes (`RequestOutcome.vector`).
        usage: Tokens billed (`Usage`: input, output 0, total).
        attempts: The round that answered it.
    """
    return {
        "id": request_id,
        "status": "succeeded",
        **vector_fields(raw),
        "usage": dict(usage),
        "error": None,
        "attempts": attempts,
    }


def failed_vector_result(
    request_id: str, error: Mapping[str, Any], usage: Mapping[str, object], attempts: int
) -> dict[str, Any]:
    """Return the stored result of a text that was not embedded (`vector` null)."""
    return {
        "id": request_id,
        "status": "failed",
        VECTOR_KEY: None,
        DIMENSIONS_KEY: None,
        "usage": dict(usage),
        "error": dict(error),
        "attempts": attempts,
    }


def output_record(result: Mapping[str, Any]) -> dict[str, Any]:
    """Return what `--format jsonl` writes for a stored vector line: the vector as floats.

    `embedding` is a float32 array, written by `orjson.OPT_SERIALIZE_NUMPY` as the shortest
    text that reads back as the same float32 (what the provider's own JSON answer holds).
    """
    text = result.get(VECTOR_KEY)
    record: dict[str, Any] = {
        "id": result["id"],
        "status": result["status"],
        "embedding": decode(text) if text else None,
        DIMENSIONS_KEY: result.get(DIMENSIONS_KEY),
        "usage": result.get("usage"),
        "error": result.get("error"),
        "attempts": result.get("attempts"),
    }
    if "duplicate_of" in result:
        record["duplicate_of"] = result["duplicate_of"]
    return record
