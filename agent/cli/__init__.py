"""The `batch-agent` command, one module per concern.

- `agent.cli.app`: the typer app, its entry point and how a failure is printed.
- `agent.cli.commands`: run, cancel, status, threads, results, plan (each written once).
- `agent.cli.emulator_commands`: `batch-agent emulator serve|jobs`.
- `agent.cli.backend`: where threads live, behind one `Backend` interface: the local checkpoint
  database (`LocalBackend`) or a served graph (`RemoteBackend`, `--url`).
- `agent.cli.options`: the options several commands share.
- `agent.cli.render`: `status` / `threads` output, the summary table, cost and dedup lines.
- `agent.cli.progress`: the wait display of `run --wait` and `cancel`.
- `agent.cli.errors`: `CliError`, exit codes, the words for an unexpected error.

Nothing here is imported until a command needs it, so `batch-agent status` stays fast.
"""

from __future__ import annotations


def main() -> None:
    """Run the `batch-agent` console script (`pyproject.toml`); see `agent.cli.app.main`."""
    from agent.cli.app import main as app_main

    app_main()
