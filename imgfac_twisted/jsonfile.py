"""Reading a JSON config file (the daemon's and the command-line client's): one object, clear errors."""

from __future__ import annotations

import json
from typing import Any


def read_json_object(path: str, *, must_exist: bool, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when it is missing and need not exist.

    Every problem raises ``error`` with a message naming the file and never
    quoting its content (it may hold secrets).
    """
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        if must_exist:
            raise error(f"config file {path} does not exist") from None
        return {}
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"config file {path} cannot be read: {getattr(problem, 'strerror', None) or problem}") from None
    try:
        document = json.loads(text)
    except ValueError as problem:
        # The message gives the position only, never the file's content.
        raise error(f"config file {path} is not valid JSON: {problem}") from None
    if not isinstance(document, dict):
        raise error(f"config file {path} must hold a JSON object")
    return document
