"""A job's requests read back, and its result files written once, line by line.

Both sides stream: the request lines of a job's source files are decoded one at a time, and the
output and error files are written in one pass over them, so memory stays flat whatever the
batch size. Which lines a job gets (how many requests are done, what an unfinished request
becomes) is the lifecycle's business (`agent.emulator.jobs`); what a line says is the protocol's
(its route module's renderer).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.emulator.store import Provider, Store


@dataclass(frozen=True)
class RequestLine:
    """One request read back from a job's sources.

    Attributes:
        index: 0-based position among non-blank lines of all sources.
        line: 1-based physical line number inside its source file.
        obj: The decoded line, or None if it is not valid JSON.
    """

    index: int
    line: int
    obj: Any


def iter_requests(store: Store, provider: Provider, sources: list[str]) -> Iterator[RequestLine]:
    """Stream the request lines of a job's source files, skipping blank lines.

    Args:
        store: The state store.
        provider: Which protocol's files to read.
        sources: Source file ids in order.

    Yields:
        Each request with its index, physical line number and decoded object.
    """
    index = 0
    for file_id in sources:
        for number, raw in enumerate(store.iter_file_lines(provider, file_id), start=1):
            if not raw.strip():
                continue
            try:
                obj: Any = json.loads(raw)
            except ValueError:
                obj = None
            yield RequestLine(index, number, obj)
            index += 1


# (request, created) -> (succeeded, output line, (prompt_tokens, completion_tokens))
LineRenderer = Callable[[RequestLine, int], tuple[bool, dict[str, Any], tuple[int, int]]]
# (job, kind "output"|"error", size, lines, created) -> file metadata to store
FileMetaFactory = Callable[[dict[str, Any], str, int, int, int], dict[str, Any]]
# request not processed (expired) -> its error line, or None for no line
UnfinishedRenderer = Callable[[RequestLine], dict[str, Any] | None]


@dataclass
class Outputs:
    """What finalisation produced.

    Attributes:
        output_file: Id of the success file, or None when no line succeeded.
        error_file: Id of the error file, or None when no line failed.
        prompt_tokens: Sum over succeeded lines.
        completion_tokens: Sum over succeeded lines.
    """

    output_file: str | None
    error_file: str | None
    prompt_tokens: int
    completion_tokens: int


def write_outputs(
    store: Store,
    provider: Provider,
    job: dict[str, Any],
    done: int,
    created: int,
    render: LineRenderer,
    make_meta: FileMetaFactory,
    unfinished: UnfinishedRenderer | None = None,
    shuffle: Callable[[int], float] | None = None,
    one_file: bool = False,
) -> Outputs:
    """Answer the first `done` requests and write the output and error files.

    Both files are written in one pass over the input, line by line, so memory
    stays flat whatever the batch size. A file with no line is not created.
    With `shuffle` (a fault knob, for tests), lines are buffered and written
    sorted by ``shuffle(index)`` instead.

    Args:
        store: The state store.
        provider: Which protocol.
        job: The job record.
        done: How many requests (in input order) get a line.
        created: The ``created`` timestamp to put in reply bodies and file metadata.
        render: Turns a request into an output or error line.
        make_meta: Builds the API metadata of a result file.
        unfinished: If given, called for every request past `done`; a returned
            line goes to the error file (OpenAI ``batch_expired``).
        shuffle: If given, the sort key of a line from its request index.
        one_file: Write failed lines to the output file too, in the same order as the
            others (a protocol with one results file per job); no error file is made.

    Returns:
        The ids of the files written and the token totals.
    """
    ids = {
        "output": make_meta(job, "output", 0, 0, created)["id"],
        "error": make_meta(job, "error", 0, 0, created)["id"],
    }
    counts = {"output": 0, "error": 0}
    sizes = {"output": 0, "error": 0}
    prompt = completion = 0
    out_path = store.file_data_path(provider, ids["output"])
    err_path = store.file_data_path(provider, ids["error"])
    buffered: dict[str, list[tuple[float, bytes]]] = {"output": [], "error": []}
    with store.atomic_writer(out_path) as out, store.atomic_writer(err_path) as err:
        handles = {"output": out, "error": err}
        for request in iter_requests(store, provider, job["_sources"]):
            ok = False
            line: dict[str, Any] | None
            if request.index >= done:
                if unfinished is None:
                    break
                line = unfinished(request)
                if line is None:
                    continue
            else:
                ok, line, (p_tokens, c_tokens) = render(request, created)
                if ok:
                    prompt += p_tokens
                    completion += c_tokens
            data = json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            kind = "output" if ok or one_file else "error"
            if shuffle is None:
                handles[kind].write(data)
            else:
                buffered[kind].append((shuffle(request.index), data))
            counts[kind] += 1
            sizes[kind] += len(data)
        for kind, rows in buffered.items():
            for _, data in sorted(rows, key=lambda row: row[0]):
                handles[kind].write(data)
    result: dict[str, str | None] = {}
    for kind in ("output", "error"):
        file_id = ids[kind]
        if counts[kind] == 0:
            # No line of this kind: drop the empty data file, report no file id.
            store.file_data_path(provider, file_id).unlink(missing_ok=True)
            result[kind] = None
            continue
        meta = make_meta(job, kind, sizes[kind], counts[kind], created)
        meta["id"] = file_id
        meta["_size"] = sizes[kind]
        store.put_file_meta(provider, meta)
        result[kind] = file_id
    return Outputs(result["output"], result["error"], prompt, completion)
