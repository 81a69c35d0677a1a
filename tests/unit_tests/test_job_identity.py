"""Never pay twice: lost answers, reused ids, lost databases and endless listings, per provider.

Faults on the wire come from `tests.fault_proxy` between the real SDK and the loopback emulator:
the provider acts on a create or an upload, but the answer is a proxy's 502/504 or a dropped
connection. Every test counts what the emulator holds (its jobs, its access log), never our state.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent.context import Context
from agent.emulator import ManualClock, list_jobs, read_access_log, running_emulator
from agent.emulator.faults import FAULTS_ENV
from agent.graph import build_graph
from agent.providers.base import bounded_listing
from agent.providers.mistral import MistralProvider
from agent.requests import InputError
from agent.secrets import API_KEY_ENV
from tests.fault_proxy import FaultProxy
from tests.support import FAST_POLLING, assert_all_accounted

PROVIDERS = ["openai", "mistral", "anthropic", "gemini"]
KEY_ENV = {provider: API_KEY_ENV[provider][0] for provider in PROVIDERS}
PREFIX = {
    "openai": "/openai/v1",
    "mistral": "/mistral",
    "anthropic": "/anthropic",
    "gemini": "/gemini",
}
CREATE_PATH = {
    "openai": r"^/openai/v1/batches$",
    "mistral": r"^/mistral/v1/batch/jobs$",
    "anthropic": r"^/anthropic/v1/messages/batches$",
    "gemini": r"^/gemini/v1(beta)?/models/[^/]+:batchGenerateContent$",
}
UPLOAD_PATH = {
    "openai": r"^/openai/v1/files$",
    "mistral": r"^/mistral/v1/files$",
    # A resumable upload: its start, then its bytes on the same path with `?upload_id=`.
    "gemini": r"^/gemini/upload/v1(beta)?/files$",
}
# Anthropic sends its requests inside the create (no file to upload, no file listing).
FILE_PROVIDERS = list(UPLOAD_PATH)
RECORDS = [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(6)]
PARTS = 3  # RECORDS split two per job


class Graph:
    """A batch graph on its own checkpointer and store: one process's (or one database's) view."""

    def __init__(self) -> None:
        self.graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())

    def run(
        self, thread: str, records: list[dict[str, Any]] | None, ctx: Context, **extra: Any
    ) -> dict[str, Any]:
        """Send `records` (None: resume) and re-invoke until the thread is finished."""
        config = {"configurable": {"thread_id": thread}}
        self.graph.invoke({"requests": records, **extra} if records else {}, config, context=ctx)
        deadline = time.monotonic() + 60
        values = dict(self.graph.get_state(config).values)
        while values.get("status") not in {"completed", "failed", "cancelled", "error"}:
            assert time.monotonic() < deadline, "the batch did not finish"
            self.graph.invoke({}, config, context=ctx)
            values = dict(self.graph.get_state(config).values)
        return values

    def submit(self, thread: str, records: list[dict[str, Any]], ctx: Context) -> dict[str, Any]:
        """Submit `records` and return as soon as the jobs exist (no wait in the run)."""
        config = {"configurable": {"thread_id": thread}}
        no_wait = dataclasses.replace(ctx, max_wait_seconds=0.0)
        return dict(self.graph.invoke({"requests": records}, config, context=no_wait))


@pytest.fixture
def served(
    isolated_env: Path, emulator_clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    """The emulator over loopback (real keys set, so the SDKs talk to a "real" endpoint)."""
    for env in KEY_ENV.values():
        monkeypatch.setenv(env, "sk-test-key-1234")
    with running_emulator(isolated_env, emulator_clock) as url:
        yield url, isolated_env


def _context(provider: str, base: str, **overrides: Any) -> Context:
    settings = {**FAST_POLLING, "max_requests_per_job": 2, **overrides}
    return Context(provider=provider, base_url=base + PREFIX[provider], **settings)


def _jobs(state_dir: Path, provider: str) -> list[dict[str, Any]]:
    return [job for job in list_jobs(state_dir) if job["provider"] == provider]


def _uploads(proxy: FaultProxy, state_dir: Path, provider: str) -> int:
    """How many uploads were started (a Gemini upload's second POST, its bytes, not counted)."""
    if provider != "gemini":
        return proxy.count("POST", UPLOAD_PATH[provider])
    pattern = re.compile(UPLOAD_PATH[provider])
    log = read_access_log(state_dir)
    return sum(1 for row in log if row["method"] == "POST" and pattern.search(row["path"]))


# --------------------------------------------------------------------------- lost answers


@pytest.mark.parametrize("action", ["502_after", "504_after", "drop_after"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_create_whose_answer_is_lost_is_never_sent_again(
    served: tuple[str, Path], provider: str, action: str
) -> None:
    url, state_dir = served
    with FaultProxy(url) as proxy:
        # The first create of the thread is accepted, but its answer never arrives.
        proxy.fail("POST", CREATE_PATH[provider], action)  # type: ignore[arg-type]
        values = Graph().run("t", RECORDS, _context(provider, proxy.url))
    assert values["status"] == "completed", values.get("error")
    _assert_one_job_per_part(values, state_dir, provider, proxy)


@pytest.mark.parametrize("action", ["502_after", "drop_after"])
@pytest.mark.parametrize("provider", FILE_PROVIDERS)
def test_a_lost_create_on_a_server_without_listings_is_not_sent_again(
    served: tuple[str, Path], provider: str, action: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a batch listing nothing can tell whether the lost create made a job: stop."""
    url, state_dir = served
    monkeypatch.setenv(FAULTS_ENV, "no_listing=1")
    with FaultProxy(url) as proxy:
        proxy.fail("POST", CREATE_PATH[provider], action)  # type: ignore[arg-type]
        values = Graph().run("t", RECORDS, _context(provider, proxy.url))
    assert values["status"] == "error"
    assert "answer was lost" in values["error"] and "nothing was sent again" in values["error"]
    # The lost create made a job; it was sent once, and no other create followed it.
    assert proxy.count("POST", CREATE_PATH[provider]) == 1
    assert len(_jobs(state_dir, provider)) == 1


@pytest.mark.parametrize("listings", ["listed", "no listings"])
@pytest.mark.parametrize("provider", FILE_PROVIDERS)
def test_a_server_without_listings_runs_with_one_warning(
    served: tuple[str, Path],
    provider: str,
    listings: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """File and batch listings are optional: without them a run uploads and creates plainly."""
    url, state_dir = served
    if listings == "no listings":
        monkeypatch.setenv(FAULTS_ENV, "no_listing=1")
    with FaultProxy(url) as proxy, caplog.at_level(logging.WARNING, logger="batch_agent"):
        values = Graph().run("t", RECORDS, _context(provider, proxy.url))
    assert values["status"] == "completed", values.get("error")
    _assert_one_job_per_part(values, state_dir, provider, proxy)
    assert _uploads(proxy, state_dir, provider) == PARTS
    warned = [r.getMessage() for r in caplog.records if "does not list files" in r.getMessage()]
    assert len(warned) == (1 if listings == "no listings" else 0)


def _assert_one_job_per_part(
    values: dict[str, Any], state_dir: Path, provider: str, proxy: FaultProxy
) -> None:
    """Every request succeeded, in one job per planned part, each created once."""
    assert_all_accounted(values, RECORDS)
    assert all(r["status"] == "succeeded" for r in values["results"])
    # One job per planned part, each sent once: a lost one was found, not created again.
    assert len(_jobs(state_dir, provider)) == len(values["jobs"]) == PARTS
    assert proxy.count("POST", CREATE_PATH[provider]) == PARTS
    assert sorted(j["job_id"] for j in values["jobs"]) == sorted(
        j["id"] for j in _jobs(state_dir, provider)
    )


# The request whose answer makes the file: Gemini's is a resumable upload's bytes (its start,
# on the same path without `?upload_id=`, makes no file: starting again is right).
UPLOAD_QUERY = {"gemini": r"upload_id="}


@pytest.mark.parametrize("listings", ["listed", "no listings"])
@pytest.mark.parametrize("provider", FILE_PROVIDERS)
def test_an_upload_whose_answer_is_lost_is_found_not_sent_again(
    served: tuple[str, Path], provider: str, listings: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state_dir = served
    if listings == "no listings":
        monkeypatch.setenv(FAULTS_ENV, "no_listing=1")
    with FaultProxy(url) as proxy:
        rule = proxy.fail(
            "POST", UPLOAD_PATH[provider], "502_after", query=UPLOAD_QUERY.get(provider)
        )
        values = Graph().run("t", RECORDS, _context(provider, proxy.url))
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, RECORDS)
    # Found by its name, not sent again; a server that cannot list files gets it twice (a
    # second copy of a file, never a second job). google-genai resends the lost bytes to the
    # same upload session, which answers its file again: one upload either way.
    uploads = PARTS if listings == "listed" or provider == "gemini" else PARTS + 1
    assert _uploads(proxy, state_dir, provider) == uploads
    assert rule.fired == 1 and len(_jobs(state_dir, provider)) == PARTS


def test_a_refused_create_is_sent_again_without_a_lookup(served: tuple[str, Path]) -> None:
    url, state_dir = served
    with FaultProxy(url) as proxy:
        proxy.fail("POST", CREATE_PATH["openai"], "502_before")  # never reached the provider
        values = Graph().run("t", RECORDS, _context("openai", proxy.url))
    assert values["status"] == "completed", values.get("error")
    assert len(_jobs(state_dir, "openai")) == PARTS


# --------------------------------------------------------------------------- identity


@pytest.mark.parametrize("provider", PROVIDERS)
def test_two_threads_with_the_same_requests_never_adopt_each_others_jobs(
    served: tuple[str, Path], provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state_dir = served
    graph = Graph()  # one store: the second thread could see the first one's records
    first = graph.run("first", RECORDS, _context(provider, url))
    assert first["status"] == "completed"
    # The first thread's batches have ended (their results readable, their ids and prompts the
    # same as ours); the second thread's stay processing while it looks for its lost one.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "4")
    with FaultProxy(url) as proxy:
        # The second thread's first create is lost: the lookup must not take the first's job.
        proxy.fail("POST", CREATE_PATH[provider], "502_after")
        second = graph.run("second", RECORDS, _context(provider, proxy.url))
    assert second["status"] == "completed", second.get("error")
    assert_all_accounted(second, RECORDS)
    theirs = {job["job_id"] for job in first["jobs"]}
    ours = {job["job_id"] for job in second["jobs"]}
    assert len(ours) == PARTS and not ours & theirs
    assert len(_jobs(state_dir, provider)) == 2 * PARTS
    # Two separate stores (two machines): the same holds without the shared job index.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0.3")
    with FaultProxy(url) as proxy:
        proxy.fail("POST", CREATE_PATH[provider], "502_after")
        third = Graph().run("third", RECORDS, _context(provider, proxy.url))
    assert third["status"] == "completed", third.get("error")
    assert not {job["job_id"] for job in third["jobs"]} & (ours | theirs)
    assert len(_jobs(state_dir, provider)) == 3 * PARTS


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("moment", ["in flight", "finished"])
def test_a_thread_rerun_after_its_database_is_lost_adopts_its_jobs(
    served: tuple[str, Path], emulator_clock: ManualClock, provider: str, moment: str
) -> None:
    url, state_dir = served
    ctx = _context(provider, url)
    submitted = Graph().submit("nightly", RECORDS, ctx)
    assert all(job["job_id"] for job in submitted["jobs"])
    if moment == "finished":
        emulator_clock.advance(0.5)  # every job has ended at the provider
    # A new worker with a fresh database re-runs the same input on the same thread id.
    values = Graph().run("nightly", RECORDS, ctx)
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, RECORDS)
    assert all(r["status"] == "succeeded" for r in values["results"])
    assert len(_jobs(state_dir, provider)) == PARTS  # no second batch for any job
    assert {j["job_id"] for j in values["jobs"]} == {j["job_id"] for j in submitted["jobs"]}


def test_a_new_thread_does_not_look_for_jobs_of_an_earlier_life(served: tuple[str, Path]) -> None:
    url, _ = served
    Graph().run("fresh", RECORDS, _context("openai", url), new_thread=True)
    calls = [(e["method"], e["path"].partition("?")[0]) for e in read_access_log()]
    assert ("GET", "/openai/v1/batches") not in calls  # no listing before the creates
    assert calls.count(("POST", "/openai/v1/batches")) == PARTS


def test_another_threads_batch_adopted_unverified_is_released_when_it_ends(
    served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Anthropic cannot show a processing batch's custom ids, so a thread that lost its records
    # adopts a batch of its size from before its plan unverified. This one is someone else's.
    url, state_dir = served
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "1.5")
    others = [{"id": f"o{i}", "prompt": f"other question {i}"} for i in range(2)]
    Graph().submit("someone-else", others, _context("anthropic", url))
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0.3")
    mine = [{"id": f"m{i}", "prompt": f"my question {i}"} for i in range(2)]
    values = Graph().run("mine", mine, _context("anthropic", url))
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, mine)
    assert [r["message"].content for r in values["results"]] == [
        "Emulated reply to: my question 0",
        "Emulated reply to: my question 1",
    ]
    assert len(_jobs(state_dir, "anthropic")) == 2  # the other thread's, and our own
    assert values["jobs"][0]["attempt"] == 1 and not values["jobs"][0].get("unverified")
    assert "belongs to another thread; released" in caplog.text  # it was adopted, then let go


# --------------------------------------------------------------------------- request sets


@pytest.mark.parametrize("moment", ["in flight", "completed"])
@pytest.mark.parametrize("form", ["file", "inline"])
def test_a_thread_refuses_another_request_set_before_any_provider_call(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str, form: str
) -> None:
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0.3" if moment == "completed" else "30")
    graph = Graph()
    ctx = Context(provider="emulator", **FAST_POLLING)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(f'{{"id": "a{i}", "prompt": "A {i}"}}\n' for i in range(4)))
    b.write_text("".join(f'{{"id": "b{i}", "prompt": "B {i}"}}\n' for i in range(3)))
    config = {"configurable": {"thread_id": "T"}}
    graph.graph.invoke({"input_path": str(a)}, config, context=Context(provider="emulator"))
    if moment == "completed":
        assert graph.run("T", None, ctx)["status"] == "completed"
    calls = len(read_access_log())
    inline = [{"id": f"b{i}", "prompt": f"B {i}"} for i in range(3)]
    other = {"input_path": str(b)} if form == "file" else {"requests": inline}
    with pytest.raises(InputError) as refused:
        graph.graph.invoke(other, config, context=ctx)
    message = str(refused.value)
    assert "already holds a batch of 4 requests" in message and "of 3 requests" in message
    assert "new thread" in message and "--thread" in message
    assert len(read_access_log()) == calls  # nothing was sent
    # The thread is as it was: the same input again is fine, and it finishes with A's results.
    again = Context(provider="emulator")  # one check, no wait in the run
    values = dict(graph.graph.invoke({"input_path": str(a)}, config, context=again))
    assert values.get("status") != "error"
    if moment == "in flight":
        monkeypatch.setenv("BATCH_AGENT_EMULATOR_DELAY", "0.3")
        return  # the 30 s job would take too long: the refusal and the resume are what count
    assert [r["id"] for r in values["results"]] == ["a0", "a1", "a2", "a3"]
    assert len(list_jobs(isolated_env)) == 1


# --------------------------------------------------------------------------- resume needs


# The providers whose follow-up jobs rebuild their requests from the store (`keeps_input` False):
# Anthropic keeps no input file, and a Gemini upload cannot be downloaded again.
@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_a_retry_needs_no_local_file(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    # Half the requests fail with retryable errors; the spool is wiped right after submit.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "request_fail_rate=0.5,seed=3")
    graph = Graph()
    ctx = Context(provider=provider, **FAST_POLLING)  # type: ignore[arg-type]
    records = [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(8)]
    submitted = graph.submit("t", records, ctx)
    assert submitted["status"] == "submitted"
    shutil.rmtree(os.environ["BATCH_AGENT_SPOOL_DIR"])
    values = graph.run("t", None, ctx)
    assert values["status"] == "completed", values.get("error")
    assert_all_accounted(values, records)
    assert max(r["attempts"] for r in values["results"]) >= 2  # the retries ran
    assert len(values["jobs"]) >= 2


# --------------------------------------------------------------------------- listings


def test_finding_a_file_among_many_ends(served: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = served
    provider = MistralProvider(emulated=False, base_url=f"{url}/mistral")
    path = tmp_path / "one.jsonl"
    path.write_text('{"custom_id": "a", "body": {}}\n')
    since = time.time()
    names = [f"f{i}.jsonl" for i in range(130)]
    for name in names:
        provider.upload(path, name)
    assert provider.find_file("f0.jsonl", path.stat().st_size, since) is not None  # page 2
    assert provider.find_file("absent.jsonl", path.stat().st_size, since) is None


def test_a_listing_that_ignores_its_page_stops(tmp_path: Path) -> None:
    # A server (or a caching proxy) that answers every page with the same full first page.
    files = [
        {
            "id": f"file-{i}",
            "object": "file",
            "bytes": 10,
            "created_at": int(time.time()),
            "filename": f"x{i}.jsonl",
            "purpose": "batch",
            "sample_type": "batch_request",
            "source": "upload",
        }
        for i in range(100)
    ]

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"object": "list", "data": files, "total": 10**6})

    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    provider = MistralProvider(emulated=False, base_url="https://api.invalid", http_client=client)
    started = time.monotonic()
    assert provider.find_file("not-there.jsonl", 10, time.time()) is None
    assert time.monotonic() - started < 5


def test_bounded_listing_stops_on_a_repeat_a_floor_and_a_cap() -> None:
    def repeating() -> Iterator[tuple[str, float]]:
        while True:
            yield from [("a", 10.0), ("b", 9.0)]

    def ident(item: tuple[str, float]) -> str:
        return item[0]

    def created(item: tuple[str, float]) -> float:
        return item[1]

    assert [
        i for i, _ in bounded_listing(repeating(), ident=ident, created_at=created, floor=0)
    ] == ["a", "b"]
    older = iter([("a", 10.0), ("b", 5.0), ("c", 9.0)])
    assert [i for i, _ in bounded_listing(older, ident=ident, created_at=created, floor=6)] == ["a"]
    many = ((str(n), 10.0) for n in range(10**9))
    assert (
        len(list(bounded_listing(many, ident=ident, created_at=created, floor=0, limit=50))) == 50
    )


@pytest.mark.parametrize("change", ["edited", "deleted"])
def test_a_resume_never_sends_a_source_that_changed_since_the_plan(
    isolated_env: Path, tmp_path: Path, change: str
) -> None:
    # Stopped right after planning (before any job exists); then the spool is cleaned and the
    # input file is edited or deleted. A resume must not build a job from what is there now.
    graph = build_graph().compile(
        checkpointer=InMemorySaver(), store=InMemoryStore(), interrupt_after=["submit"]
    )
    config = {"configurable": {"thread_id": "t"}}
    ctx = Context(provider="emulator", max_requests_per_job=2)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id": "r{i}", "prompt": "question {i}"}}\n' for i in range(4)))
    graph.invoke({"input_path": str(source)}, config, context=ctx)
    assert graph.get_state(config).values["status"] == "new"
    shutil.rmtree(os.environ["BATCH_AGENT_SPOOL_DIR"])
    if change == "edited":
        source.write_text(source.read_text().replace("question 1", "question one"))
    else:
        source.unlink()
    graph.invoke(None, config, context=ctx)
    values = graph.get_state(config).values
    assert values["status"] == "error"
    assert "cannot be rebuilt" in values["error"] or "has changed since" in values["error"]
    assert "--thread t" in values["error"]
    assert list_jobs(isolated_env) == []  # nothing was sent
