"""Fixtures that start real processes: the `langgraph dev` server and CLI subprocesses."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a child process: no provider keys, private emulator and DB paths.

    Google's variables go too: a developer's `GOOGLE_API_KEY` / `GEMINI_API_KEY` would make
    provider `auto` pick Gemini's real API, and `GOOGLE_GENAI_*` (API version, Vertex AI) would
    change what google-genai sends.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            (
                "BATCH_AGENT_",
                "OPENAI_",
                "MISTRAL_",
                "ANTHROPIC_",
                "GOOGLE_",
                "GEMINI_",
                "LANGSMITH_",
                "LANGCHAIN_",
            )
        )
    }
    env.update(
        BATCH_AGENT_EMULATOR_DIR=str(tmp / "emulator"),
        BATCH_AGENT_EMULATOR_DELAY="1",
        BATCH_AGENT_DB=str(tmp / "checkpoints.sqlite"),
        BATCH_AGENT_SERVER_DB=str(tmp / "server-checkpoints.sqlite"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def served_config(tmp: Path, graphs: dict[str, str] | None = None) -> Path:
    """Write the project's `langgraph.json` into `tmp` with every path made absolute.

    The server's cwd is then `tmp`: `langgraph dev` keeps its threads and runs in
    `./.langgraph_api/` whatever `LANGGRAPH_DISABLE_FILE_PERSISTENCE` says, so a server started
    in the repo would leave the tests' threads for the developer's next `langgraph dev`. The
    developer's `.env` is not loaded either (`env` is dropped): a test never picks up real keys.
    `graphs` adds graphs (id: `path/to/file.py:attr`, relative to the project) a user deploys
    next to ours.
    """

    def absolute(spec: str) -> str:
        return str((PROJECT_ROOT / spec).resolve()) if spec.startswith(".") else spec

    config = json.loads((PROJECT_ROOT / "langgraph.json").read_text())
    config.pop("env", None)
    config["dependencies"] = [absolute(dep) for dep in config.get("dependencies", [])]
    for graph_id, path in (graphs or {}).items():
        config["graphs"][graph_id] = {"path": path}
    for graph in config["graphs"].values():
        graph["path"] = absolute(graph["path"])
    for section in ("checkpointer", "store"):
        if section in config:
            config[section]["path"] = absolute(config[section]["path"])
    if "app" in config.get("http", {}):
        config["http"]["app"] = absolute(config["http"]["app"])
    path = tmp / "langgraph.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _die_with_parent() -> None:
    """In the server's process: be killed when the test process ends, even by SIGKILL or Ctrl-C.

    Without it a test run that is itself killed leaves `langgraph dev` running, writing its
    `.langgraph_api/` and holding its port.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_dev_server(
    tmp: Path, port: int | None = None, graphs: dict[str, str] | None = None, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `langgraph dev` on a loopback port, in `tmp` (its cwd and state); wait until it answers.

    `env` adds or overrides environment variables of the server (e.g. the emulator's delay).
    A server restarted on the same `tmp` finds the state the previous one left there.
    `graphs` adds user graphs to its `langgraph.json` (`served_config`).
    """
    port = port or free_port()
    config = served_config(tmp, graphs)
    log = (tmp / "server.log").open("ab")
    process = subprocess.Popen(
        [
            str(BIN / "langgraph"),
            "dev",
            "--no-browser",
            "--no-reload",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--config",
            str(config),
        ],
        cwd=tmp,
        env=clean_env(tmp, **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so the whole process group can be stopped
        preexec_fn=_die_with_parent,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"langgraph dev exited early:\n{(tmp / 'server.log').read_text()[-3000:]}"
            )
        try:
            if httpx2.get(f"{url}/ok", timeout=1).status_code == 200:
                return process, url
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_dev_server(process, signal.SIGKILL)
            raise RuntimeError(
                f"langgraph dev did not start:\n{(tmp / 'server.log').read_text()[-3000:]}"
            )
        time.sleep(0.5)


def stop_dev_server(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop the server's whole process group (SIGKILL simulates a crash)."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve a `langgraph dev` shared by every test that needs a plain one; stop it at the end.

    Its emulated jobs take `BATCH_AGENT_EMULATOR_DELAY=1` s (`clean_env`); a test that needs
    a longer job asks for it in a prompt (`[emulator:delay=S]`, `agent.emulator.faults`)
    instead of starting a server of its own. Tests that kill or restart a server, or read its
    files, start their own with `start_dev_server`.

    Session scope: one server per xdist worker that runs any of these tests (`--dist worksteal`
    puts them mostly on one or two). `--dist loadgroup` with an `xdist_group` would pin them to
    one worker, but pytest-xdist 3.8 marks a group by setting `item._nodeid`, which pytest 9 no
    longer reads, so its groups are silently ignored.
    """
    process, url = start_dev_server(tmp_path_factory.mktemp("langgraph-dev"))
    try:
        yield url
    finally:
        stop_dev_server(process)
