"""The plain embeddings baseline: one batch of `/v1/embeddings` lines with the `openai` SDK and numpy.

Build the JSONL, upload it, create the batch, poll, download the output, decode every base64
vector into one float32 array in input order and save it as `.npy`. No LangGraph, no store: the
floor `batch-agent embed` is compared against (`bench/embed_bench.py`).

    python bench/embed_baseline.py TEXTS.jsonl OUT.npy --base-url http://127.0.0.1:PORT/openai/v1
"""

from __future__ import annotations

import argparse
import base64
import os
import time

import numpy as np
import orjson
from openai import OpenAI

DONE = {"completed", "failed", "expired", "cancelled"}


def main() -> None:
    """Embed every text of the input through one or more batches and save the vectors."""
    parser = argparse.ArgumentParser()
    parser.add_argument("input", help="JSONL of {id, text}")
    parser.add_argument("output", help=".npy file to write")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="text-embedding-3-small")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args()
    client = OpenAI(api_key=os.environ.get("OPENAI_API_KEY", "bench"), base_url=args.base_url)

    # At most 50,000 requests per OpenAI batch: split like any real script must.
    position: dict[str, int] = {}
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
            position[record["id"]] = n
            body = {"model": args.model, "input": record["text"], "encoding_format": "base64"}
            line = {
                "custom_id": record["id"],
                "method": "POST",
                "url": "/v1/embeddings",
                "body": body,
            }
            out.write(orjson.dumps(line) + b"\n")
    if out is not None:
        out.close()
    batches = []
    for path in paths:
        with open(path, "rb") as fh:
            uploaded = client.files.create(file=("input.jsonl", fh), purpose="batch")
        batches.append(
            client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
            )
        )
    while any(b.status not in DONE for b in batches):
        time.sleep(args.poll_interval)
        batches = [b if b.status in DONE else client.batches.retrieve(b.id) for b in batches]

    vectors: np.ndarray | None = None
    for batch in batches:
        if batch.status != "completed" or not batch.output_file_id:
            raise SystemExit(f"batch {batch.id} ended {batch.status!r}: {batch.errors}")
        for raw in client.files.content(batch.output_file_id).iter_lines():
            item = orjson.loads(raw)
            body = (item.get("response") or {}).get("body") or {}
            embedding = body["data"][0]["embedding"]
            vector = (
                np.frombuffer(base64.b64decode(embedding), dtype="<f4")
                if isinstance(embedding, str)
                else np.asarray(embedding, dtype="<f4")
            )
            if vectors is None:
                vectors = np.full((len(position), len(vector)), np.nan, dtype="<f4")
            vectors[position[item["custom_id"]]] = vector
    if vectors is None:
        raise SystemExit("no vector came back")
    np.save(args.output, vectors)
    for path in paths:
        os.remove(path)


if __name__ == "__main__":
    main()
