"""Project-level promises: the README's commands, CI and the CLI agree with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    assert first_block, "README must open with a code block of commands"
    return [
        line
        for line in first_block.group(1).splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_readme_opens_with_exactly_two_commands_and_ci_runs_the_second() -> None:
    install_and_run, install_and_test = _readme_commands()
    assert "batch-agent run examples/" in install_and_run
    assert "pytest" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_and_test in ci


def test_statuses_are_defined_once() -> None:
    """Thread, job and result statuses live in agent/statuses.py; no other module spells them out."""
    import ast

    defined = []
    for path in (ROOT / "agent").rglob("*.py"):
        if "emulator" in path.parts:
            continue  # the emulator speaks the providers' own raw statuses, not ours
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Assign):
                targets = [t for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                targets = [node.target]
            for target in targets:
                if target.id.endswith(("STATUSES", "Status")):
                    defined.append(f"{path.relative_to(ROOT)}:{target.id}")
    assert defined and all(d.startswith("agent/statuses.py:") for d in defined), defined


def test_langgraph_json_points_at_the_graph_and_a_durable_checkpointer() -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    assert config["graphs"]["batch"]["path"] == "./graphs/batch.py:graph"
    assert config["checkpointer"]["path"] == "./agent/persistence.py:server_checkpointer"
    assert config["store"]["path"] == "agent.persistence.server_store"
    from graphs.batch import graph

    assert graph.checkpointer is None  # langgraph dev refuses graphs that bring their own


def test_env_example_has_keys_but_no_values() -> None:
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert value == "", f"{name} must not carry a value in .env.example"
