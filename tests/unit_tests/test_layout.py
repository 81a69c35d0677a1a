"""The graph and the modules its nodes use speak normalised facts, never a provider's own words.

`agent/graph.py` (nodes, routers, `build_graph`), `agent/submission.py`, `agent/job_records.py`
and `agent/results.py` work for every provider alike: a provider reports what it saw as a
`JobUpdate` (a normalised status, a cancelled flag, a retryable kind) and its result lines as
`RequestOutcome`s. So none of these modules may hold a provider's raw status string (taken from
each provider's own `STATUS_MAP` at test time), an error code a provider module tests for, a
comparison on the raw `provider_status`, or a provider's name.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType
from typing import get_args

import pytest

from agent.providers import PROVIDERS
from agent.providers.base import RETRYABLE_CODES
from agent.statuses import JobStatus, ResultStatus, ThreadStatus

ROOT = Path(__file__).resolve().parents[2]
CORE = [
    "agent/graph.py",
    "agent/submission.py",
    "agent/job_records.py",
    "agent/results.py",
    # A batched call's failure is raised as its provider says (`realtime_exception`).
    "agent/batched/model.py",
    "agent/batched/bridge.py",
]
# Our own words, which some providers happen to use for their raw statuses or codes too.
OURS = (
    set(get_args(JobStatus))
    | set(get_args(ThreadStatus))
    | set(get_args(ResultStatus))
    | {"no_result", "batch_failed"}
)


def _provider_modules(name: str) -> list[ModuleType]:
    """The module a provider is registered under and, once it is a package, all of its modules."""
    module = importlib.import_module(PROVIDERS[name].partition(":")[0])
    modules = [module]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{module.__name__}."):
            modules.append(importlib.import_module(info.name))
    return modules


def _raw_statuses() -> set[str]:
    statuses: set[str] = set()
    for name in PROVIDERS:
        maps = [m.STATUS_MAP for m in _provider_modules(name) if hasattr(m, "STATUS_MAP")]
        assert maps, f"provider {name} has no STATUS_MAP to take its raw statuses from"
        for status_map in maps:
            statuses |= set(status_map)
    return statuses - OURS


def _is_code(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "code"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "code"
    return False


def _strings(node: ast.AST) -> set[str]:
    return {
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def _provider_error_codes() -> set[str]:
    """Error codes providers report: the retryable ones, and every code a provider tests for."""
    codes = set(RETRYABLE_CODES)
    for name in PROVIDERS:
        for module in _provider_modules(name):
            assert module.__file__ is not None
            tree = ast.parse(Path(module.__file__).read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Compare):
                    sides = [node.left, *node.comparators]
                    if any(_is_code(side) for side in sides):
                        codes |= set().union(*(_strings(s) for s in sides if not _is_code(s)))
    return codes - OURS


def test_the_vocabulary_is_taken_from_the_providers() -> None:
    statuses, codes = _raw_statuses(), _provider_error_codes()
    # The words the graph once spelled out are among them, so the check below can see them.
    assert {"CANCELLED", "ended", "in_progress"} <= statuses
    assert {"token_limit_exceeded", "batch_expired"} <= codes


@pytest.mark.parametrize("path", CORE)
def test_core_modules_name_no_provider_status_code_or_provider(path: str) -> None:
    source = (ROOT / path).read_text()
    tree = ast.parse(source)
    literals = _strings(tree)
    statuses = sorted(literals & _raw_statuses())
    assert not statuses, f"{path}: raw provider statuses {statuses}"
    codes = sorted(literals & _provider_error_codes())
    assert not codes, f"{path}: provider error codes {codes}"
    compared = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and any("provider_status" in ast.unparse(side) for side in [node.left, *node.comparators])
    ]
    assert not compared, f"{path}: branches on a raw provider status: {compared}"
    names = [n for n in PROVIDERS if re.search(rf"\b{n}", source, re.IGNORECASE)]
    assert not names, f"{path}: names the provider(s) {names}"


def test_graph_holds_its_nodes_routers_and_builder_only() -> None:
    """What a node does lives in the modules named for it; graph.py tells the story."""
    from agent.graph import build_graph

    nodes = set(build_graph().nodes) - {"schedule"}  # `agent.scheduling`'s runnable
    tree = ast.parse((ROOT / "agent/graph.py").read_text())
    public = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
    }
    routers = {name for name in public if name.startswith("route_")}
    assert set(public) == nodes | routers | {"build_graph", "records_errors", "Node"}
    for name in routers:
        returns = public[name].returns  # type: ignore[union-attr]
        assert returns is not None and ast.unparse(returns).startswith("Literal["), name
