"""Where a key is in a TOML file: the line a message about it should name.

``tomllib`` gives values, not positions, so a lab or answers file error could only name the
step. ``SourceMap`` reads the text once, line by line, and records the line of every table
header (``[a]``, ``[[step]]``) and every ``key =`` that starts a line, under its full path:
``("step", 1, "expect")`` is the ``expect`` of the second ``[[step]]`` (arrays of tables are
numbered from 0). Keys inside an inline table (``expect = {client = ...}``) share the line of
the key that holds them, which is where a reader looks. Lines inside multi-line strings are
skipped, so an explanation's text is never taken for a key.

It is a locator, not a parser: the file was (or will be) parsed by ``tomllib``; a path this
scan does not know falls back to its nearest known parent, then to line 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

KeyPath = tuple[str | int, ...]
"""A key's place in a TOML document: table and key names, array-of-tables indexes."""

_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"(?:[^"\\]|\\.)*"'
_LITERAL = r"'[^']*'"
_KEY_PART = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART_RE = re.compile(_KEY_PART)
_TOML_POS_RE = re.compile(r"\(at line (\d+), column \d+\)")


def split_key(dotted: str) -> tuple[str, ...]:
    """``a."b.c".d`` -> ``("a", "b.c", "d")`` (quotes removed, escapes left as written)."""
    parts = []
    for match in _PART_RE.finditer(dotted):
        part = match.group(0)
        if part[:1] in {'"', "'"}:
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


def _opens_multiline(line: str, start: int = 0) -> str | None:
    """The delimiter of a multi-line string left open at the end of ``line``, if any."""
    i = start
    open_delim: str | None = None
    while i < len(line):
        if open_delim is not None:
            end = line.find(open_delim, i)
            if end < 0:
                return open_delim
            i = end + 3
            open_delim = None
            continue
        ch = line[i]
        if ch == "#":
            return None
        if line.startswith('"""', i) or line.startswith("'''", i):
            open_delim = line[i : i + 3]
            i += 3
            continue
        if ch == '"':
            i += 1
            while i < len(line) and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
            continue
        if ch == "'":
            end = line.find("'", i + 1)
            i = len(line) if end < 0 else end + 1
            continue
        i += 1
    return open_delim


class SourceMap:
    """The line of each table and key of one TOML text (1-based line numbers)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        self._arrays: dict[KeyPath, int] = {}  # array-of-tables path -> index of its last element
        self._scan(text)

    def _resolve(self, parts: Sequence[str]) -> KeyPath:
        out: list[str | int] = []
        for part in parts:
            out.append(part)
            index = self._arrays.get(tuple(out))
            if index is not None:
                out.append(index)
        return tuple(out)

    def _note(self, path: KeyPath, line: int) -> None:
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], line)

    def _scan(self, text: str) -> None:
        table: KeyPath = ()
        in_string: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string is not None:
                end = line.find(in_string)
                if end < 0:
                    continue
                rest_from = end + 3
                in_string = _opens_multiline(line, rest_from)
                continue
            header = _HEADER_RE.match(line)
            if header is not None:
                parts = split_key(header.group(2))
                if header.group(1) == "[[":
                    base = (*self._resolve(parts[:-1]), parts[-1])
                    self._arrays[base] = self._arrays.get(base, -1) + 1
                    table = (*base, self._arrays[base])
                else:
                    table = self._resolve(parts)
                self._note(table, number)
                continue
            key = _KEY_RE.match(line)
            if key is not None:
                self._note(table + split_key(key.group(1)), number)
                in_string = _opens_multiline(line, key.end())
            else:
                in_string = _opens_multiline(line)

    def line_of(self, path: KeyPath) -> int:
        """The line of ``path``, or of its nearest parent this scan saw; 1 if none."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return 1


def toml_error_line(message: str) -> int | None:
    """The line ``tomllib`` names in a ``TOMLDecodeError`` message ("(at line 3, column 5)")."""
    match = _TOML_POS_RE.search(message)
    return int(match.group(1)) if match else None


def line_at_byte(raw: bytes, offset: int) -> int:
    """The 1-based line holding byte ``offset`` of ``raw``."""
    return raw.count(b"\n", 0, max(0, offset)) + 1


def deepest_line(text: str) -> int:
    """The line where bracket nesting is deepest (strings not parsed; for "nested too
    deeply", where ``tomllib`` gives no position)."""
    depth = best = 0
    best_line = line = 1
    for ch in text:
        if ch == "\n":
            line += 1
        elif ch in "[{":
            depth += 1
            if depth > best:
                best, best_line = depth, line
        elif ch in "]}":
            depth -= 1
    return best_line
