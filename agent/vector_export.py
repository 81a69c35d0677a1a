"""Stream an embeddings thread's vectors to Parquet or `.npy`, a page at a time.

A million vectors of 1,536 dimensions are 6 GB of float32: they are never all in memory.
Result pages (`agent.bulk`, lines in the `agent.vectors` format) are decoded one at a time into
a float32 buffer of one row group (Parquet) or one page (`.npy`) and written out.

- Parquet (`pyarrow.parquet.ParquetWriter`): columns `id`, `status`, `embedding`
  (`fixed_size_list<float32>[dims]`, null for a failed request), `input_tokens`, `error`
  (`code: message`), one row group per `ROW_GROUP_BYTES` of vectors (whole pages).
- `.npy`: one float32 array of shape (rows, dims) in input order, a failed request's row NaN.
  The header is written last, into room kept for it at the start, so the shape is the rows
  actually written.

The dimension count is the first stored vector's; pages before it (only failures) wait in a
temporary file. Every vector must have it (an array has one width). Both formats are written
to a temporary file next to `out_path`, renamed over it once complete: an export that fails
leaves no half file behind.

pyarrow and numpy are imported by the functions that use them, not by this module.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from agent.vectors import (
    DIMENSIONS_KEY,
    DTYPE,
    FLOAT32_BYTES,
    VECTOR_KEY,
    VectorFormatError,
    decode_bytes,
    dimensions_of,
    is_vector_line,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Vectors per Parquet row group, in bytes of float32 (whole pages, at least one): large enough
# for fast scans, small enough that the buffer stays a few tens of MB.
ROW_GROUP_BYTES = 64 * 1024 * 1024
# Room kept for the `.npy` header (format 1.0): magic, version, length and the dict padded with
# spaces; a multiple of 64, as numpy aligns its own headers.
NPY_HEADER_BYTES = 128


class ExportError(ValueError):
    """Results that cannot be written in the asked format (a chat thread's as vectors, ...)."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote."""

    rows: int
    """Results written (one per request)."""
    failed: int
    """Rows of failed requests (a null `embedding`; NaN rows in `.npy`); counted by the
    Parquet and .npy writers only (0 for JSONL and CSV, which copy lines undecoded)."""
    dims: int | None
    """Dimensions of the vectors (None when no vector was written: chat results, or all failed)."""


@dataclass
class _Page:
    """One result page, decoded into columns; `vectors` is (rows, dims) float32."""

    ids: list[str]
    statuses: list[str]
    vectors: npt.NDArray[np.float32]
    failed: npt.NDArray[np.bool_]
    input_tokens: list[int]
    errors: list[str | None]


def write_parquet(pages: Iterable[bytes], out_path: Path, count: int | None = None) -> ExportReport:
    """Write vector result pages to a Parquet file; return what was written.

    Args:
        pages: Result pages in input order, each one JSON result per line (`agent.vectors`).
        out_path: The file to write (replaced once complete).
        count: The results expected; fewer or more is an error (a missing page).

    Raises:
        ExportError: Chat results, vectors of differing widths, or not `count` results.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    dims, replay = _with_dimensions(pages)
    vector_type = pa.list_(pa.float32()) if dims is None else pa.list_(pa.float32(), dims)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("status", pa.string()),
            ("embedding", vector_type),
            ("input_tokens", pa.int64()),
            ("error", pa.string()),
        ]
    )
    group_rows = max(1, ROW_GROUP_BYTES // (max(dims or 1, 1) * FLOAT32_BYTES))
    rows = failed = 0
    with _replacing(out_path) as tmp:
        writer = pq.ParquetWriter(
            tmp,
            schema,
            # Floats of an embedding are all different: a dictionary and min/max statistics
            # of them cost time and space and serve no query.
            use_dictionary=["status", "error"],
            write_statistics=["id", "status", "input_tokens"],
            # Nor does compression gain anything on them (float noise): it would halve the rate.
            compression={
                name: "none" if name == "embedding" else "snappy" for name in schema.names
            },
        )
        try:
            group: list[_Page] = []
            grouped = 0
            for page in _decoded(replay, dims):
                group.append(page)
                grouped += len(page.ids)
                rows += len(page.ids)
                failed += int(page.failed.sum())
                if grouped >= group_rows:
                    writer.write_table(_table(group, schema, dims), row_group_size=grouped)
                    group, grouped = [], 0
            if group:
                writer.write_table(_table(group, schema, dims), row_group_size=grouped)
        finally:
            writer.close()
        _check_count(rows, count)
    return ExportReport(rows=rows, failed=failed, dims=dims)


def write_npy(pages: Iterable[bytes], out_path: Path, count: int | None = None) -> ExportReport:
    """Write vector result pages as one float32 `.npy` array (rows, dims); return what was written.

    A failed request's row is NaN (`ExportReport.failed` counts them). With no vector at all
    the array is (rows, 0).

    Args:
        pages: Result pages in input order, each one JSON result per line (`agent.vectors`).
        out_path: The file to write (replaced once complete).
        count: The results expected; fewer or more is an error (a missing page).

    Raises:
        ExportError: Chat results, vectors of differing widths, or not `count` results.
    """
    dims, replay = _with_dimensions(pages)
    width = dims or 0
    rows = failed = 0
    with _replacing(out_path) as tmp, tmp.open("wb") as fh:
        fh.write(b"\0" * NPY_HEADER_BYTES)
        for page in _decoded(replay, dims):
            fh.write(page.vectors.tobytes())
            rows += len(page.ids)
            failed += int(page.failed.sum())
        _check_count(rows, count)
        fh.seek(0)
        fh.write(npy_header((rows, width)))
    return ExportReport(rows=rows, failed=failed, dims=dims)


def npy_header(shape: tuple[int, int]) -> bytes:
    """Return a `.npy` (format 1.0) header of a C-order little-endian float32 array, padded.

    Padded with spaces to `NPY_HEADER_BYTES`, the room `write_npy` keeps before the data.
    """
    from numpy.lib import format as npy_format

    text = repr({"descr": DTYPE, "fortran_order": False, "shape": shape})
    prefix = npy_format.magic(1, 0)
    room = NPY_HEADER_BYTES - len(prefix) - 2
    body = text.encode("latin1").ljust(room - 1) + b"\n"
    if len(body) > room:
        raise ExportError(f"an array of shape {shape} needs a longer .npy header")
    return prefix + len(body).to_bytes(2, "little") + body


def _check_count(rows: int, count: int | None) -> None:
    if count is not None and rows != count:
        raise ExportError(
            f"the store holds {rows:,} results of {count:,}: a result page is missing "
            "(the rows would not line up with the requests)"
        )


@contextlib.contextmanager
def _replacing(out_path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `out_path`, renamed over it if the block succeeds."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out_path.name}.", dir=out_path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)


def _with_dimensions(pages: Iterable[bytes]) -> tuple[int | None, Iterator[bytes]]:
    """Return the vectors' dimension count and the pages again, from the first.

    Pages read before the first vector (failures only, small lines) wait in a temporary file,
    so the pages may be a stream read once (a served store's).
    """
    spool: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by `_replayed`)
    lengths: list[int] = []
    stream = iter(pages)
    for page in stream:
        dims = _first_dimensions(page)
        if dims is not None:
            return dims, _replayed(spool, lengths, page, stream)
        spool.write(page)
        lengths.append(len(page))
    return None, _replayed(spool, lengths, None, iter(()))


def _replayed(
    spool: IO[bytes], lengths: list[int], page: bytes | None, rest: Iterator[bytes]
) -> Iterator[bytes]:
    with spool:
        spool.seek(0)
        for length in lengths:
            yield spool.read(length)
    if page is not None:
        yield page
    yield from rest


def _first_dimensions(page: bytes) -> int | None:
    """Return the width of the first vector of a page (None when it holds none)."""
    for line in page.splitlines():
        if not line:
            continue
        result = orjson.loads(line)
        _require_vector_line(result)
        text = result.get(VECTOR_KEY)
        if text:
            return int(result.get(DIMENSIONS_KEY) or 0) or dimensions_of(text)
    return None


def _require_vector_line(result: Any) -> None:
    if not isinstance(result, dict) or not is_vector_line(result):
        raise ExportError(
            "these are a chat thread's results: Parquet and .npy hold embeddings threads' "
            "vectors; write chat results as jsonl or csv"
        )


def _decoded(pages: Iterable[bytes], dims: int | None) -> Iterator[_Page]:
    """Decode each page into columns and a (rows, dims) float32 array (failed rows NaN)."""
    import numpy as np

    width = dims or 0
    for page in pages:
        lines = [line for line in page.splitlines() if line]
        vectors = np.full((len(lines), width), np.nan, dtype=DTYPE)
        failed = np.zeros(len(lines), dtype=bool)
        out = _Page([], [], vectors, failed, [], [])
        for row, line in enumerate(lines):
            result = orjson.loads(line)
            _require_vector_line(result)
            out.ids.append(result["id"])
            out.statuses.append(result["status"])
            out.input_tokens.append(int((result.get("usage") or {}).get("input_tokens") or 0))
            error = result.get("error")
            out.errors.append(f"{error.get('code')}: {error.get('message')}" if error else None)
            text = result.get(VECTOR_KEY)
            if not text:
                failed[row] = True
                continue
            try:
                raw = decode_bytes(text)
            except VectorFormatError as exc:
                raise ExportError(f"result {result['id']!r}: {exc}") from None
            if len(raw) != width * FLOAT32_BYTES:
                raise ExportError(
                    f"result {result['id']!r} has {len(raw) // FLOAT32_BYTES} dimensions where "
                    f"the first vector has {width}: one array holds one width (write jsonl)"
                )
            vectors[row] = np.frombuffer(raw, dtype=DTYPE)
        yield out


def _table(group: list[_Page], schema: Any, dims: int | None) -> Any:
    """Return one row group's pages as a pyarrow table of `schema`."""
    import numpy as np
    import pyarrow as pa

    failed = np.concatenate([page.failed for page in group])
    if dims is None:
        embedding = pa.nulls(len(failed), type=schema.field("embedding").type)
    else:
        values = np.concatenate([page.vectors for page in group]).reshape(-1)
        embedding = pa.FixedSizeListArray.from_arrays(
            pa.array(values, type=pa.float32()), dims, mask=pa.array(failed)
        )
    return pa.Table.from_arrays(
        [
            pa.array([i for page in group for i in page.ids], type=pa.string()),
            pa.array([s for page in group for s in page.statuses], type=pa.string()),
            embedding,
            pa.array([t for page in group for t in page.input_tokens], type=pa.int64()),
            pa.array([e for page in group for e in page.errors], type=pa.string()),
        ],
        schema=schema,
    )
