"""Write a thread's results as JSONL, CSV, Parquet or `.npy`, page by page, whatever the batch size.

Results come as pages of serialised lines (the store's layout, `agent.bulk`), read from the local
store or from a served graph's `/store/items`. JSONL copies each page as it is; CSV decodes one
page at a time and writes one row per result, so a 200,000-request batch never sits in memory.

An embeddings thread's lines hold each vector as base64 float32 (`agent.vectors`): JSONL writes
it as an `embedding` list of floats; Parquet and `.npy` (`agent.vector_export`) write the
float32 values themselves, to a file only, and only for embeddings threads.

CSV is for spreadsheets, and answers are untrusted text (a support ticket can talk a model into
answering `=HYPERLINK(...)`). A text cell that a spreadsheet would run as a formula gets a leading
apostrophe, so spreadsheets show it as plain text. JSONL keeps every answer byte for byte.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import orjson

from agent.vector_export import ExportError, ExportReport, write_npy, write_parquet
from agent.vectors import is_vector_line, output_record

CSV_COLUMNS = ("id", "status", "content", "input_tokens", "output_tokens", "error")

# The first characters that make Excel, LibreOffice or Google Sheets read a cell as a formula
# (OWASP "CSV injection"); tab and carriage return start one after the spreadsheet trims them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ResultFormat(StrEnum):
    """Output formats of `batch-agent results` (and `run --wait`)."""

    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"
    npy = "npy"

    @property
    def streams(self) -> bool:
        """Tell whether the format can go to a stream (stdout); Parquet and .npy need a file."""
        return self in (ResultFormat.jsonl, ResultFormat.csv)

    @property
    def vectors_only(self) -> bool:
        """Tell whether the format holds only embeddings threads' results."""
        return self in (ResultFormat.parquet, ResultFormat.npy)


def export_results(
    pages: Iterable[bytes], out_path: Path, fmt: ResultFormat | str, count: int | None = None
) -> ExportReport:
    """Write result pages to the file `out_path` in any format; return what was written.

    Args:
        pages: Pages of results, each one JSON result per line, in input order.
        out_path: The file to write (its folder is made; Parquet / .npy replace it once complete).
        fmt: `jsonl`, `csv`, `parquet` or `npy` (the last two: embeddings threads only).
        count: The results the thread holds; Parquet / .npy refuse to write another number
            (their rows are matched to requests by position).

    Raises:
        ExportError: Chat results as Parquet / .npy, or vectors that do not fit one array.
    """
    fmt = ResultFormat(fmt)
    if fmt is ResultFormat.parquet:
        return write_parquet(pages, out_path, count)
    if fmt is ResultFormat.npy:
        return write_npy(pages, out_path, count)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("wb") as fh:
        rows = write_results(pages, fh, fmt)
    return ExportReport(rows=rows, failed=0, dims=None)


def write_results(pages: Iterable[bytes], out: IO[bytes], fmt: ResultFormat | str) -> int:
    """Write result pages to a binary stream in `fmt`; return how many results were written.

    Args:
        pages: Pages of results, each one JSON result per line, in input order.
        out: Binary stream (a file opened `wb`, or `sys.stdout.buffer`); left open.
        fmt: `jsonl` (the stored lines, unchanged; an embeddings line with its vector as a
            list of floats, `agent.vectors.output_record`) or `csv` (columns `CSV_COLUMNS`).

    Raises:
        ExportError: `fmt` is Parquet or .npy, which need a file (`export_results`).
    """
    fmt = ResultFormat(fmt)
    if not fmt.streams:
        raise ExportError(f"--format {fmt} writes a binary file: give it with --out FILE")
    if fmt is ResultFormat.jsonl:
        written = 0
        for page in pages:
            out.write(_jsonl_page(page))
            written += page.count(b"\n")
        return written
    # newline="": the csv module writes its own line endings (RFC 4180 CRLF), and embedded
    # newlines inside quoted fields must reach the file untouched.
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        writer = csv.writer(text)
        writer.writerow(CSV_COLUMNS)
        written = 0
        for page in pages:
            writer.writerows(csv_row(orjson.loads(line)) for line in page.splitlines() if line)
            written += page.count(b"\n")
        text.flush()
    finally:
        text.detach()  # hand the binary stream back open (stdout stays usable)
    return written


def _jsonl_page(page: bytes) -> bytes:
    """Return a page as JSONL output: chat lines as stored, vector lines with float lists.

    One line decides for its page: a thread's lines are all chat or all embeddings.
    """
    first = page[: page.find(b"\n")] if b"\n" in page else page
    if not first.strip() or not is_vector_line(orjson.loads(first)):
        return page
    return b"".join(
        orjson.dumps(output_record(orjson.loads(line)), option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        for line in page.splitlines()
        if line
    )


def csv_row(result: dict[str, Any]) -> list[Any]:
    """Return the CSV row of one stored result (`error` is `code: message`, empty on success).

    Text that a spreadsheet would read as a formula is defused (`as_text_cell`).
    """
    usage = result.get("usage") or {}
    error = result.get("error")
    return [
        result["id"],
        result["status"],
        as_text_cell(result.get("content") or ""),
        usage.get("input_tokens", 0),
        usage.get("output_tokens", 0),
        as_text_cell(f"{error.get('code')}: {error.get('message')}") if error else "",
    ]


def as_text_cell(text: str) -> str:
    """Return `text` so that a spreadsheet shows it as text and never evaluates it.

    Only model answers and provider error messages go through here: ids are the caller's own
    and must match the input exactly, and token counts are numbers.
    """
    return "'" + text if text.startswith(FORMULA_STARTS) else text
