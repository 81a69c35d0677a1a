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

    batch_path = args.output + ".input.jsonl"
    with open(args.input, "rb") as src, open(batch_path, "wb") as dst:
        for raw in src:
            record = orjson.loads(raw)
            body = {
                "model": args.model,
                "messages": [{"role": "user", "content": record["prompt"]}],
            }
            dst.write(
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
    with open(batch_path, "rb") as fh:
        uploaded = client.files.create(file=("input.jsonl", fh), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in {"completed", "failed", "expired", "cancelled"}:
        time.sleep(args.poll_interval)
        batch = client.batches.retrieve(batch.id)

    results: dict[str, bytes] = {}
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
    os.remove(batch_path)


if __name__ == "__main__":
    main()
