"""Keep API keys out of everything we store or print, and refuse keys that cannot be sent.

Keys are only ever read from the environment when an SDK client is built. Provider error texts can
still echo a key (or a masked fragment of one), so every error message that goes into graph state,
logs or CLI output passes through `redact` first. `key_problem` describes a key an HTTP header
cannot carry (a trailing carriage return from a Windows `.env` file), without quoting it.
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


# What a character at the edge of a key most likely is, in words a user can act on.
_CHARACTER_NAMES = {
    "\r": "a carriage return (a Windows line end, as a .env file saved on Windows leaves)",
    "\n": "a newline",
    "\t": "a tab",
    " ": "a space",
}


def key_problem(name: str, value: str) -> str | None:
    """Return a sentence about a stray character in API key `value`, or None if it has none.

    Keys are printable ASCII without spaces. httpx refuses a header with a trailing carriage
    return, tab or control character (or anything non-ASCII), and the SDKs take that refusal for
    a network error and retry it for half a minute; a stray leading space is sent and refused as
    a wrong key. The sentence names the variable `name` and the problem, never the key or any
    part of it.
    """
    if all("!" <= char <= "~" for char in value):
        return None
    if not value.strip():
        problem = "holds only whitespace"
    elif value[-1] != value.rstrip()[-1]:
        problem = f"ends with {_name(value[len(value.rstrip())])}"
    elif value[0] != value.lstrip()[0]:
        problem = f"starts with {_name(value[0])}"
    else:
        odd = next(char for char in value if not "!" <= char <= "~")
        problem = f"contains {_name(odd)}"
    return f"{name} {problem}; an API key holds no such character: set it again without it"


def _name(char: str) -> str:
    if char in _CHARACTER_NAMES:
        return _CHARACTER_NAMES[char]
    if char.isspace() or not char.isprintable():
        return f"an invisible character (U+{ord(char):04X})"
    return f"a character outside printable ASCII (U+{ord(char):04X}, e.g. a typographic quote)"
