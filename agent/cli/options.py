"""The options several `batch-agent` commands share, declared once (typer `Annotated` types)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.cli.errors import EXIT_FAILED_REQUESTS
from agent.export import ResultFormat

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Checkpoint database: a SQLite file or a postgresql:// URL (default: $BATCH_AGENT_DB or .batch-agent/checkpoints.sqlite).",
    ),
]
ProviderOption = Annotated[
    str | None, typer.Option(help="openai, mistral, anthropic, gemini, emulator or auto.")
]
ModelOption = Annotated[str | None, typer.Option(help="Model for requests that do not name one.")]
SystemOption = Annotated[str | None, typer.Option(help="System prompt for requests without one.")]
OutOption = Annotated[
    Path | None, typer.Option("--out", help="Write results to this file instead of stdout.")
]
FormatOption = Annotated[
    ResultFormat,
    typer.Option(
        "--format",
        help="Results as JSONL (one object per request), CSV (id, status, content, input_tokens, output_tokens, error), or, for embeddings with --out, Parquet or npy (float32 vectors; a failed request's row NaN).",
    ),
]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="BATCH_AGENT_URL",
        help="Drive the graph served at this LangGraph Server URL (key: $LANGGRAPH_API_KEY) instead of a local one.",
    ),
]
MaxCostOption = Annotated[
    float | None,
    typer.Option(
        help="Budget in USD: refuse before uploading when the estimated batch cost exceeds it."
    ),
]
DeadlineOption = Annotated[
    str | None,
    typer.Option(
        help="When the results are needed: a duration from now (90m, 2h, 1d) or an ISO time "
        "with offset. At the deadline minus --deadline-margin, unfinished jobs are cancelled "
        "and their results kept."
    ),
]
FallbackOption = Annotated[
    str | None,
    typer.Option(
        help="At the deadline, send the missing requests 'realtime' (standard price), 'flex' "
        "(OpenAI's or Gemini's flex tier, batch price) or 'none'."
    ),
]
DeadlineMarginOption = Annotated[
    float | None,
    typer.Option(help="Seconds before the deadline at which the batch is cancelled (600)."),
]
FallbackConcurrencyOption = Annotated[
    int | None,
    typer.Option(help="Fallback requests in flight at once (8)."),
]
DedupeOption = Annotated[
    bool | None,
    typer.Option(
        "--dedupe/--no-dedupe",
        help="Send requests with identical bodies once and give every id the answer (default: on).",
    ),
]
WebhookOption = Annotated[
    str | None,
    typer.Option(
        help="POST a small notice here once the results are collected (remembered by the thread).",
    ),
]
PriceOverrideOption = Annotated[
    str | None,
    typer.Option(
        help='Prices instead of genai-prices\', as JSON: {"MODEL" or "*": {"batch": [IN, OUT], "realtime": [IN, OUT]}} USD per million tokens.'
    ),
]

ToolsOption = Annotated[
    Path | None,
    typer.Option(
        "--tools",
        help="JSON file with a list of tool definitions (OpenAI function tools) bound to every request; answers carry tool_calls.",
    ),
]
SchemaOption = Annotated[
    Path | None,
    typer.Option(
        "--schema",
        help="JSON file with the answer's JSON schema (top-level title = its name); answers are parsed into 'parsed' as with_structured_output(...).invoke() parses them.",
    ),
]
ToolChoiceOption = Annotated[
    str | None, typer.Option(help="With --tools: a tool name, auto, any/required or none.")
]
SchemaMethodOption = Annotated[
    str | None,
    typer.Option(
        help="With --schema: json_schema, function_calling or json_mode (default: the provider's)."
    ),
]
StrictOption = Annotated[
    bool | None,
    typer.Option("--strict/--no-strict", help="OpenAI strict mode for --tools/--schema."),
]
ValidateSchemaOption = Annotated[
    bool,
    typer.Option(
        "--validate-schema",
        help="With --schema: also fail answers whose parsed JSON does not match the schema (code 'schema'); realtime .invoke() does not validate, so this is off by default.",
    ),
]

KeepFilesOption = Annotated[
    bool | None,
    typer.Option(
        "--keep-files/--delete-files",
        help="Keep the batch's input, output and error files at the provider, or delete them once the results are stored (the default).",
    ),
]

CheckModelsOption = Annotated[
    bool | None,
    typer.Option(
        "--check-models/--no-check-models",
        help="Refuse, before uploading, models the provider's LangChain model profiles do not know (default: on; turn off for new, fine-tuned or self-hosted models).",
    ),
]
EndpointOption = Annotated[
    str | None,
    typer.Option(
        help="API the requests go to: chat or responses (OpenAI's /v1/responses, as ChatOpenAI(use_responses_api=True) calls it). Default: what the model object says.",
    ),
]
ThreadArgument = Annotated[str, typer.Argument(help="Thread ID printed by `run`.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
BaseUrlOption = Annotated[
    str | None, typer.Option(help="Send the provider SDK to this compatible endpoint.")
]
ThreadOption = Annotated[
    str | None, typer.Option(help="Thread to submit on or resume (default: a new thread).")
]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="Poll until the job is done, then write results.")
]
PollIntervalOption = Annotated[
    float | None,
    typer.Option(help="First pause between polls with --wait (grows by the backoff factor)."),
]
PollBackoffOption = Annotated[
    float | None,
    typer.Option(help="Factor by which the pause grows (1 keeps it constant; default 1.5)."),
]
ServerInputOption = Annotated[
    str | None,
    typer.Option(
        help="With --url: a request file on the server's file system (any size), instead of sending INPUT inline.",
    ),
]
AllowFailuresOption = Annotated[
    bool,
    typer.Option(
        "--allow-failures",
        help=f"With --wait: exit 0 even when requests failed (else {EXIT_FAILED_REQUESTS}).",
    ),
]
DimensionsOption = Annotated[
    int | None,
    typer.Option(
        help="Embeddings: the size of each vector, for models that take one (default: the model's)."
    ),
]
