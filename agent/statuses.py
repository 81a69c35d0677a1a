"""Every status a thread, a job or a result can have, and which of them are final.

One home for these facts: the graph's routers, the CLI, the Python API and the remote client all
read them from here. The module imports nothing heavy, so read-only commands can use it cheaply.
"""

from __future__ import annotations

from typing import Literal

ThreadStatus = Literal["new", "submitted", "running", "completed", "failed", "cancelled", "error"]
"""Status of a whole thread, as shown by `batch-agent status --json`. `error` means a provider call
failed in a way the user must fix (a key, a quota); the thread resumes when invoked again."""

JobStatus = Literal["intent", "queued", "running", "cancelling", "done", "failed"]
"""A provider status normalised: `intent` is recorded before the provider is called, `done` means
results can be collected (completed, expired or cancelled with partial output), `failed` means the
job ended without any results."""

ResultStatus = Literal["succeeded", "failed"]
"""Status of one request's result."""

ItemStatus = Literal["completed", "failed", "waiting", "interrupted"]
"""Status of one input item of a mapped user graph (`agent.batched.map_graph`): `completed`, its
thread ended; `failed`, a node raised (or its map was cancelled while it waited); `waiting`, on
batched model calls of a map that is not done; `interrupted`, the graph waits for an
`interrupt()` of its own (human input), which batch-agent does not answer."""

MapStatus = Literal["running", "waiting", "stopped", "done", "cancelled"]
"""Status of a map (`agent.batched.map_graph`, `batch-agent status MAP_ID`): `running`, a round
is under way; `waiting`, a run returned with pools in flight (`--no-wait`); `stopped`, it hit
`max_rounds` with items waiting; `done`, every item ended; `cancelled`, by `batch-agent cancel`
(nothing more is sent)."""

TERMINAL_THREAD_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
"""Thread statuses after which invoking the thread again changes nothing."""

TERMINAL_JOB_STATUSES: frozenset[str] = frozenset({"done", "failed"})
"""Job statuses after which the provider will not change the job any more."""

WAITING_JOB_STATUSES: frozenset[str] = frozenset({"intent", "queued"})
"""Job statuses of a job that has not started running: a thread of only these is `submitted`."""
