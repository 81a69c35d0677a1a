"""Result downloads are split into lines from raw byte chunks (`nonblank_lines`).

The SDKs hand us a file in chunks of arbitrary size; a line may span chunks, files may use
CRLF, and blank lines must be skipped, exactly as the SDKs' own `iter_lines` did.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.providers.base import nonblank_lines
from tests.support import run_with_wait_budget

LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@given(
    lines=st.lists(LINE, max_size=30),
    ending=st.sampled_from([b"\n", b"\r\n"]),
    final_newline=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_chunking_gives_the_files_nonblank_lines(
    lines: list[bytes], ending: bytes, final_newline: bool, cuts: list[int]
) -> None:
    data = ending.join(lines) + (ending if final_newline and lines else b"")
    expected = [line for line in lines if line.strip()]
    assert list(nonblank_lines(_chunked(data, cuts))) == expected


def test_a_line_split_across_chunks_comes_out_whole() -> None:
    chunks = [b'{"custom_id": "a"}\n{"cus', b'tom_id": ', b'"b"}\r\n\n  \n{"custom_id": "c"}']
    assert list(nonblank_lines(chunks)) == [
        b'{"custom_id": "a"}',
        b'{"custom_id": "b"}',
        b'{"custom_id": "c"}',
    ]


# Valid inside a JSON string, unescaped by most encoders, and a line break to `str.splitlines`
# (which the SDKs' `iter_lines` uses): an answer holding one used to be cut in two and lost.
UNICODE_BREAKS = ["\u2028", "\u2029", "\x85", "\x1c"]


@pytest.mark.parametrize("provider", ["openai", "mistral", "anthropic", "gemini"])
def test_answers_holding_unicode_line_separators_come_back_whole(provider: str) -> None:
    records = [
        {"id": f"r{i}", "prompt": f"first{sep}second"} for i, sep in enumerate(UNICODE_BREAKS)
    ]
    values, _ = run_with_wait_budget(provider, records)
    assert values["status"] == "completed"
    for record, result in zip(records, values["results"], strict=True):
        assert result["status"] == "succeeded", result["error"]
        assert record["prompt"] in result["message"].content
