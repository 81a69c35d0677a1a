"""`batch-agent ARGS` in a forked child of a preloaded fork server: a CLI process for a fraction of
the CPU a fresh interpreter costs.

A fresh `batch-agent run` spends ~3 s of CPU importing LangGraph, LangChain and the provider SDKs
before it does anything. Here one fork server per test process (multiprocessing's `forkserver`)
imports that stack once; every CLI call is then a child forked from it: a separate process with
its own memory, pid, file descriptors, cwd and environment, killed by signals like any other, so
what the tests prove about separate processes (resume across processes, SIGKILL anywhere, SIGINT's
exit 130, two workers racing on one thread) still holds.

When to use which:

- `run_cli` / `start_cli` (forked): every CLI call whose subject is what the CLI does.
- A real exec'd `batch-agent` (`subprocess` on `tests.integration_tests.conftest.BIN`): where the
  exec itself is the point: the console script and `python -m agent.cli` entry points, the real
  environment of a real process (the API-key canary), and at least one end-to-end
  `batch-agent run` through the console script (the first call of
  `test_resume_across_processes`).

The child's environment is exactly the `env` given (`os.environ` is replaced, not merged), which
holds because nothing under `agent/` reads an environment variable at import time (every read is
inside a function, at call time): the fork server's own environment cannot leak into a child
through a module-level value of ours. Of the preloaded third-party modules only langsmith reads
any at import (`LANGSMITH_RUN_COMPRESSION_LEVEL` / `_THREADS`, tuning knobs no test sets); the
SDKs read their keys and base URLs when a client is built, in the child. The CLI package itself (`agent.cli.*`) is deliberately not
preloaded: `agent.cli.commands` builds its stderr `rich` Console at import, and a Console
captures the terminal-ness and colour settings (`NO_COLOR`, `FORCE_COLOR`) of the stream and
environment it sees then; imported in the child, it sees the child's. Importing it costs the child
~0.1 s.
"""

from __future__ import annotations

import faulthandler
import io
import locale
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from pathlib import Path

# The stack a CLI command imports, and a `run` on the emulator (OpenAI's protocol) on top.
# Mistral's and Anthropic's SDK stacks (Anthropic's types alone cost ~2 s) and PostgreSQL's
# driver are left to the few children that use them: under xdist every worker starts its own
# server, so a module preloaded for one test's sake is paid by each worker. `agent.cli` is not
# preloaded either (see the module docstring).
PRELOAD = [
    "typer",
    "rich.console",
    "rich.progress",
    "rich.table",
    "agent.graph",
    "agent.emulator",
    "agent.persistence",
    "agent.providers.registry",
    "agent.providers.openai.provider",
    "openai.resources.chat",
    "langchain_core.tracers",
    "langgraph.checkpoint.sqlite",
    "langgraph.store.sqlite",
    "aiosqlite",
    "genai_prices",
    "sqlite_vec",
    "numpy",
]


def _context() -> ForkServerContext:
    """The fork-server context, its server preloading `PRELOAD` (started on first use)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx  # type: ignore[return-value]


def _stream(fd: int, errors: str) -> io.TextIOWrapper:
    """A text stream on `fd` that writes through, as with `PYTHONUNBUFFERED` (clean_env sets it)."""
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(
        raw,  # type: ignore[arg-type]
        encoding=locale.getpreferredencoding(False),
        errors=errors,
        write_through=True,
    )


def _child(args: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str) -> None:
    """In the forked child: become `batch-agent ARGS` run in `cwd` with exactly `env`."""
    # Real file descriptors 1 and 2, as a subprocess with redirected output has: rich and typer
    # look at the file descriptors (isatty, width), not just at sys.stdout.
    for fd, path in ((1, stdout), (2, stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdout = sys.__stdout__ = _stream(1, "strict")
    sys.stderr = sys.__stderr__ = _stream(2, "backslashreplace")
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    # A fresh interpreter turns SIGINT into KeyboardInterrupt; the fork server ignores it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if env.get("PYTHONFAULTHANDLER"):
        faulthandler.enable()  # what the variable does at an interpreter's start
    sys.argv = ["batch-agent", *args]
    from agent.cli.app import main

    main()  # exits the process with the command's exit code


class CliProcess:
    """A running `batch-agent ARGS` (forked, see the module docstring), used like `subprocess.Popen`.

    Its output goes to two private files, read by `communicate` once it has ended.
    """

    def __init__(self, args: Sequence[str], cwd: str | Path, env: Mapping[str, str]) -> None:
        """Start `batch-agent ARGS` in `cwd` with exactly the environment `env`."""
        self.args = ["batch-agent", *args]
        self.returncode: int | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="batch-agent-cli-"))
        self._stdout = self._dir / "stdout"
        self._stderr = self._dir / "stderr"
        self._process = _context().Process(
            target=_child,
            args=(list(args), str(cwd), dict(env), str(self._stdout), str(self._stderr)),
            daemon=True,  # a child left running is terminated, not waited for, at exit
        )
        self._process.start()
        assert self._process.pid is not None
        self.pid: int = self._process.pid

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal) once it has ended, else None."""
        if self.returncode is None and not self._process.is_alive():
            self._process.join()
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end; return the exit code.

        Raises:
            subprocess.TimeoutExpired: it is still running after `timeout` seconds.
        """
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the process, if it is still running."""
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL it."""
        self.send_signal(signal.SIGKILL)

    def first_line(self, timeout: float) -> str:
        """Wait for the first complete line of stdout (a server's "listening on ..." line).

        Returns:
            That line, or what stdout holds if the process ended or `timeout` passed first.
        """
        deadline = time.monotonic() + timeout
        while True:
            written = self._read(self._stdout)
            if "\n" in written:
                return written.split("\n", 1)[0] + "\n"
            if self.poll() is not None or time.monotonic() > deadline:
                return written
            time.sleep(0.02)

    def stderr_so_far(self) -> str:
        """What the process has written to stderr until now."""
        return self._read(self._stderr)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end; return its (stdout, stderr).

        Raises:
            subprocess.TimeoutExpired: it is still running after `timeout` seconds.
        """
        self.wait(timeout)
        try:
            return self._read(self._stdout), self._read(self._stderr)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    @staticmethod
    def _read(path: Path) -> str:
        # As `subprocess` with text=True reads a pipe: locale encoding, universal newlines.
        return path.read_text() if path.exists() else ""


def start_forked(target: Callable[..., object], *args: object) -> BaseProcess:
    """Run `target(*args)` in a child of the same preloaded fork server (not only the CLI).

    For a separate process that needs the heavy stack without paying its import, such as one
    holding a thread lock until it is killed. `target` must be importable (module level).

    Returns:
        The started process (daemonic: terminated, not waited for, when this process exits).
    """
    process = _context().Process(target=target, args=args, daemon=True)
    process.start()
    return process


def start_cli(args: Sequence[str], cwd: str | Path, env: Mapping[str, str]) -> CliProcess:
    """Start `batch-agent ARGS` in a forked child (for tests that signal or kill it, or race it).

    Args:
        args: The CLI's arguments (without the program name).
        cwd: The child's working directory.
        env: The child's whole environment (nothing of this process's is added).

    Returns:
        The running process.
    """
    return CliProcess(args, cwd, env)


def run_cli(
    args: Sequence[str], cwd: str | Path, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `batch-agent ARGS` to its end in a forked child; return what `subprocess.run` would.

    Args:
        args: The CLI's arguments (without the program name).
        cwd: The child's working directory.
        env: The child's whole environment (nothing of this process's is added).
        timeout: Seconds before the child is killed and `subprocess.TimeoutExpired` raised.

    Returns:
        The exit code and the decoded stdout and stderr.
    """
    process = start_cli(args, cwd, env)
    try:
        stdout, stderr = process.communicate(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(process.args, timeout, stdout, stderr) from None
    assert process.returncode is not None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
