"""Keep API keys out of everything we store or print.

Keys are only ever read from the environment when an SDK client is built. Provider error texts can
still echo a key (or a masked fragment of one), so every error message that goes into graph state,
logs or CLI output passes through `redact` first.
"""

from __future__ import annotations

import os
import re

KEY_ENV_VARS = ("OPENAI_API_KEY", "MISTRAL_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY")
# Key-looking tokens, including masked echoes such as "sk-abc***xyz".
_KEY_PATTERN = re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-*]{6,}")
_BEARER_PATTERN = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """Return `text` with API key values, key-looking tokens and bearer tokens removed."""
    for name in KEY_ENV_VARS:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, REDACTED)
    text = _KEY_PATTERN.sub(REDACTED, text)
    return _BEARER_PATTERN.sub(lambda m: m.group(1) + REDACTED, text)
