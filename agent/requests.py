"""Read, validate and normalise request records before anything is uploaded.

Three input forms are accepted, in a JSONL file or as the graph's `requests` input:

- `{"id": "t1", "prompt": "...", "params": {...}}` (or `"text"` for `"prompt"`: both are the one
  text an embeddings request embeds, `request_text`)
- `{"id": "t1", "messages": [{"role": "user", "content": "..."}], "params": {...}}`
- OpenAI batch lines: `{"custom_id": "t1", "method": "POST", "url": "/v1/chat/completions",
  "body": {"model": ..., "messages": [...], ...}}`

A `.txt` file holds one prompt per line (ids `line-1`, `line-2`, ... by line number). Every problem
is reported with the source, the line number and the request id, so the user can fix the input
before paying for anything.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from agent.first_seen import FirstSeen

MAX_ID_LENGTH = 64
ALLOWED_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
CHAT_COMPLETIONS_URL: Final = "/v1/chat/completions"
# The URL of OpenAI's (and Mistral's) embeddings batch lines and jobs.
EMBEDDINGS_URL: Final = "/v1/embeddings"
# The URL of OpenAI's Responses API batch lines and jobs.
RESPONSES_URL: Final = "/v1/responses"
# Keys a request may not set itself: the batch decides streaming and carries the messages.
RESERVED_PARAMS = frozenset({"messages", "stream", "stream_options"})
# The keys of each record form. Any other key is refused rather than dropped: a top-level
# `"model"` or `"temperature"` that is silently ignored would run the whole batch with defaults.
RECORD_KEYS = frozenset({"id", "prompt", "text", "messages", "params"})
OPENAI_LINE_KEYS = frozenset({"custom_id", "method", "url", "body"})


class HashedSpec(Protocol):
    """What a request set's fingerprint takes of its tools / response schema.

    `agent.structured.OutputSpec` is one; naming only what the hash reads keeps this module
    free of the structured-output machinery (LangChain runnables), which builds on it.
    """

    def digest_bytes(self) -> bytes:
        """Return the bytes that stand for the spec in the request set's fingerprint."""
        ...


class InputError(ValueError):
    """A request record is invalid; the message names the source, line and request id."""

    def __init__(
        self, problem: str, *, source: str, line: int | None = None, request_id: str | None = None
    ) -> None:
        """Build the error from its parts.

        Args:
            problem: What is wrong, in words a user can act on.
            source: The file name or `input` for graph input.
            line: 1-based line number (or record number for graph input).
            request_id: The request's id, when it is known.
        """
        where = source if line is None else f"{source}:{line}"
        suffix = f" (request id {request_id!r})" if request_id is not None else ""
        super().__init__(f"{where}: {problem}{suffix}")
        self.problem = problem
        self.source = source
        self.line = line
        self.request_id = request_id

    def located_at(self, request: BatchRequest) -> InputError:
        """Return this error with `request`'s file and line, if it is about that request.

        Checks made after validation (planning, body building) know the request but not where
        it came from; the request does. An error about another request, or one that already
        names its line, is returned as it is.
        """
        if self.line is not None or self.request_id != request.id or request.line is None:
            return self
        return InputError(
            self.problem, source=request.source, line=request.line, request_id=request.id
        )


@dataclass(frozen=True)
class BatchRequest:
    """One validated request: chat messages plus per-request model parameters.

    `source` and `line` say where the request was read (file name, or `input` with the record
    number), so a check made later can name them. They take no part in equality.
    """

    id: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    source: str = field(default="input", compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    @property
    def model(self) -> str | None:
        """Return the model this request names itself, if any."""
        model = self.params.get("model")
        return str(model) if model else None


def request_text(request: BatchRequest) -> str:
    """Return the text an embeddings request embeds (its `text` or `prompt`).

    Raises:
        InputError: The request is a chat conversation (`messages`), which has no one text.
    """
    messages = request.messages
    if len(messages) == 1 and messages[0].get("role") == "user":
        content = messages[0].get("content")
        if isinstance(content, str):
            return content
    raise InputError(
        "an embeddings request takes one 'text' (or 'prompt'), not 'messages'",
        source=request.source,
        line=request.line,
        request_id=request.id,
    )


def iter_file_requests(path: str | Path) -> Iterator[BatchRequest]:
    """Stream and validate a request file, one request at a time (constant memory per line).

    Raises:
        InputError: The file is missing, empty, or a line is invalid (raised when reached).
    """
    path = Path(path)
    source = path.name
    if not path.is_file():
        raise InputError("file not found", source=str(path))
    if path.suffix.lower() == ".txt":
        records: Iterable[tuple[int, Any]] = _txt_records(path, source)
    else:
        records = _jsonl_records(path, source)
    return iter_validated(records, source=source)


def iter_validated(records: Iterable[tuple[int, Any]], *, source: str) -> Iterator[BatchRequest]:
    """Yield validated requests from numbered records, checking ids are unique as it goes.

    Args:
        records: `(line number, parsed record)` pairs (for the graph's inline `requests`,
            record numbers stand in for line numbers).
        source: Name used in error messages (the file name, or `input`).

    Raises:
        InputError: On the first invalid record or duplicate id (raised when reached), or
            when there are no records at all.
    """
    # Id -> the line it was first used on; bounded memory at any size (`agent.first_seen`).
    with FirstSeen() as first_line:
        for line, record in records:
            request = _validate_record(record, source=source, line=line)
            here = str(line)
            first = first_line.setdefault(request.id, here)
            if first != here:
                raise InputError(
                    f"duplicate id, first used on line {first}",
                    source=source,
                    line=line,
                    request_id=request.id,
                )
            yield request
        if not len(first_line):
            raise InputError("no requests: the input is empty", source=source)


def iter_with_system_prompt(
    requests: Iterable[BatchRequest], system_prompt: str
) -> Iterator[BatchRequest]:
    """Prepend `system_prompt` to every request that has no system message of its own."""
    if not system_prompt:
        yield from requests
        return
    system = {"role": "system", "content": system_prompt}
    for r in requests:
        if any(m.get("role") in {"system", "developer"} for m in r.messages):
            yield r
        else:
            yield BatchRequest(r.id, [system, *r.messages], r.params, r.source, r.line)


def request_set_hash(requests: Iterable[BatchRequest], spec: HashedSpec | None = None) -> str:
    """Return a stable fingerprint of a request set (ids, messages and parameters, in order).

    The set's tools / response schema (`spec`) are part of it: changing them is a new set.
    """
    digest = hashlib.sha256()
    for r in requests:
        update_hash(digest, r)
    finish_hash(digest, spec)
    return digest.hexdigest()


def finish_hash(digest: Any, spec: HashedSpec | None) -> None:
    """Feed the request set's tools / response schema, if any, into a `request_set_hash` digest."""
    if spec is not None:
        digest.update(spec.digest_bytes())


def update_hash(digest: Any, request: BatchRequest) -> None:
    """Feed one request into a running `request_set_hash` digest."""
    digest.update(
        orjson.dumps([request.id, request.messages, request.params], option=orjson.OPT_SORT_KEYS)
    )
    digest.update(b"\n")


def _txt_records(path: Path, source: str) -> Iterator[tuple[int, Any]]:
    for number, raw in _numbered_lines(path):
        try:
            prompt = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise _not_utf8(exc, source, number) from None
        if prompt:
            yield number, {"id": f"line-{number}", "prompt": prompt}


def _jsonl_records(path: Path, source: str) -> Iterator[tuple[int, Any]]:
    for number, raw in _numbered_lines(path):
        if not raw.strip():
            continue
        try:
            # orjson reads the bytes as they are: no decode per line, and it checks UTF-8.
            yield number, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:  # orjson's own words for this mislead
                raise _not_utf8(bad, source, number) from None
            raise InputError(
                f"malformed JSON: {exc.msg} at column {_error_column(exc)}",
                source=source,
                line=number,
            ) from None


def _error_column(exc: orjson.JSONDecodeError) -> int:
    """Return the 1-based column (in characters) of a JSON error within its line.

    orjson's `colno` counts from the line terminator when the line ends early (`{"id": "b"`
    then a newline: "unexpected end of data" at line 2, column 1); the error is at the end of
    the request's own line.
    """
    text = exc.doc.rstrip("\r\n")
    return min(exc.pos, len(text)) + 1


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield `(line number, raw line)`, each line ending at a newline byte, as JSONL has it.

    A byte order mark at the start of the file is dropped: spreadsheet and Windows tools write
    one, and it is no part of the first request.
    """
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            yield number, raw


def _not_utf8(exc: UnicodeDecodeError, source: str, line: int) -> InputError:
    return InputError(
        f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at byte {exc.start + 1} of the "
        "line); save the file as UTF-8",
        source=source,
        line=line,
    )


def _validate_record(record: Any, *, source: str, line: int) -> BatchRequest:
    # The most common record, `{"id": "...", "prompt": "..."}`, valid as it is: the same request
    # `_validate_record_fully` returns, in a third of the time. Anything else takes the full path.
    if type(record) is dict and len(record) == 2:
        request_id = record.get("id")
        prompt = record.get("prompt", record.get("text"))
        if (
            type(request_id) is str
            and type(prompt) is str
            and len(request_id) <= MAX_ID_LENGTH
            and request_id.strip()
            and prompt.strip()
        ):
            return BatchRequest(request_id, [{"role": "user", "content": prompt}], {}, source, line)
    return _validate_record_fully(record, source=source, line=line)


def _validate_record_fully(record: Any, *, source: str, line: int) -> BatchRequest:
    if not isinstance(record, dict):
        raise InputError(
            f"expected a JSON object, got {type(record).__name__}", source=source, line=line
        )
    if "custom_id" in record:
        return _validate_openai_line(record, source=source, line=line)

    request_id = _validate_id(record.get("id"), source=source, line=line, key="id")
    _refuse_unknown_keys(
        record,
        RECORD_KEYS,
        "model parameters such as 'model' or 'temperature' go in 'params'",
        source=source,
        line=line,
        request_id=request_id,
    )
    params = record.get("params", {})
    if not isinstance(params, dict):
        raise InputError(
            "'params' must be an object", source=source, line=line, request_id=request_id
        )
    given = [key for key in ("prompt", "text", "messages") if key in record]
    if len(given) > 1:
        raise InputError(
            f"give one of 'prompt', 'text' or 'messages', not {' and '.join(given)}",
            source=source,
            line=line,
            request_id=request_id,
        )
    if "prompt" in record or "text" in record:
        key = given[0]
        prompt = record[key]
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(
                f"'{key}' must be a non-empty string",
                source=source,
                line=line,
                request_id=request_id,
            )
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    elif "messages" in record:
        messages = _validate_messages(
            record["messages"], source=source, line=line, request_id=request_id
        )
    else:
        raise InputError(
            "a record needs 'prompt' (or 'text') or 'messages'",
            source=source,
            line=line,
            request_id=request_id,
        )
    _validate_params(params, source=source, line=line, request_id=request_id)
    return BatchRequest(request_id, messages, dict(params), source, line)


def _validate_openai_line(record: dict[str, Any], *, source: str, line: int) -> BatchRequest:
    request_id = _validate_id(record.get("custom_id"), source=source, line=line, key="custom_id")
    _refuse_unknown_keys(
        record,
        OPENAI_LINE_KEYS,
        "model parameters go in 'body'",
        source=source,
        line=line,
        request_id=request_id,
    )
    method = record.get("method", "POST")
    if method != "POST":
        raise InputError(
            f"'method' must be POST, got {method!r}",
            source=source,
            line=line,
            request_id=request_id,
        )
    url = record.get("url", CHAT_COMPLETIONS_URL)
    if url != CHAT_COMPLETIONS_URL:
        raise InputError(
            f"only {CHAT_COMPLETIONS_URL} is supported, got url {url!r}",
            source=source,
            line=line,
            request_id=request_id,
        )
    body = record.get("body")
    if not isinstance(body, dict):
        raise InputError(
            "'body' must be an object", source=source, line=line, request_id=request_id
        )
    messages = _validate_messages(
        body.get("messages"), source=source, line=line, request_id=request_id
    )
    params = {k: v for k, v in body.items() if k != "messages"}
    _validate_params(params, source=source, line=line, request_id=request_id)
    return BatchRequest(request_id, messages, params, source, line)


def _refuse_unknown_keys(
    record: dict[str, Any],
    allowed: frozenset[str],
    hint: str,
    *,
    source: str,
    line: int,
    request_id: str,
) -> None:
    unknown = sorted(record.keys() - allowed)
    if unknown:
        names = ", ".join(repr(key) for key in unknown)
        raise InputError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {names} (this form has "
            f"{', '.join(sorted(allowed))}; {hint})",
            source=source,
            line=line,
            request_id=request_id,
        )


def _validate_id(value: Any, *, source: str, line: int, key: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"missing or empty '{key}' (a non-empty string)", source=source, line=line)
    if len(value) > MAX_ID_LENGTH:
        raise InputError(
            f"'{key}' is longer than {MAX_ID_LENGTH} characters",
            source=source,
            line=line,
            request_id=value,
        )
    return value


def _validate_messages(
    value: Any, *, source: str, line: int, request_id: str
) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise InputError(
            "'messages' must be a non-empty list", source=source, line=line, request_id=request_id
        )
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise InputError(
                f"message {index} is not an object", source=source, line=line, request_id=request_id
            )
        role = message.get("role")
        if role not in ALLOWED_ROLES:
            raise InputError(
                f"message {index} has invalid role {role!r} (expected one of {', '.join(sorted(ALLOWED_ROLES))})",
                source=source,
                line=line,
                request_id=request_id,
            )
        if role == "tool" and message.get("tool_call_id") in (None, ""):
            # LangChain's convert_to_messages would fail with a bare KeyError('tool_call_id').
            raise InputError(
                f"message {index} has role 'tool' but no 'tool_call_id' (the id of the "
                "assistant's tool call it answers)",
                source=source,
                line=line,
                request_id=request_id,
            )
        content = message.get("content")
        has_tool_calls = role == "assistant" and message.get("tool_calls")
        if isinstance(content, str):
            if not content.strip() and not has_tool_calls:
                raise InputError(
                    f"message {index} has empty content",
                    source=source,
                    line=line,
                    request_id=request_id,
                )
        elif isinstance(content, list):
            if not content:
                raise InputError(
                    f"message {index} has an empty content list",
                    source=source,
                    line=line,
                    request_id=request_id,
                )
        elif not (content is None and has_tool_calls):
            raise InputError(
                f"message {index} content must be a string or a list of parts",
                source=source,
                line=line,
                request_id=request_id,
            )
    return [dict(m) for m in value]


def _validate_params(params: dict[str, Any], *, source: str, line: int, request_id: str) -> None:
    reserved = sorted(RESERVED_PARAMS & params.keys())
    if reserved:
        raise InputError(
            f"'params' may not set {', '.join(reserved)}",
            source=source,
            line=line,
            request_id=request_id,
        )
    model = params.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InputError(
            "'model' must be a non-empty string", source=source, line=line, request_id=request_id
        )
