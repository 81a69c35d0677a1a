"""`batch-agent emulator ...`: serve the offline emulator over loopback, list the jobs it holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

EmulatorDirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="State directory (default: $BATCH_AGENT_EMULATOR_DIR or .batch-agent/emulator).",
    ),
]


def serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    state_dir: EmulatorDirOption = None,
) -> None:
    """Serve the emulator over HTTP: OpenAI, Mistral, Anthropic and Gemini under their prefixes."""
    from agent.emulator import serve as serve_emulator

    def ready(actual_port: int) -> None:
        base = f"http://{host}:{actual_port}"
        typer.echo(
            f"emulator listening on {base} (openai: {base}/openai/v1, mistral: {base}/mistral, "
            f"anthropic: {base}/anthropic, gemini: {base}/gemini)"
        )
        sys.stdout.flush()

    serve_emulator(host=host, port=port, state_dir=state_dir, ready=ready)


def jobs(
    state_dir: EmulatorDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the jobs the emulator holds (every protocol)."""
    from agent.emulator import list_jobs

    found = list_jobs(state_dir)
    if as_json:
        typer.echo(json.dumps(found))
        return
    for job in found:
        typer.echo(
            f"{job['provider']:8} {job['id']}  {job['status']:12} {job['request_count']} requests"
        )
