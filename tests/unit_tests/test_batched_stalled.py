"""A map resumes the states a kill leaves an item's thread in, and loses no item.

A mapped item runs with `durability="exit"`: when its run stops, LangGraph saves the stop's
checkpoint, then its pending writes (the interrupt that holds the item's calls), one after the
other. A kill between the two leaves a thread whose checkpoint has tasks to run (`next`) but
no interrupt and no error. Each test builds such a state in the checkpointer's own tables (the
stop's checkpoint kept, its writes dropped) and resumes the map on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from agent.batched import map_graph
from agent.emulator import IN_PROCESS_BASE_URL, emulator_http_client
from agent.persistence import sqlite_checkpointer
from tests.graphs.pipeline import fan_out_builder, pipeline_builder
from tests.support import FAST_POLLING

DOCS = [{"text": f"invoice {i} was charged twice"} for i in range(4)]
# Keep the jobs' input files, so the test can read which calls each job held.
KEEP = {**FAST_POLLING, "keep_files": True}


def _lose_pending_writes(db: Path, thread_id: str, keep_tasks: int = 0) -> None:
    """Drop the writes of `thread_id`'s latest checkpoint, as a kill after that checkpoint leaves it.

    Args:
        db: The map's database.
        thread_id: The item's thread.
        keep_tasks: How many tasks' writes were saved before the kill (in the order stored).
    """
    with sqlite_checkpointer(db) as saver:
        latest = saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        assert latest is not None and latest.pending_writes, "the item should be suspended"
        tasks = list(dict.fromkeys(task_id for task_id, _, _ in latest.pending_writes))
        lost = tasks[keep_tasks:]
        with saver.conn:
            saver.conn.executemany(
                "DELETE FROM writes WHERE thread_id = ? AND checkpoint_id = ? AND task_id = ?",
                [(thread_id, latest.config["configurable"]["checkpoint_id"], t) for t in lost],
            )
        after = saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        assert after is not None and len(after.pending_writes) == keep_tasks


def _calls_per_job() -> list[list[str]]:
    """Ask the emulator, through the OpenAI SDK, for every job's request ids (call keys)."""
    client = openai.OpenAI(
        api_key="unused-key",
        base_url=f"{IN_PROCESS_BASE_URL}/openai/v1",
        http_client=emulator_http_client(),
    )
    jobs = []
    for job in client.batches.list():
        lines = client.files.content(job.input_file_id).text.splitlines()
        jobs.append([json.loads(line)["custom_id"] for line in lines])
    return jobs


def _uninterrupted_states(tmp_path: Path) -> list[Any]:
    """The items' final states of the same map run without a kill (check the jobs before)."""
    again = map_graph(pipeline_builder(), DOCS, db=tmp_path / "again.sqlite", **FAST_POLLING)
    return [item.state for item in again]


def _assert_no_call_paid_twice() -> None:
    keys = [key for job in _calls_per_job() for key in job]
    assert keys, "the emulator holds no job"
    assert len(keys) == len(set(keys)), "a call was sent in two jobs"


def test_an_item_killed_after_its_first_stop_was_checkpointed_runs_on(tmp_path: Path) -> None:
    db = tmp_path / "map.sqlite"
    # Every item ran to its first call; nothing was sent (no round).
    first = map_graph(pipeline_builder(), DOCS, db=db, max_rounds=0, **KEEP)
    _lose_pending_writes(db, first[1].thread_id)

    done = map_graph(pipeline_builder(), None, map_id=first.map_id, db=db, **KEEP)
    assert [item.status for item in done] == ["completed"] * len(DOCS), done[1].error
    assert [r.calls for r in done.rounds] == [len(DOCS)] * 3  # still pooled with the others
    assert [item.calls for item in done] == [3] * len(DOCS)
    _assert_no_call_paid_twice()
    assert [item.state for item in done] == _uninterrupted_states(tmp_path)


def test_an_item_killed_after_a_resumed_stop_was_checkpointed_runs_on(tmp_path: Path) -> None:
    db = tmp_path / "map.sqlite"
    # One round: every item got its first answer and suspended on its second call.
    first = map_graph(pipeline_builder(), DOCS, db=db, max_rounds=1, **KEEP)
    _lose_pending_writes(db, first[2].thread_id)

    done = map_graph(pipeline_builder(), None, map_id=first.map_id, db=db, **KEEP)
    assert [item.status for item in done] == ["completed"] * len(DOCS), done[2].error
    assert [r.calls for r in done.rounds] == [len(DOCS)] * 2
    assert [item.calls for item in done] == [3] * len(DOCS)
    _assert_no_call_paid_twice()
    assert [item.state for item in done] == _uninterrupted_states(tmp_path)


# Of five `Send` branches suspended at once, none or two had their interrupts saved before the
# kill. With two, the map resumes those and LangGraph runs the other three again (they suspend
# for the next round); with none, the thread is stalled as a pipeline's step is.
@pytest.mark.parametrize("saved", [0, 2], ids=["no-branch-saved", "two-branches-saved"])
def test_a_fan_out_killed_between_its_branches_writes_runs_every_branch(
    tmp_path: Path, saved: int
) -> None:
    db = tmp_path / "map.sqlite"
    topics = [f"topic {i}" for i in range(5)]
    first = map_graph(fan_out_builder(), [{"topics": topics}], db=db, max_rounds=0, **KEEP)
    _lose_pending_writes(db, first[0].thread_id, keep_tasks=saved)

    done = map_graph(fan_out_builder(), None, map_id=first.map_id, db=db, **KEEP)
    (item,) = done
    assert item.status == "completed", item.error
    assert sorted(item.state["answers"]) == sorted(
        f"Emulated reply to: Explain {t}" for t in topics
    )
    assert item.calls == len(topics)
    _assert_no_call_paid_twice()
