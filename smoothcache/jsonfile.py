"""Reading JSON from files a user hands over, with one kind of failure.

``json.loads`` fails in several ways on hostile or damaged input besides its own decode error:
``RecursionError`` for deeply nested arrays, ``ValueError`` for integers of thousands of
digits, and a deep but loadable document can still exhaust the recursion limit later (when it
is printed or saved again). :func:`parse_json` turns all of these into ``ValueError`` (of which
``json.JSONDecodeError`` is a subclass), so a reader catches one class and raises the library's
own error.
"""

from __future__ import annotations

import json
from typing import Any

#: Deepest nesting accepted; smoothcache's own files nest 3 levels.
MAX_DEPTH = 32
#: Longest integer accepted, in digits.
MAX_DIGITS = 30


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (at most {MAX_DIGITS} are accepted)")
    return int(text)


def parse_json(text: str) -> Any:
    """``json.loads(text)`` that raises only ``ValueError`` (and gives plain Python objects)."""
    try:
        data = json.loads(text, parse_int=_parse_int)
    except RecursionError:
        raise ValueError(f"JSON nested more than {MAX_DEPTH} levels deep") from None
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise ValueError(f"JSON nested more than {MAX_DEPTH} levels deep")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return data
