"""Studio's forms and state view: every field of the served graph's schemas has a description.

The input, output and context schemas are what the server returns from
`graph.get_input_jsonschema()` and friends. The server's state schema is built another way
(langgraph_api `_state_jsonschema`, which cannot be imported outside a server): one pydantic
field per stream channel, typed with the channel's `UpdateType`. `served_state_schema` does the
same, so a description the server would drop is missing here too.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.runnables.utils import create_model

from graphs.batch import graph
from tests.support import undescribed


def served_state_schema() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in graph.stream_channels_list:
        update_type = graph.channels[name].UpdateType
        try:
            create_model(name, __root__=(update_type, None)).model_json_schema()
            fields[name] = (update_type, None)
        except Exception:
            fields[name] = (Any, None)
    return create_model(graph.get_name("State"), **fields).model_json_schema()


SCHEMAS = {
    "input": graph.get_input_jsonschema,
    "output": graph.get_output_jsonschema,
    "state": served_state_schema,
    "context": graph.get_context_jsonschema,
}


@pytest.mark.parametrize("which", sorted(SCHEMAS))
def test_every_field_studio_shows_is_described(which: str) -> None:
    schema = SCHEMAS[which]()
    assert schema["properties"]
    assert undescribed(schema) == []


def test_state_fields_no_caller_sets_are_marked_internal() -> None:
    state = served_state_schema()["properties"]
    public = set(graph.get_input_jsonschema()["properties"]) | set(
        graph.get_output_jsonschema()["properties"]
    )
    internal = {name: spec["description"] for name, spec in state.items() if name not in public}
    assert {"source_fingerprint", "waits_this_run", "request_hash"} <= set(internal)
    assert [name for name, text in internal.items() if not text.startswith("Internal:")] == []
    assert [name for name in public if state[name]["description"].startswith("Internal:")] == []


def test_the_served_state_schema_keeps_field_types() -> None:
    state = served_state_schema()["properties"]
    assert state["status"]["type"] == "string" and "completed" in state["status"]["enum"]
    assert state["polls"]["type"] == "integer"
    assert state["jobs"]["items"] == {"$ref": "#/$defs/Job"}
