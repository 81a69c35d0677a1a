"""Bad input fails with the file, line and request id, before anything is uploaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.requests import (
    BatchRequest,
    InputError,
    iter_file_requests,
    iter_validated,
    iter_with_system_prompt,
)


def _read(path: Path) -> list[BatchRequest]:
    """Read a request file as the CLI and the graph do (`iter_file_requests`), to the end."""
    return list(iter_file_requests(path))


def _validated(records: list[Any]) -> list[BatchRequest]:
    """Validate inline records as the graph does (record numbers stand in for lines)."""
    return list(iter_validated(enumerate(records, start=1), source="input"))


def _with_system(requests: list[BatchRequest], system_prompt: str) -> list[BatchRequest]:
    return list(iter_with_system_prompt(requests, system_prompt))


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_all_three_jsonl_forms_and_params(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "in.jsonl",
        [
            json.dumps({"id": "a", "prompt": "hi", "params": {"temperature": 0}}),
            "",
            json.dumps(
                {
                    "id": "b",
                    "messages": [
                        {"role": "system", "content": "s"},
                        {"role": "user", "content": "q"},
                    ],
                }
            ),
            json.dumps(
                {
                    "custom_id": "c",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "gpt-4o",
                        "messages": [{"role": "user", "content": "x"}],
                        "max_tokens": 5,
                    },
                }
            ),
        ],
    )
    a, b, c = _read(path)
    assert (a.id, a.messages, a.params) == (
        "a",
        [{"role": "user", "content": "hi"}],
        {"temperature": 0},
    )
    assert b.messages[0]["role"] == "system"
    assert c.id == "c" and c.model == "gpt-4o" and c.params == {"model": "gpt-4o", "max_tokens": 5}


def test_txt_one_prompt_per_line_ids_by_line_number(tmp_path: Path) -> None:
    path = _write(tmp_path, "in.txt", ["first", "", "third"])
    assert [(r.id, r.messages[0]["content"]) for r in _read(path)] == [
        ("line-1", "first"),
        ("line-3", "third"),
    ]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], "in.jsonl: no requests: the input is empty"),
        (["", "  "], "in.jsonl: no requests: the input is empty"),
        ([json.dumps({"id": "a", "prompt": "x"}), "{not json"], "in.jsonl:2: malformed JSON"),
        (
            [json.dumps({"id": "a", "prompt": "x"}), json.dumps({"id": "a", "prompt": "y"})],
            "in.jsonl:2: duplicate id, first used on line 1 (request id 'a')",
        ),
        ([json.dumps({"prompt": "x"})], "in.jsonl:1: missing or empty 'id'"),
        (
            [json.dumps({"id": "x" * 65, "prompt": "x"})],
            "in.jsonl:1: 'id' is longer than 64 characters",
        ),
        (
            [json.dumps({"id": "a"})],
            "in.jsonl:1: a record needs 'prompt' (or 'text') or 'messages' (request id 'a')",
        ),
        (
            [json.dumps({"id": "a", "messages": [{"role": "robot", "content": "x"}]})],
            "in.jsonl:1: message 0 has invalid role 'robot'",
        ),
        (
            [json.dumps({"id": "a", "messages": []})],
            "in.jsonl:1: 'messages' must be a non-empty list (request id 'a')",
        ),
        (
            [json.dumps({"id": "a", "prompt": "x", "params": {"stream": True}})],
            "in.jsonl:1: 'params' may not set stream (request id 'a')",
        ),
        (
            [
                json.dumps(
                    {
                        "custom_id": "a",
                        "method": "POST",
                        "url": "/v1/embeddings",
                        "body": {"input": "x"},
                    }
                )
            ],
            "in.jsonl:1: only /v1/chat/completions is supported",
        ),
        ([json.dumps([1, 2])], "in.jsonl:1: expected a JSON object, got list"),
        (
            [
                json.dumps({"id": "a", "prompt": "x"}),
                json.dumps({"id": "b", "prompt": "y", "model": "gpt-4o"}),
            ],
            "in.jsonl:2: unknown key 'model' (this form has id, messages, params, prompt, text; "
            "model parameters such as 'model' or 'temperature' go in 'params') (request id 'b')",
        ),
        (
            [
                json.dumps(
                    {
                        "custom_id": "a",
                        "body": {"messages": [{"role": "user", "content": "x"}]},
                        "temperature": 0,
                        "model": "gpt-4o",
                    }
                )
            ],
            "in.jsonl:1: unknown keys 'model', 'temperature' (this form has body, custom_id, "
            "method, url; model parameters go in 'body') (request id 'a')",
        ),
    ],
    ids=[
        "empty",
        "blank-lines",
        "malformed",
        "duplicate",
        "no-id",
        "long-id",
        "no-prompt",
        "bad-role",
        "no-messages",
        "reserved-param",
        "bad-url",
        "not-object",
        "top-level-model",
        "openai-line-extra-keys",
    ],
)
def test_bad_input_names_line_and_id(tmp_path: Path, lines: list[str], expected: str) -> None:
    with pytest.raises(InputError) as info:
        _read(_write(tmp_path, "in.jsonl", lines))
    assert str(info.value).startswith(expected)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        _read(tmp_path / "nope.jsonl")


def test_graph_input_uses_record_numbers() -> None:
    with pytest.raises(InputError, match=r"^input:2: duplicate id"):
        _validated([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])


def test_system_prompt_only_where_none_is_given() -> None:
    plain, own = _validated(
        [
            {"id": "a", "prompt": "x"},
            {
                "id": "b",
                "messages": [
                    {"role": "system", "content": "mine"},
                    {"role": "user", "content": "y"},
                ],
            },
        ]
    )
    plain, own = _with_system([plain, own], "be brief")
    assert plain.messages[0] == {"role": "system", "content": "be brief"}
    assert own.messages[0]["content"] == "mine" and len(own.messages) == 2


@given(
    record=st.fixed_dictionaries(
        {
            "id": st.one_of(st.text(max_size=70), st.integers(), st.none()),
            "prompt": st.one_of(st.text(max_size=20), st.integers(), st.none()),
        }
    )
)
@settings(max_examples=300, deadline=None)
def test_common_record_shortcut_equals_full_validation(record: dict[str, Any]) -> None:
    """The `{"id", "prompt"}` shortcut returns what full validation returns, or raises the same."""
    from agent.requests import _validate_record, _validate_record_fully

    def outcome(validate: Any) -> Any:
        try:
            return validate(record, source="f.jsonl", line=3)
        except InputError as exc:
            return ("error", str(exc))

    assert outcome(_validate_record) == outcome(_validate_record_fully)


def test_a_byte_order_mark_and_crlf_are_read_as_plain_utf8(tmp_path: Path) -> None:
    # Excel's and Notepad's "UTF-8" files start with a BOM and end lines with CRLF.
    records = b'{"id": "a", "prompt": "caf\xc3\xa9"}\r\n{"id": "b", "prompt": "y"}\r\n'
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + records)
    assert [(r.id, r.messages[0]["content"]) for r in _read(jsonl)] == [
        ("a", "café"),
        ("b", "y"),
    ]
    txt = tmp_path / "in.txt"
    txt.write_bytes(b"\xef\xbb\xbfhello\r\nworld\r\n")
    assert [(r.id, r.messages[0]["content"]) for r in _read(txt)] == [
        ("line-1", "hello"),
        ("line-2", "world"),
    ]


@pytest.mark.parametrize("name", ["in.jsonl", "in.txt"])
def test_text_that_is_not_utf8_names_file_line_and_byte(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    second = b'{"id": "b", "prompt": "caf\xe9"}' if name.endswith("jsonl") else b"caf\xe9"
    path.write_bytes(b'{"id": "a", "prompt": "x"}\n' + second + b"\n")
    with pytest.raises(InputError) as info:
        _read(path)
    column = second.index(b"\xe9") + 1
    assert str(info.value) == (
        f"{name}:2: not UTF-8 text (byte 0xe9 at byte {column} of the line); save the file as UTF-8"
    )
