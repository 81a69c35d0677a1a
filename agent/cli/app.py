"""The `batch-agent` typer app and its entry point: commands registered, errors turned into lines.

`main` is the console script (`pyproject.toml`) and `python -m agent.cli`. Every failure ends
in one `error: ...` line and an exit code (1 an error, 2 a usage error, 3 failed requests after
`run --wait`, 130 Ctrl-C); a programming error says it is a bug (`agent.cli.errors`), and
`--debug` / `BATCH_AGENT_DEBUG=1` adds its traceback.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

# typer vendors click (`typer._click`) and names this one error class nowhere public.
from typer._click.exceptions import NoArgsIsHelpError

from agent.cli import commands, embed_command, emulator_commands, map_command
from agent.cli.errors import EXIT_ERROR, EXIT_USAGE, debug_from_env, report_error

app = typer.Typer(
    help="Run LLM requests through provider batch APIs (half the price of realtime calls).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
emulator_app = typer.Typer(
    help="The offline emulator of the providers' batch APIs.", no_args_is_help=True
)
app.add_typer(emulator_app, name="emulator")

for command in (
    commands.run,
    commands.cancel,
    commands.status,
    commands.threads,
    commands.results,
    commands.plan,
):
    app.command()(command)
app.command()(embed_command.embed)
app.command("map")(map_command.map_)
emulator_app.command("serve")(emulator_commands.serve)
emulator_app.command("jobs")(emulator_commands.jobs)


DEBUG_FLAG = "--debug"


@app.callback()
def _global_options(
    debug: Annotated[
        bool,
        typer.Option(
            DEBUG_FLAG,
            help="On an error, print its traceback too (also BATCH_AGENT_DEBUG=1; may come anywhere on the line).",
        ),
    ] = False,
) -> None:
    """Run LLM requests through provider batch APIs (half the price of realtime calls)."""
    # Shown in --help; `cli_main` takes the flag out of the line itself, wherever it stands.


def _take_debug_flag(args: list[str]) -> tuple[list[str], bool]:
    """Remove `--debug` from the options (not after `--`); tell whether it was there.

    Someone rerunning a failed command adds `--debug` at the end as often as at the front.
    """
    end = args.index("--") if "--" in args else len(args)
    options = [arg for arg in args[:end] if arg != DEBUG_FLAG]
    return [*options, *args[end:]], len(options) < end


def cli_main(args: Sequence[str] | None = None) -> int:
    """Run one command line and return its exit code; errors are printed, never raised.

    Args:
        args: The arguments (default: `sys.argv[1:]`).
    """
    line, debug = _take_debug_flag(list(sys.argv[1:] if args is None else args))
    debug = debug or debug_from_env()
    try:
        code = app(args=line, prog_name="batch-agent", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `batch-agent` alone: the help, as typer shows it
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        return exc.exit_code
    except typer.TyperException as exc:  # click's errors: usage errors, a bad option value
        # One line, not typer's boxed usage screen: which option, what is wrong, where to look.
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.echo(f"error: {exc.format_message()}{where}", err=True)
        return exc.exit_code or EXIT_USAGE
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        return EXIT_ERROR
    except SystemExit as exc:
        if isinstance(exc.code, str):
            typer.echo(exc.code, err=True)
            return EXIT_ERROR
        return exc.code or 0
    except Exception as exc:  # one line for the user, never local variables
        report_error(exc, sys.stderr, debug=debug)
        return EXIT_ERROR
    return code if isinstance(code, int) else 0


def main() -> None:
    """Entry point of the `batch-agent` console script: one-line errors, non-zero exit codes."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpx2", "openai", "mistralai", "anthropic", "google_genai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _exit_now(cli_main())


def _exit_now(code: int) -> None:
    """End the process without the interpreter's module teardown.

    Tearing down the ~2,000 modules LangGraph, LangChain and the SDKs import takes about half a
    second, more than many commands' own work. By now every database and file this CLI opened is
    closed by its context manager; stdio and logging are flushed and the atexit handlers run (a
    LangSmith tracer flushes there), so nothing is lost by skipping the rest.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    atexit._run_exitfuncs()
    os._exit(code)
