"""FirstSeen: exact first-seen answers across the spill to disk, with bounded memory."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from agent.first_seen import FirstSeen
from agent.id_spool import CHUNK, IdSpool
from agent.requests import InputError, iter_file_requests


def test_first_value_wins_before_and_after_the_spill(tmp_path: Path) -> None:
    with FirstSeen(memory_keys=100, bloom_bytes=4096, directory=tmp_path) as seen:
        for n in range(1_000):
            assert seen.setdefault(f"key-{n}", str(n)) == str(n)
        assert seen.spilled and len(seen) == 1_000
        assert list(tmp_path.glob("batch-agent-seen-*"))  # the spill file is in `directory`
        # Every key, in memory or on disk, answers its first value, never the new one.
        for n in random.Random(7).sample(range(1_000), 1_000):
            assert seen.setdefault(f"key-{n}", "later") == str(n)
        assert len(seen) == 1_000
        # New keys after the spill are new, bytes keys included.
        assert seen.setdefault(b"\x00new", "x") == "x"
        assert seen.setdefault(b"\x00new", "y") == "x"
    assert not list(tmp_path.glob("batch-agent-seen-*"))  # closing deletes it


def test_a_small_bloom_filter_only_costs_lookups_never_a_wrong_answer(tmp_path: Path) -> None:
    # One byte of filter: every probe "may be on disk", every new key asks SQLite, still exact.
    with FirstSeen(memory_keys=10, bloom_bytes=1, directory=tmp_path) as tiny:
        for n in range(200):
            assert tiny.setdefault(str(n), "first") == "first"
        assert tiny.disk_lookups > 100
        assert all(tiny.setdefault(str(n), "again") == "first" for n in range(200))
    with FirstSeen(memory_keys=10, directory=tmp_path) as roomy:
        for n in range(200):
            roomy.setdefault(str(n), "first")
        # A 16 MiB filter rules out (almost) every new key without the disk.
        assert roomy.disk_lookups <= 2


def test_duplicate_ids_are_found_across_the_spill_with_their_first_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.first_seen

    # The input's ids spill after 50 (a real run spills after half a million).
    monkeypatch.setattr(agent.first_seen, "DEFAULT_MEMORY_KEYS", 50)
    monkeypatch.setattr(agent.first_seen, "DEFAULT_BLOOM_BYTES", 1024)
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": f"r{n}", "prompt": "hi"}) for n in range(500)]
    lines.append(json.dumps({"id": "r3", "prompt": "hi again"}))  # line 501 reuses line 4's id
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="duplicate id, first used on line 4") as raised:
        list(iter_file_requests(source))
    assert str(raised.value).startswith("in.jsonl:501: ")


def test_memory_keys_must_be_positive() -> None:
    with pytest.raises(ValueError, match="memory_keys"):
        FirstSeen(memory_keys=0)


def test_an_id_spool_reads_back_every_value_in_order_across_chunks(tmp_path: Path) -> None:

    values: list[Any] = [
        f'id-{i}\n"odd"' if i % 7 == 0 else f"id-{i}" for i in range(CHUNK * 2 + 17)
    ]
    values[5] = ["dup-5", "id-1"]  # a duplicate pair is a list
    spool = IdSpool(tmp_path / "ids.spool")
    for value in values:
        spool.add(value)
    assert spool.count == len(values)
    assert list(spool) == values
    assert list(spool) == values  # read again: the same
    spool.discard()
    assert not (tmp_path / "ids.spool").exists() and spool.count == len(values)
