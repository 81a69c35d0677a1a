"""The chat model the examples call: `ChatOpenAI`, batched.

Without `OPENAI_API_KEY`, batch-agent runs the batches on its offline emulator; the placeholder
key only lets `ChatOpenAI` be built (it never leaves the process under batch-agent).
"""

from __future__ import annotations

import os

from langchain_openai import ChatOpenAI

from agent.batched import batched


def default_model() -> ChatOpenAI:
    """Return the examples' realtime model (gpt-4o-mini, deterministic settings)."""
    return ChatOpenAI(
        model="gpt-4o-mini",
        temperature=0,
        api_key=os.environ.get("OPENAI_API_KEY", "no-key-set"),  # type: ignore[arg-type]
    )


llm = batched(default_model())
"""What the examples' nodes call."""
