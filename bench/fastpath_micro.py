"""Micro-benchmark: reference vs fast body building and result parsing, one process, one core.

Usage: `.venv/bin/python bench/fastpath_micro.py [--n 20000] [--repeat 3]`

Builds `--n` generated requests and output lines per provider, times each path with
`time.perf_counter` (one run for the slow references, the median of `--repeat` runs for the
fast paths) after checking every fast result equals the reference one, and prints
requests/second. Gemini's reference is far slower (google-genai's converters walk every
pydantic field), so its rows use `--gemini-n` requests; its builder caches the configuration
part of a request per distinct parameters, and the check run fills that cache first (a miss
costs one reference build; the note gives the rate from cold caches, with the generated
per-request parameters and without them).
`reference` and `fast` keep every result in a list, as a caller collecting a whole job would;
`fast,streamed` drops each result at once, as a caller writing results out line by line would.
The difference is memory growth and the garbage collector's full collections over the live
messages, which on small machines cost about as much as the parsing itself.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from agent.providers.base import finish_message, parse_output_line
from agent.providers.gemini import reference as gemini_ref
from agent.providers.gemini.fast import GeminiBodyBuilder, GeminiMessageParser
from agent.providers.mistral import reference as mistral_ref
from agent.providers.mistral.fast import MistralBodyBuilder, MistralMessageParser
from agent.providers.openai import reference as openai_ref
from agent.providers.openai.fast import OpenAIBodyBuilder, OpenAIMessageParser
from agent.requests import BatchRequest

JOB_ID = "batch_bench"
WORDS = "the invoice is wrong please refund my order late again thanks résumé 日本 🙂".split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def make_requests(rng: random.Random, n: int) -> list[BatchRequest]:
    """Return `n` requests: mostly plain prompts, some multi-turn with text parts, some params."""
    requests = []
    for i in range(n):
        messages: list[dict[str, Any]] = []
        if rng.random() < 0.7:
            messages.append({"role": "system", "content": _text(rng, 3, 12)})
        for turn in range(rng.choice([1, 1, 1, 2])):
            if turn:
                messages.append({"role": "assistant", "content": _text(rng, 2, 20)})
            content: Any = _text(rng, 5, 60)
            if rng.random() < 0.2:
                content = [{"type": "text", "text": content}]
            messages.append({"role": "user", "content": content})
        params: dict[str, Any] = {}
        if rng.random() < 0.5:
            params["temperature"] = round(rng.random(), 2)
        if rng.random() < 0.3:
            params["max_tokens"] = rng.randint(16, 512)
        if rng.random() < 0.1:
            params["stop"] = ["\n\n"]
        requests.append(BatchRequest(f"req-{i}", messages, params))
    return requests


def openai_body(rng: random.Random, i: int) -> dict[str, Any]:
    """Return a realistic chat.completion body."""
    prompt, completion = rng.randint(10, 2000), rng.randint(1, 500)
    return {
        "id": f"chatcmpl-{i:08d}",
        "object": "chat.completion",
        "created": 1767225600 + i,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": _text(rng, 1, 80),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": rng.choice(["stop", "stop", "length"]),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_560af6e559",
    }


def mistral_body(rng: random.Random, i: int) -> dict[str, Any]:
    """Return a realistic Mistral chat completion body."""
    prompt, completion = rng.randint(10, 2000), rng.randint(1, 500)
    return {
        "id": f"{i:032x}",
        "object": "chat.completion",
        "created": 1767225600 + i,
        "model": "mistral-small-latest",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": _text(rng, 1, 80),
                    "tool_calls": None,
                    "prefix": False,
                },
                "finish_reason": rng.choice(["stop", "stop", "length"]),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def make_lines(
    rng: random.Random, n: int, body: Callable[[random.Random, int], dict[str, Any]]
) -> list[bytes]:
    """Return `n` output-file lines, about 1% of them failed (429 in the body)."""
    lines = []
    for i in range(n):
        if rng.random() < 0.01:
            response = {
                "status_code": 429,
                "body": {"error": {"message": "Rate limited", "code": "rate_limit_exceeded"}},
            }
        else:
            response = {"status_code": 200, "request_id": f"req_{i}", "body": body(rng, i)}
        line = {"id": f"batch_req_{i}", "custom_id": f"req-{i}", "response": response}
        lines.append(json.dumps({**line, "error": None}).encode())
    return lines


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Return the median wall time of `repeat` runs of `fn` (its results freed between runs)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        results = fn()
        times.append(time.perf_counter() - start)
        del results
    return statistics.median(times)


def drain(fn: Callable[[Any], object], items: list[Any]) -> None:
    """Call `fn` on every item, dropping each result at once (a streaming consumer)."""
    for item in items:
        fn(item)


def same_json(a: Any, b: Any) -> bool:
    """Tell whether two bodies are equal and serialise identically (key order included)."""
    return bool(a == b) and json.dumps(a) == json.dumps(b)


def same_line(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Tell whether two `(custom_id, message, error, retryable)` outcomes are the same."""
    return (
        a[0] == b[0]
        and a[2:] == b[2:]
        and a[1] == b[1]
        and (a[1] is None or same_json(a[1].model_dump(), b[1].model_dump()))
    )


Row = tuple[str, int, float, float, float, str]


def measure(
    label: str,
    items: list[Any],
    reference: Callable[[Any], Any],
    fast: Callable[[Any], Any],
    same: Callable[[Any, Any], bool],
    repeat: int,
    note: str,
) -> Row:
    """Check every fast result equals the reference one, then time both paths over `items`.

    The check runs first, one item at a time, so that each timed run only has its own results
    alive (otherwise the other path's results inflate the garbage collector's work).
    """
    mismatches = sum(not same(fast(item), reference(item)) for item in items)
    if mismatches:
        raise SystemExit(f"{label}: {mismatches} fast results differ from the reference")
    ref_time = timed(lambda: [reference(item) for item in items], 1)
    fast_time = timed(lambda: [fast(item) for item in items], repeat)
    streamed_time = timed(lambda: drain(fast, items), repeat)
    n = len(items)
    return label, n, n / ref_time, n / fast_time, n / streamed_time, note


def parse_rows(
    name: str,
    body_fn: Callable[[random.Random, int], dict[str, Any]],
    parser: OpenAIMessageParser | MistralMessageParser,
    reference: Callable[[dict[str, Any], str], Any],
    rng: random.Random,
    n: int,
    repeat: int,
) -> list[Row]:
    """Measure parsing decoded bodies and raw output lines for one provider."""
    lines = make_lines(rng, n, body_fn)
    bodies: list[tuple[dict[str, Any], str]] = []
    for raw in lines:
        line = orjson.loads(raw)
        if line["response"]["status_code"] == 200:
            bodies.append((line["response"]["body"], f"{JOB_ID}/{line['custom_id']}"))
    fast_count = sum(parser.parse_fast(b, k) is not None for b, k in bodies)

    def reference_body(item: tuple[dict[str, Any], str]) -> Any:
        return reference(*item)

    def fast_body(item: tuple[dict[str, Any], str]) -> Any:
        return parser.parse(*item)

    def same_message(a: Any, b: Any) -> bool:
        return same_line((None, a, None), (None, b, None))

    def reference_line(raw: bytes) -> Any:
        custom_id, body, error, retryable = parse_output_line(raw)
        if body is None:
            return custom_id, None, error, retryable
        return custom_id, reference(body, f"{JOB_ID}/{custom_id}"), None, False

    def fast_line(raw: bytes) -> Any:
        return parser.parse_line(raw, JOB_ID)

    return [
        measure(
            f"parse body {name}",
            bodies,
            reference_body,
            fast_body,
            same_message,
            repeat,
            f"{fast_count}/{len(bodies)} on fast path",
        ),
        measure(
            f"parse line {name}",
            lines,
            reference_line,
            fast_line,
            same_line,
            repeat,
            f"raw line -> outcome, {n - len(bodies)} of them 429s",
        ),
    ]


def gemini_requests(requests: list[BatchRequest]) -> list[BatchRequest]:
    """Return the requests with Gemini's name for the answer length (`max_output_tokens`)."""
    out = []
    for request in requests:
        params = dict(request.params)
        if "max_tokens" in params:
            params["max_output_tokens"] = params.pop("max_tokens")
        out.append(BatchRequest(request.id, request.messages, params))
    return out


def gemini_response(rng: random.Random, i: int) -> dict[str, Any]:
    """Return a realistic `generateContent` answer (text, usage with per-modality details)."""
    prompt, completion, thoughts = rng.randint(10, 2000), rng.randint(1, 500), rng.randint(0, 300)
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": _text(rng, 1, 80)}]},
                "finishReason": rng.choice(["STOP", "STOP", "MAX_TOKENS"]),
                "index": 0,
            }
        ],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-flash",
        "responseId": f"resp-{i:08d}",
    }


def gemini_lines(rng: random.Random, n: int) -> list[bytes]:
    """Return `n` Gemini result lines, about 1% of them failed (429 RESOURCE_EXHAUSTED)."""
    lines = []
    for i in range(n):
        line: dict[str, Any] = {"key": f"req-{i}"}
        if rng.random() < 0.01:
            line["error"] = {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}
        else:
            line["response"] = gemini_response(rng, i)
        lines.append(json.dumps(line).encode())
    return lines


def gemini_rows(
    requests: list[BatchRequest], ctx: dict[str, Any], rng: random.Random, repeat: int
) -> list[Row]:
    """Measure Gemini's request building, response parsing and line parsing."""
    model = "gemini-2.5-flash"
    requests = gemini_requests(requests)
    llm = gemini_ref.chat_model(model, ctx)
    # Cold caches: every distinct parameter set costs one reference build the first time.
    cold = GeminiBodyBuilder(model, ctx)
    cold_time = timed(lambda: [cold.build(r) for r in requests], 1)
    uniform = [BatchRequest(r.id, r.messages, {}) for r in requests]
    cold_uniform = GeminiBodyBuilder(model, ctx)
    uniform_time = timed(lambda: [cold_uniform.build(r) for r in uniform], 1)
    builder = GeminiBodyBuilder(model, ctx)
    fast_count = sum(builder.build_fast(r) is not None for r in requests)
    rows = [
        measure(
            "build gemini",
            requests,
            lambda r: gemini_ref.request_body(llm, r),
            builder.build,
            same_json,
            repeat,
            f"{fast_count}/{len(requests)} on fast path, {len(builder._cache)} cached configs;"
            f" cold cache {len(requests) / cold_time:,.0f}/s, cold with the run's params only"
            f" {len(uniform) / uniform_time:,.0f}/s",
        )
    ]
    parser = GeminiMessageParser(model)
    lines = gemini_lines(rng, len(requests))
    bodies = [
        (line["response"], f"{JOB_ID}/{line['key']}")
        for line in map(orjson.loads, lines)
        if "response" in line
    ]
    fast_count = sum(parser.parse_fast(b, k) is not None for b, k in bodies)

    def same_message(a: Any, b: Any) -> bool:
        return same_line((None, a, None), (None, b, None))

    rows.append(
        measure(
            "parse body gemini",
            bodies,
            lambda item: gemini_ref.parse_response(parser.llm, *item),
            lambda item: parser.parse(*item),
            same_message,
            repeat,
            f"{fast_count}/{len(bodies)} on fast path",
        )
    )
    rows.append(
        measure(
            "parse line gemini",
            lines,
            lambda raw: parser.reference.parse_line(raw, JOB_ID),
            lambda raw: parser.parse_line(raw, JOB_ID),
            same_line,
            repeat,
            f"raw line -> outcome, {len(lines) - len(bodies)} of them 429s",
        )
    )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gemini-n", type=int, default=3_000)
    args = parser.parse_args(argv)
    n, repeat = args.n, args.repeat
    rng = random.Random(0)
    requests = make_requests(rng, n)
    ctx = {"temperature": 0.2}
    rows: list[Row] = []

    openai_llm = openai_ref.chat_model("gpt-4o-mini", ctx)
    openai_builder = OpenAIBodyBuilder("gpt-4o-mini", ctx)
    rows.append(
        measure(
            "build openai",
            requests,
            lambda r: openai_ref.request_body(openai_llm, r),
            openai_builder.build,
            same_json,
            repeat,
            f"{sum(openai_builder.build_fast(r) is not None for r in requests)}/{n} on fast path",
        )
    )
    mistral_llm = mistral_ref.chat_model("mistral-small-latest", ctx)
    mistral_builder = MistralBodyBuilder("mistral-small-latest", ctx)
    rows.append(
        measure(
            "build mistral",
            requests,
            lambda r: mistral_ref.request_body(mistral_llm, r),
            mistral_builder.build,
            same_json,
            repeat,
            f"{sum(mistral_builder.build_fast(r) is not None for r in requests)}/{n} on fast path",
        )
    )

    openai_parser = OpenAIMessageParser("gpt-4o-mini")
    mistral_parser = MistralMessageParser("mistral-small-latest")

    def openai_reference(body: dict[str, Any], key: str) -> Any:
        llm = openai_parser.llm
        return finish_message(llm, llm._create_chat_result(openai_ref.parse_completion(body)), key)

    def mistral_reference(body: dict[str, Any], key: str) -> Any:
        llm = mistral_parser.llm
        return finish_message(llm, llm._create_chat_result(body), key)

    rows += parse_rows("openai", openai_body, openai_parser, openai_reference, rng, n, repeat)
    rows += parse_rows("mistral", mistral_body, mistral_parser, mistral_reference, rng, n, repeat)
    rows += gemini_rows(requests[: args.gemini_n], ctx, rng, repeat)

    print(
        "requests/second, one process, time.perf_counter. reference and fast keep all results"
        f" in a list; fast,streamed drops each at once; fast columns are the median of {repeat}"
    )
    header = (
        f"{'operation':<19} {'n':>6} {'reference':>10} {'fast':>10} {'speedup':>7} "
        f"{'fast,streamed':>13}"
    )
    print(f"{header}  note")
    for label, count, ref, fast, streamed, note in rows:
        print(
            f"{label:<19} {count:>6} {ref:>10,.0f} {fast:>10,.0f} {fast / ref:>6.1f}x "
            f"{streamed:>13,.0f}  {note}"
        )


if __name__ == "__main__":
    main()
