"""Embeddings through the batch graph: `run_batch_embeddings` and `{"embed": ...}` input.

On the in-process emulator through the real SDKs: the vectors a thread returns equal what the
user's own LangChain embeddings object returns in realtime from the emulator's realtime
endpoint (the same deterministic answers), in input order; they live in the store as float32,
never in state; the thread resumes, dedupes, retries and prices as a chat thread does.
"""

from __future__ import annotations

from typing import Any

import httpx2
import numpy as np
import pytest
from langchain_openai import OpenAIEmbeddings
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agent import EmbeddingResults, run_batch_embeddings
from agent.context import Context
from agent.emulator import IN_PROCESS_BASE_URL, ManualClock, use_clock
from agent.graph import build_graph
from agent.requests import InputError
from tests.support import FAST_POLLING, run_to_end

FAST = {"poll_interval_seconds": 0.1, "poll_backoff": 1.0}
TEXTS = ["the cat sat on the mat", "a dog ran [emulator:reject]", "the cat sat on the mat", "ok"]


def _realtime_openai(**settings: Any) -> OpenAIEmbeddings:
    """The user's own object, sent to the emulator's realtime /embeddings endpoint."""
    return OpenAIEmbeddings(
        api_key="sk-test",  # type: ignore[arg-type]
        base_url=f"{IN_PROCESS_BASE_URL}/openai/v1",
        http_client=httpx2.Client(
            transport=httpx2.WSGITransport(app=use_clock(ManualClock(ticking=True)))
        ),
        max_retries=0,
        **settings,
    )


def test_vectors_come_back_in_input_order_equal_to_the_realtime_embed_documents() -> None:
    texts = [TEXTS[0], TEXTS[3], "δέλτα " * 30]
    model = OpenAIEmbeddings(model="text-embedding-3-small", dimensions=64, api_key="sk-x")  # type: ignore[arg-type]
    results = run_batch_embeddings(texts, model=model, provider="emulator", **FAST)
    assert isinstance(results, EmbeddingResults) and results.done
    assert results.array.dtype == np.float32 and results.array.shape == (3, 64)
    assert results.ids == ["text-1", "text-2", "text-3"] and results.errors == {}
    realtime = _realtime_openai(model="text-embedding-3-small", dimensions=64).embed_documents(
        texts
    )
    np.testing.assert_array_equal(results.array, np.float32(realtime))
    assert results.tolist() == np.float32(realtime).tolist()
    assert np.allclose(np.linalg.norm(results.array, axis=1), 1.0, atol=1e-6)
    (job,) = results.jobs
    assert job["endpoint"] == "embeddings" and job["model"] == "text-embedding-3-small"
    # Billed tokens are the texts' tokens, no output: what the plan counted with tiktoken.
    assert results.usage["output_tokens"] == 0 and results.usage["input_tokens"] > 0


def test_a_failed_text_is_a_nan_row_with_its_error_and_duplicates_are_sent_once() -> None:
    results = run_batch_embeddings(
        TEXTS, provider="emulator", max_attempts=1, dimensions=16, **FAST
    )
    assert results.array.shape == (4, 16)
    assert np.isnan(results.array[1]).all()
    assert results.errors["text-2"]["code"] == "invalid_request"
    # Identical texts: one line sent, the same vector for both ids.
    np.testing.assert_array_equal(results.array[0], results.array[2])
    assert results.counts == {"total": 4, "succeeded": 3, "failed": 1, "pending": 0}
    (job,) = results.jobs
    assert job["request_count"] == 3


def test_vectors_stay_out_of_state_and_the_thread_resumes_from_the_store() -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "emb"}}
    ctx = Context(provider="emulator", dimensions=256, **FAST_POLLING)  # type: ignore[arg-type]
    texts = [f"document number {n}" for n in range(30)]
    graph.invoke({"embed": texts}, config, context=ctx)
    values = run_to_end(graph, config, ctx, None)
    assert values["status"] == "completed" and values["endpoint"] == "embeddings"
    # The state's results carry no vector; the store's pages hold them as base64 float32.
    assert all("vector" not in result for result in values["results"])
    assert all(result["message"] is None for result in values["results"])
    state_bytes = len(repr(values))
    assert state_bytes < 30 * 256  # far below the 30 x 256 floats of the vectors
    (page,) = graph.store.search(tuple(values["results_store"]["namespace"]))  # type: ignore[union-attr]
    assert page.value["count"] == 30 and '"vector":"' in page.value["jsonl"]
    # The same input again is the same request set: answered from the thread, nothing sent.
    graph.invoke({"embed": texts}, config, context=ctx)
    assert graph.get_state(config).values["jobs"] == values["jobs"]


def test_bad_texts_and_chat_settings_are_refused_before_anything_is_uploaded() -> None:
    with pytest.raises(InputError, match=r"input:2: .*one 'text'.*request id 'b'"):
        run_batch_embeddings(
            [
                {"id": "a", "text": "fine"},
                {
                    "id": "b",
                    "messages": [
                        {"role": "system", "content": "s"},
                        {"role": "user", "content": "x"},
                    ],
                },
            ],
            provider="emulator",
            **FAST,
        )
    with pytest.raises(InputError, match="takes no temperature"):
        run_batch_embeddings(["x"], provider="emulator", temperature=0.2, **FAST)
    with pytest.raises(InputError, match="anthropic does not batch the embeddings endpoint"):
        run_batch_embeddings(["x"], provider="anthropic", base_url="http://127.0.0.1:9", **FAST)


@pytest.mark.parametrize(
    ("provider", "model", "dims", "batch_priced"),
    [("mistral", "mistral-embed", 1024, True), ("gemini", "gemini-embedding-001", 3072, False)],
)
def test_mistral_and_gemini_embed_through_the_same_graph(
    provider: str, model: str, dims: int, batch_priced: bool
) -> None:
    # No key set: the emulator's protocol of that provider, through its own SDK.
    results = run_batch_embeddings(["first text", "second text"], provider=provider, **FAST)
    assert results.done and results.errors == {}
    assert results.array.shape == (2, dims)
    assert np.allclose(np.linalg.norm(results.array, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(results.array[0], results.array[1])
    (job,) = results.jobs
    assert job["provider"] == provider and job["model"] == model
    assert job["endpoint"] == "embeddings"
    # genai-prices has a batch price for mistral-embed, none for gemini-embedding-001.
    assert results.cost is not None
    assert (results.cost["batch_usd"] is not None) is batch_priced
    assert results.cost["realtime_usd"] is not None
