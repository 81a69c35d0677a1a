"""The plain baseline: the same batch job with only the `openai` SDK and `orjson`.

Build the JSONL, upload it, create the batch, poll, download the output, parse it and write one
result line per request. No LangGraph, no LangChain, no checkpoints: the floor batch-agent is
compared against.

    python bench/baseline.py INPUT.jsonl OUTPUT.jsonl --base-url http://127.0.0.1:PORT/openai/v1
"""

from __future__ import annotations

import argparse
import os
import time

import orjson
from openai import OpenAI


def main() -> None:
    """Run one batch end to end and write its results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args()
    client = OpenAI(api_key=os.environ.get("OPENAI_API_KEY", "bench"), base_url=args.base_url)

    # One model, and at most 50,000 requests per OpenAI batch: split like any real script must.
    paths: list[str] = []
    out = None
    with open(args.input, "rb") as src:
        for n, raw in enumerate(src):
            if n % 50_000 == 0:
                if out is not None:
                    out.close()
                paths.append(f"{args.output}.input-{len(paths)}.jsonl")
                out = open(paths[-1], "wb")  # noqa: SIM115 (closed when the next part starts)
            record = orjson.loads(raw)
            body = {
                "model": args.model,
                "messages": [{"role": "user", "content": record["prompt"]}],
            }
            out.write(
                orjson.dumps(
                    {
                        "custom_id": record["id"],
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + b"\n"
            )
    if out is not None:
        out.close()
    batches = []
    for path in paths:
        with open(path, "rb") as fh:
            uploaded = client.files.create(file=("input.jsonl", fh), purpose="batch")
        batches.append(
            client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        )
    while any(b.status not in {"completed", "failed", "expired", "cancelled"} for b in batches):
        time.sleep(args.poll_interval)
        batches = [
            b
            if b.status in {"completed", "failed", "expired", "cancelled"}
            else client.batches.retrieve(b.id)
            for b in batches
        ]

    results: dict[str, bytes] = {}
    for batch in batches:
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in client.files.content(file_id).iter_lines():
                item = orjson.loads(line)
                response = item.get("response") or {}
                body = response.get("body") or {}
                ok = response.get("status_code") == 200
                results[item["custom_id"]] = orjson.dumps(
                    {
                        "id": item["custom_id"],
                        "status": "succeeded" if ok else "failed",
                        "content": body["choices"][0]["message"]["content"] if ok else None,
                        "usage": body.get("usage") if ok else None,
                    }
                )
    with open(args.input, "rb") as src, open(args.output, "wb") as out:
        for raw in src:
            out.write(results.get(orjson.loads(raw)["id"], b"null") + b"\n")
    for path in paths:
        os.remove(path)


if __name__ == "__main__":
    main()
