"""How the `batch-agent` command fails: its error class, exit codes, and the words for a bug.

An error the user can act on (bad input, a provider refusing, a missing database) is one line,
`error: ...`, exit code 1. A programming error (a `KeyError`, a `TypeError`, ...) is not the
user's fault and must not look like a provider's: it says it is a bug, and how to report it with
the traceback `--debug` (or `BATCH_AGENT_DEBUG=1`) prints.
"""

from __future__ import annotations

import os
import traceback
from typing import TextIO

EXIT_ERROR = 1
# `run --wait`: the thread finished, its results are written, but some or all requests failed.
EXIT_FAILED_REQUESTS = 3
# Usage errors (an unknown option, `--format xml`), as click numbers them.
EXIT_USAGE = 2
DEBUG_ENV = "BATCH_AGENT_DEBUG"

# Exceptions that only a mistake in the code raises; anything else is about the user's input,
# files, network or provider, and its own message says what to do.
BUG_TYPES: tuple[type[BaseException], ...] = (
    AttributeError,
    LookupError,
    NameError,
    TypeError,
    AssertionError,
    ArithmeticError,
    RecursionError,
    NotImplementedError,
)


class CliError(Exception):
    """An error reported as one line on stderr with exit code 1."""


def debug_from_env() -> bool:
    """Tell whether `BATCH_AGENT_DEBUG` asks for tracebacks (1, true, yes or on)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def is_bug(exc: BaseException) -> bool:
    """Tell whether `exc` can only come from a mistake in batch-agent's code."""
    return isinstance(exc, BUG_TYPES)


def report_error(exc: BaseException, stream: TextIO, *, debug: bool) -> None:
    """Print an error that ended a command: one line, or a bug notice; with `debug` the traceback.

    Args:
        exc: The exception the command raised.
        stream: Where to print (stderr).
        debug: Print the full traceback first (`--debug`, `BATCH_AGENT_DEBUG=1`).
    """
    if debug:
        from agent.secrets import redact

        # A chained SDK exception may quote a key (or its masked echo): masked like any message.
        stream.write(redact("".join(traceback.format_exception(exc))))
    if not is_bug(exc):
        print(f"error: {exc}", file=stream)
        return
    print(
        f"error: internal error in batch-agent ({type(exc).__name__}: {exc}). This is a bug, "
        "not a problem with your input, files or provider.",
        file=stream,
    )
    how = "with the traceback above" if debug else "with the traceback that --debug prints"
    print(
        f"Please report it on the batch-agent issue tracker {how} "
        f"(`batch-agent --debug COMMAND ...` or {DEBUG_ENV}=1).",
        file=stream,
    )
