"""Project-level promises: the README's commands, CI and the CLI agree with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each provider package and the SDK modules (its own SDK and LangChain class) it may load.
SDKS = {
    "openai": ("openai", "langchain_openai"),
    "mistral": ("mistralai", "langchain_mistralai"),
    "anthropic": ("anthropic", "langchain_anthropic"),
    "gemini": ("google.genai", "langchain_google_genai"),
}


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


def _agent_imports() -> dict[str, set[str]]:
    """Return `{module: modules of agent/ it imports}`, from every import statement in the code.

    Imports inside functions and under `TYPE_CHECKING` count too: a lazy import is still a
    dependency, and a cycle through one is only hidden until the code is reshaped. `from
    agent.x import y` is an edge to the module `agent.x.y` when there is one, else to `agent.x`.
    """
    import ast

    modules: dict[str, Path] = {}
    for path in (ROOT / "agent").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Return the import cycles of `edges` (strongly connected groups of two or more modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_agent_has_no_import_cycles() -> None:
    """Every dependency inside agent/ runs one way, lazy and type-only imports included."""
    edges = _agent_imports()
    assert "agent.providers.base" in edges["agent.planning"]  # the walk sees the imports
    assert _cycles(edges) == []


def test_import_cycles_are_detected() -> None:
    """The cycle finder itself: a loop through three modules is reported, a chain is not."""
    chain = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert _cycles(chain) == []
    assert _cycles({**chain, "c": {"a"}}) == [["a", "b", "c"]]


def test_no_provider_imports_another() -> None:
    """A provider package uses the shared kit (base, fast, params, settings), never a sibling."""
    names = tuple(SDKS)
    for module, imported in _agent_imports().items():
        for name in names:
            if module.startswith(f"agent.providers.{name}"):
                others = [
                    target
                    for target in imported
                    for other in names
                    if other != name and target.startswith(f"agent.providers.{other}")
                ]
                assert others == [], f"{module} imports {others}"


@pytest.mark.parametrize("provider", list(SDKS))
def test_importing_one_provider_loads_no_other_sdk(provider: str) -> None:
    """`import agent.providers.<one>` loads its own SDKs and none of the other providers'."""
    import subprocess
    import sys

    script = (
        f"import json, sys, agent.providers.{provider}; "
        "print(json.dumps(sorted(m for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = json.loads(out.stdout)

    def sdks_loaded(names: tuple[str, ...]) -> list[str]:
        return sorted(n for n in names if any(m == n or m.startswith(f"{n}.") for m in loaded))

    assert sdks_loaded(SDKS[provider]) == sorted(SDKS[provider])  # the probe sees imports
    others = tuple(n for other, names in SDKS.items() if other != provider for n in names)
    assert sdks_loaded(others) == []


def test_readme_package_map_names_every_module() -> None:
    """The README's package map names every module and sub-package of agent/, and nothing gone."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Package map", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(agent/[\w/<>]+?(?:\.py|/))`", section))
    expected = {
        f"agent/{path.name}" for path in (ROOT / "agent").glob("*.py") if path.name != "__init__.py"
    }
    expected |= {f"agent/{path.name}/" for path in (ROOT / "agent").iterdir() if path.is_dir()}
    expected -= {"agent/__pycache__/"}
    missing = sorted(expected - named)
    assert not missing, f"README package map does not name {missing}"
    gone = sorted(p for p in named if "<" not in p and not (ROOT / p.rstrip("/")).exists())
    assert not gone, f"README package map names what does not exist: {gone}"
