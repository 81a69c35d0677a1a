"""Write a thread's results as JSONL or CSV, page by page, whatever the batch size.

Results come as pages of serialised lines (the store's layout, `agent.bulk`), read from the local
store or from a served graph's `/store/items`. JSONL copies each page as it is; CSV decodes one
page at a time and writes one row per result, so a 200,000-request batch never sits in memory.

CSV is for spreadsheets, and answers are untrusted text (a support ticket can talk a model into
answering `=HYPERLINK(...)`). A text cell that a spreadsheet would run as a formula gets a leading
apostrophe, so spreadsheets show it as plain text. JSONL keeps every answer byte for byte.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from enum import StrEnum
from typing import IO, Any

import orjson

CSV_COLUMNS = ("id", "status", "content", "input_tokens", "output_tokens", "error")

# The first characters that make Excel, LibreOffice or Google Sheets read a cell as a formula
# (OWASP "CSV injection"); tab and carriage return start one after the spreadsheet trims them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ResultFormat(StrEnum):
    """Output formats of `batch-agent results` (and `run --wait`)."""

    jsonl = "jsonl"
    csv = "csv"


def write_results(pages: Iterable[bytes], out: IO[bytes], fmt: ResultFormat | str) -> int:
    """Write result pages to a binary stream in `fmt`; return how many results were written.

    Args:
        pages: Pages of results, each one JSON result per line, in input order.
        out: Binary stream (a file opened `wb`, or `sys.stdout.buffer`); left open.
        fmt: `jsonl` (the stored lines, unchanged) or `csv` (columns `CSV_COLUMNS`).
    """
    if ResultFormat(fmt) is ResultFormat.jsonl:
        written = 0
        for page in pages:
            out.write(page)
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
