"""Keys and endpoints: a key with a stray character is refused at once, naming the variable and
never the key; a password in `--base-url` is never stored or printed, and is asked for again."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from typer.testing import CliRunner

from agent.cli.app import app
from agent.context import Context
from agent.emulator import read_access_log, running_emulator
from agent.graph import build_graph
from agent.providers import API_KEY_ENV, ProviderError, provider_class, provider_for_job

PREFIX = {
    "openai": "/openai/v1",
    "mistral": "/mistral",
    "anthropic": "/anthropic",
    "gemini": "/gemini",
}
# Every key variable of every provider (Gemini's SDK reads two), each checked on its own.
KEY_VARIABLES = [(provider, name) for provider in PREFIX for name in API_KEY_ENV[provider]]
KEY = "sk-test-0123456789abcdef"
RECORDS = [{"id": "t1", "prompt": "Classify: my invoice is wrong"}]


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[str]:
    with running_emulator(tmp_path / "served") as url:
        yield url


@pytest.mark.parametrize(("provider", "name"), KEY_VARIABLES)
@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (KEY + "\r", "ends with a carriage return (a Windows line end"),
        (KEY + "\n", "ends with a newline"),
        (" " + KEY, "starts with a space"),
        (KEY[:6] + "\u201c" + KEY[6:], "contains a character outside printable ASCII (U+201C"),
    ],
)
def test_a_key_with_a_stray_character_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    loopback: str,
    provider: str,
    name: str,
    key: str,
    problem: str,
) -> None:
    monkeypatch.setenv(name, key)
    with pytest.raises(ProviderError) as caught:
        provider_class(provider)(emulated=False, base_url=loopback + PREFIX[provider])
    message = str(caught.value)
    assert message.startswith(f"{name} {problem}") and "set it again without it" in message
    assert KEY[:10] not in message and KEY[-6:] not in message


@pytest.mark.parametrize("provider", list(PREFIX))
def test_a_run_with_a_crlf_key_stops_at_once_with_nothing_sent(
    monkeypatch: pytest.MonkeyPatch, loopback: str, tmp_path: Path, provider: str
) -> None:
    name = API_KEY_ENV[provider][0]
    monkeypatch.setenv(name, KEY + "\r")
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "crlf"}}
    started = time.monotonic()
    graph.invoke(
        {"requests": RECORDS},
        config,
        context=Context(provider=provider, base_url=loopback + PREFIX[provider]),
    )
    values = graph.get_state(config).values
    assert time.monotonic() - started < 10  # not half a minute of "network error" retries
    assert values["status"] == "error"
    assert values["error"].startswith(f"{name} ends with a carriage return")
    assert KEY not in json.dumps(values, default=str)
    assert read_access_log(tmp_path / "served") == []


class AuthenticatingProxy:
    """A loopback proxy that wants Basic auth `user:s3cret` and forwards to the emulator.

    It stands for the endpoint a `--base-url http://user:secret@host/...` points at: every call
    without the password is refused, so a poll only works if the run supplied it again.
    """

    def __init__(self, upstream: str) -> None:
        """Serve in a daemon thread; record every Authorization header received."""
        expected = "Basic " + base64.b64encode(b"user:s3cret").decode()
        seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                seen.append(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != expected:
                    self.send_response(407)
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() == "content-type"}
                headers["Authorization"] = "Bearer proxy-key"
                answer = httpx2.request(
                    self.command, upstream + self.path, content=body, headers=headers
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = _forward  # noqa: N815 (http.server's naming)

            def log_message(self, *args: Any) -> None:
                pass

        self.seen = seen
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def test_a_base_url_password_is_never_stored_and_is_asked_for_again(
    loopback: str, tmp_path: Path
) -> None:
    proxy = AuthenticatingProxy(loopback)
    try:
        secret_url = f"http://user:s3cret@127.0.0.1:{proxy.port}/openai/v1"
        source = tmp_path / "in.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
        db = ["--db", str(tmp_path / "db.sqlite")]
        runner = CliRunner()
        base = ["run", "--thread", "pw", *db, "--wait", "--poll-interval", "0.1"]

        submitted = runner.invoke(
            app,
            [
                "run",
                str(source),
                "--provider",
                "openai",
                "--base-url",
                secret_url,
                *db[:2],
                "--thread",
                "pw",
            ],
        )
        assert submitted.exit_code == 0, submitted.output
        assert proxy.seen and all(h.startswith("Basic ") for h in proxy.seen)

        # A later run without the URL cannot reach the job: it says what to pass.
        without = runner.invoke(app, [*base, "--out", str(tmp_path / "out.jsonl")])
        assert without.exit_code != 0
        redacted = f"http://user:***@127.0.0.1:{proxy.port}/openai/v1"
        assert f"runs at {redacted}, whose password is not stored" in str(without.exception)
        assert "--base-url" in str(without.exception)

        # Given the URL again, the run polls through the proxy and finishes.
        done = runner.invoke(
            app, [*base, "--base-url", secret_url, "--out", str(tmp_path / "out.jsonl")]
        )
        assert done.exit_code == 0, done.output
        rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert [r["status"] for r in rows] == ["succeeded"] * len(RECORDS)

        status = runner.invoke(app, ["status", "pw", *db, "--json"])
        assert "s3cret" not in status.stdout + without.output + done.output + submitted.output
        for stored in tmp_path.glob("db.sqlite*"):
            if stored.is_file():
                assert b"s3cret" not in stored.read_bytes(), stored
    finally:
        proxy.close()


def test_provider_for_job_takes_the_password_from_the_run_with_the_same_url() -> None:
    job: Any = {
        "provider": "openai",
        "emulated": False,
        "job_id": "batch_1",
        "job_key": "k",
        "base_url": "http://user:***@proxy.example/v1",
    }
    same = Context(base_url="http://user:pw@proxy.example/v1")
    assert provider_for_job(job, same).base_url == "http://user:pw@proxy.example/v1"
    for other in (Context(), Context(base_url="http://user:pw@elsewhere.example/v1")):
        with pytest.raises(ProviderError, match="batch_1 runs at http://user:\\*\\*\\*@proxy"):
            provider_for_job(job, other)
    plain: Any = {**job, "base_url": "http://proxy.example/v1"}
    assert provider_for_job(plain, Context()).base_url == "http://proxy.example/v1"
    # A job recorded before passwords were masked still reaches its endpoint.
    legacy: Any = {**job, "base_url": "http://user:pw@proxy.example/v1"}
    assert provider_for_job(legacy, Context()).base_url == "http://user:pw@proxy.example/v1"
