"""`batch-agent embed`: texts through a provider's batch embeddings endpoint, one vector each.

The same thread life as `run` (`commands.run_thread`): plan, submit, poll, collect, resume with
`--thread`; the input is `{"id", "text"}` (or `prompt`) records in JSONL, or a `.txt` file of
one text per line, and the graph gets it as `{"embed": true, "input_path": ...}`. Vectors stay
in the store as float32 (`agent.vectors`) and are written with `--out` as JSONL, Parquet or
`.npy`, streamed page by page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.cli.commands import run_thread
from agent.cli.options import (
    AllowFailuresOption,
    BaseUrlOption,
    CheckModelsOption,
    DbOption,
    DedupeOption,
    DimensionsOption,
    FormatOption,
    KeepFilesOption,
    MaxCostOption,
    OutOption,
    PollBackoffOption,
    PollIntervalOption,
    PriceOverrideOption,
    ProviderOption,
    ServerInputOption,
    ThreadOption,
    UrlOption,
    WaitOption,
    WebhookOption,
)
from agent.export import ResultFormat


def embed(
    input_file: Annotated[
        Path | None,
        typer.Argument(
            metavar="INPUT",
            help="Texts: .jsonl ({id, text} or {id, prompt}) or .txt (one text per line).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Embeddings model (default: text-embedding-3-small, mistral-embed, gemini-embedding-001)."
        ),
    ] = None,
    dimensions: DimensionsOption = None,
    provider: ProviderOption = None,
    base_url: BaseUrlOption = None,
    thread: ThreadOption = None,
    db: DbOption = None,
    wait: WaitOption = False,
    poll_interval: PollIntervalOption = None,
    poll_backoff: PollBackoffOption = None,
    out: OutOption = None,
    fmt: FormatOption = ResultFormat.jsonl,
    max_cost: MaxCostOption = None,
    price_override: PriceOverrideOption = None,
    dedupe: DedupeOption = None,
    webhook_url: WebhookOption = None,
    url: UrlOption = None,
    server_input: ServerInputOption = None,
    check_models: CheckModelsOption = None,
    keep_files: KeepFilesOption = None,
    allow_failures: AllowFailuresOption = False,
) -> None:
    """Embed INPUT's texts on a new thread (or --thread), or resume --thread; --wait finishes it.

    Each text gets the one vector the provider's LangChain embeddings class returns for it
    (long texts split and combined as `embed_documents` does). Exit codes as for `run`.
    """
    overrides = {
        "max_cost": max_cost,
        "price_override": price_override,
        "dedupe": dedupe,
        "webhook_url": webhook_url,
        "provider": provider,
        "model": model,
        "dimensions": dimensions,
        "base_url": base_url,
        "poll_interval_seconds": poll_interval,
        "poll_backoff": poll_backoff,
        "check_models": check_models,
        "keep_files": keep_files,
    }
    run_thread(
        overrides,
        input_file=input_file,
        server_input=server_input,
        graph_input={"embed": True},
        thread=thread,
        db=db,
        url=url,
        wait=wait,
        out=out,
        fmt=fmt,
        allow_failures=allow_failures,
    )
