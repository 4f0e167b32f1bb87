"""JSON with comments and trailing commas, as wrangler.jsonc allows."""

from __future__ import annotations

import json
from typing import Any


def strip_jsonc(text: str) -> str:
    """``text`` without ``//`` and ``/* */`` comments and commas before ``}`` or ``]``.

    Strings are copied verbatim, so ``"http://x"`` keeps its slashes. Removed comments become
    spaces (newlines kept) so that a JSON error still points at the right line.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j == -1 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j == -1 else j + 2
            out.append("".join(c if c == "\n" else " " for c in text[i:j]))
            i = j
        elif ch == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "}]":
                out.append(" ")
            elif text.startswith(("//", "/*"), j):
                # A comment between the comma and the bracket: decide after skipping it.
                rest = strip_jsonc(text[j:]).lstrip()
                out.append(" " if rest[:1] in ("}", "]") else ",")
            else:
                out.append(",")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def loads(text: str) -> Any:
    return json.loads(strip_jsonc(text))
