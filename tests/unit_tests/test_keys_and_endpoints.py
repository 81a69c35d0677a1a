"""Keys and endpoints: a key with a stray character is refused at once, naming the variable and
never the key; a password in `--base-url` is never stored or printed, and is asked for again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent.context import Context
from agent.emulator import read_access_log, running_emulator
from agent.graph import build_graph
from agent.providers import API_KEY_ENV, ProviderError, provider_class

PREFIX = {"openai": "/openai/v1", "mistral": "/mistral", "anthropic": "/anthropic"}
KEY = "sk-test-0123456789abcdef"
RECORDS = [{"id": "t1", "prompt": "Classify: my invoice is wrong"}]


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[str]:
    with running_emulator(tmp_path / "served") as url:
        yield url


@pytest.mark.parametrize("provider", ["openai", "mistral", "anthropic"])
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
    monkeypatch: pytest.MonkeyPatch, loopback: str, provider: str, key: str, problem: str
) -> None:
    name = API_KEY_ENV[provider]
    monkeypatch.setenv(name, key)
    with pytest.raises(ProviderError) as caught:
        provider_class(provider)(emulated=False, base_url=loopback + PREFIX[provider])
    message = str(caught.value)
    assert message.startswith(f"{name} {problem}") and "set it again without it" in message
    assert KEY[:10] not in message and KEY[-6:] not in message


def test_a_run_with_a_crlf_key_stops_at_once_with_nothing_sent(
    monkeypatch: pytest.MonkeyPatch, loopback: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY + "\r")
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "crlf"}}
    started = time.monotonic()
    graph.invoke(
        {"requests": RECORDS},
        config,
        context=Context(provider="openai", base_url=loopback + "/openai/v1"),
    )
    values = graph.get_state(config).values
    assert time.monotonic() - started < 10  # not half a minute of "network error" retries
    assert values["status"] == "error"
    assert values["error"].startswith("OPENAI_API_KEY ends with a carriage return")
    assert KEY not in json.dumps(values, default=str)
    assert read_access_log(tmp_path / "served") == []
