"""The durable records of a map (`agent.batched.bridge.map_graph`) in the LangGraph store.

Under the namespace `("batch_agent_map", MAP_ID, ...)`:

- `inputs`: the items' inputs, recorded on the map's first run (a resume reads them back);
- `answers/KEY`: each call's answer by call key (slimmed to error, usage and cost once delivered);
- `items/INDEX`: the call keys item INDEX was answered (its calls, tokens and cost);
- `batches/THREAD`: the cost of each batch thread whose results came back (or were cancelled);
- `rounds/NNNNNN`: per round, the calls pooled and the batch threads they went to, written before
  any of them is submitted, so `batch-agent status` and `cancel` find a round's pools in flight
  even after the map process was killed;
- `progress`: the items completed, failed and waiting, as of the last round's start or the end of
  the last run (what `status` shows without the user's graph);
- `cancelled`: set by `batch-agent cancel MAP_ID`; a cancelled map sends nothing more, and the
  items still waiting fail, naming the cancel (`cancel_message`).

Everything here is plain JSON in the store, read by the bridge, the CLI's `status` and `cancel`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, get_args

from agent.pricing import Cost, total_cost
from agent.statuses import ItemStatus

if TYPE_CHECKING:
    from agent.batched.calls import Call

ROOT = "batch_agent_map"
"""Store namespace root of the maps' own records (answers, items, rounds)."""
USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")
"""The token counts an answer keeps for its item's usage."""
PAGE = 500
"""Records read or written per store query when a round handles every item's."""
PROGRESS_COUNTS: tuple[str, ...] = ("items", *get_args(ItemStatus))
"""The counts a map's recorded progress holds: all its items, and its items by status."""


def no_progress(items: int) -> dict[str, int]:
    """Return the progress counts of `items` items, none of them in any status yet."""
    return {**dict.fromkeys(PROGRESS_COUNTS, 0), "items": items}


def cancel_message(map_id: str, calls: int) -> str:
    """Return the error of an item left waiting on `calls` batched calls by a cancelled map."""
    return (
        f"MapCancelled: map {map_id} was cancelled (batch-agent cancel {map_id}) while this "
        f"item waited on {calls} batched model call(s); they are not sent again"
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class MapRecords:
    """A map's durable records in the store: inputs, answers by call key, per-item usage, rounds."""

    def __init__(self, store: Any, map_id: str) -> None:
        """Read and write the records of map `map_id` in `store` (a LangGraph `BaseStore`)."""
        self.store = store
        self.map_id = map_id

    def exists(self) -> bool:
        """Tell whether the store holds a map of this id (its inputs were recorded)."""
        return self.store.get((ROOT, self.map_id), "inputs") is not None

    def inputs(self, inputs: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
        """Record the map's inputs on first run; return them (resuming: the recorded ones)."""
        namespace = (ROOT, self.map_id)
        item = self.store.get(namespace, "inputs")
        if item is not None:
            recorded = list(item.value["items"])
            if inputs is not None and [dict(i) for i in inputs] != recorded:
                raise ValueError(f"map {self.map_id} was started with other inputs")
            return recorded
        if inputs is None:
            raise ValueError(f"no map {self.map_id!r} to resume")
        items = [dict(i) for i in inputs]
        self.store.put(namespace, "inputs", {"items": items})
        return items

    def answers(self, keys: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Return the stored answers of many calls by key (None: no answer yet).

        Read in pages of `PAGE` keys, one store query each: a round asks for every item's.
        """
        return self._get_many((ROOT, self.map_id, "answers"), list(dict.fromkeys(keys)))

    def _get_many(self, namespace: tuple[str, ...], keys: list[str]) -> dict[str, Any]:
        from langgraph.store.base import GetOp

        found: dict[str, Any] = {}
        for start in range(0, len(keys), PAGE):
            page = keys[start : start + PAGE]
            items = self.store.batch([GetOp(namespace, key) for key in page])
            for key, item in zip(page, items, strict=True):
                found[key] = dict(item.value) if item is not None else None
        return found

    def _put_many(self, namespace: tuple[str, ...], values: Mapping[str, dict[str, Any]]) -> None:
        from langgraph.store.base import PutOp

        ops = [PutOp(namespace, key, value) for key, value in values.items()]
        for start in range(0, len(ops), PAGE):
            self.store.batch(ops[start : start + PAGE])

    def put_answers(
        self, answers: Mapping[str, dict[str, Any]], *, batch: tuple[str, Any] | None = None
    ) -> None:
        """Store answers by call key, and the cost of the batch thread they came from."""
        from langgraph.store.base import PutOp

        namespace = (ROOT, self.map_id, "answers")
        ops = [PutOp(namespace, key, value) for key, value in answers.items()]
        if batch is not None:
            thread_id, cost = batch
            ops.append(PutOp((ROOT, self.map_id, "batches"), thread_id, {"cost": cost}))
        if ops:
            self.store.batch(ops)

    def cost(self) -> Cost | None:
        """Return what the map's batch threads cost so far (each counted once)."""
        found = self.store.search((ROOT, self.map_id, "batches"), limit=10_000)
        return total_cost(item.value["cost"] for item in found if item.value.get("cost"))

    def slim_answers(self, answers: Mapping[str, dict[str, Any] | None]) -> None:
        """Drop the messages of delivered answers (as `answers` read them), keeping the rest.

        Their error, usage and cost stay, for the items' accounting.
        """
        self._put_many(
            (ROOT, self.map_id, "answers"),
            {
                key: {**found, "message": None, "delivered": True}
                for key, found in answers.items()
                if found is not None and found.get("message") is not None
            },
        )

    def count_delivered(self, calls: Mapping[int, Sequence[Call]]) -> None:
        """Remember which calls each item (by index) was answered: its calls and tokens."""
        namespace = (ROOT, self.map_id, "items")
        recorded = self._get_many(namespace, [str(index) for index in calls])
        updated: dict[str, dict[str, Any]] = {}
        for index, answered in calls.items():
            keys = list((recorded[str(index)] or {}).get("keys") or [])
            # Idempotent: a delivery made again after a kill counts each call once.
            keys.extend(c.key for c in answered if c.key not in keys)
            updated[str(index)] = {"keys": keys}
        self._put_many(namespace, updated)

    def delivered(self, count: int) -> list[tuple[int, dict[str, int], Cost | None]]:
        """Return, for items 0..count-1, how many calls each made, their usage and cost."""
        recorded = self._get_many((ROOT, self.map_id, "items"), [str(i) for i in range(count)])
        keys = {i: list((recorded[str(i)] or {}).get("keys") or []) for i in range(count)}
        answers = self.answers(key for item_keys in keys.values() for key in item_keys)
        out: list[tuple[int, dict[str, int], Cost | None]] = []
        for index in range(count):
            usage = dict.fromkeys(USAGE_KEYS, 0)
            costs: list[Cost] = []
            for key in keys[index]:
                found = answers.get(key) or {}
                for name in usage:
                    usage[name] += int((found.get("usage") or {}).get(name) or 0)
                if found.get("cost"):
                    costs.append(found["cost"])
            out.append((len(keys[index]), usage, total_cost(costs)))
        return out

    def rounds(self) -> list[dict[str, Any]]:
        """Return the map's rounds so far, in order (`number`, `calls`, `batch_threads`, `status`).

        `status` is `pooled` (its batch threads were started, or are about to be: in flight),
        `done` (every pool's answers are stored) or `cancelled`.
        """
        found = self.store.search((ROOT, self.map_id, "rounds"), limit=100_000)
        return sorted((dict(item.value) for item in found), key=lambda r: int(r["number"]))

    def start_round(self, calls: int, batch_threads: list[str]) -> int:
        """Record a round's pools before any is submitted; return the round's number.

        The round left unfinished by an earlier run is the same round when it pools the same
        batch threads (its calls are still unanswered), or when nothing is left to pool (its
        answers came back, the kill came before its items were resumed).
        """
        rounds = self.rounds()
        last = rounds[-1] if rounds else None
        if last is not None and last["status"] == "pooled":
            if not batch_threads or list(last["batch_threads"]) == batch_threads:
                return int(last["number"])
            self._put_round({**last, "status": "done"})
        number = len(rounds) + 1
        self._put_round(
            {
                "number": number,
                "calls": calls,
                "batch_threads": batch_threads,
                "status": "pooled",
                "started_at": _now(),
            }
        )
        return number

    def finish_round(self, number: int, status: str = "done") -> None:
        """Mark round `number` `done` (its answers stored) or `cancelled`."""
        found = self.store.get((ROOT, self.map_id, "rounds"), f"{number:06d}")
        if found is not None and found.value.get("status") != status:
            self._put_round({**found.value, "status": status})

    def mark_submitted(self, number: int, thread_id: str) -> None:
        """Remember that round `number`'s batch thread `thread_id` was left in flight."""
        found = self.store.get((ROOT, self.map_id, "rounds"), f"{number:06d}")
        if found is None:
            return
        submitted = list(found.value.get("submitted") or [])
        if thread_id not in submitted:
            self._put_round({**found.value, "submitted": [*submitted, thread_id]})

    def submitted(self, number: int) -> set[str]:
        """Return the batch threads of round `number` an earlier run left in flight."""
        found = self.store.get((ROOT, self.map_id, "rounds"), f"{number:06d}")
        return set(found.value.get("submitted") or []) if found is not None else set()

    def _put_round(self, value: dict[str, Any]) -> None:
        self.store.put((ROOT, self.map_id, "rounds"), f"{int(value['number']):06d}", value)

    def in_flight(self) -> list[str]:
        """Return the batch threads of the map's unfinished round (none when it has none)."""
        rounds = self.rounds()
        if rounds and rounds[-1]["status"] == "pooled":
            return list(rounds[-1]["batch_threads"])
        return []

    def put_progress(self, counts: Mapping[str, int], status: str) -> None:
        """Record the items' counts (`items`, `completed`, `failed`, `waiting`, ...) and status."""
        self.store.put(
            (ROOT, self.map_id), "progress", {**counts, "status": status, "updated_at": _now()}
        )

    def progress(self) -> dict[str, Any]:
        """Return the last recorded progress (`{}` before the first round)."""
        found = self.store.get((ROOT, self.map_id), "progress")
        return dict(found.value) if found is not None else {}

    def put_batch_cost(self, thread_id: str, cost: Cost | None) -> None:
        """Record what a batch thread cost (a cancelled one's partial results too)."""
        self.store.put((ROOT, self.map_id, "batches"), thread_id, {"cost": cost})

    def cancel(self) -> None:
        """Mark the map cancelled: nothing more is sent, its waiting items fail when resumed."""
        if self.cancelled() is None:
            self.store.put((ROOT, self.map_id), "cancelled", {"at": _now()})

    def cancelled(self) -> dict[str, Any] | None:
        """Return the map's cancel record (`at`), or None when it was not cancelled."""
        found = self.store.get((ROOT, self.map_id), "cancelled")
        return dict(found.value) if found is not None else None
