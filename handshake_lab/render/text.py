"""Text on a terminal: the one wrapping rule for every line the human output prints.

Widths are display widths (rich's ``cell_len``): a Chinese character takes two columns. A line
may break at a space (the space is dropped) or between two characters where one is wide (CJK),
but never before closing punctuation (``，。）、：`` ...) nor after opening punctuation (``（“``
...). A word longer than the line is cut where the line ends, so no line is ever wider than
asked. Continuation lines keep the indentation they are given.

Lab texts are written in TOML with line breaks at any column (``reflow`` removes them, keeping
blank-line paragraph breaks and list items); the terminal decides where lines end:

* ``output_width``: the terminal's width when stdout is a terminal (``COLUMNS`` wins, as
  everywhere), 80 when it is not (a pipe, a file) unless ``COLUMNS`` says otherwise.
* prose (explanations, intros, notes) is wrapped at that width but at most ``PROSE_MAX``
  columns; tables and one-line records use the whole width.

``make_console`` gives the rich console every human output uses: that width, and no spaces at
the ends of lines (rich pads table cells and padded text to their width; the padding is
invisible on a terminal and noise in a file or a diff).
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import IO, TextIO, cast

from rich.cells import cell_len
from rich.console import Console

from handshake_lab.i18n.states import unwrap

__all__ = [
    "DEFAULT_WIDTH",
    "PAYLOAD_MAX",
    "PROSE_MAX",
    "TrimmedStream",
    "abbreviate",
    "clip",
    "make_console",
    "output_width",
    "reflow",
    "trim_line",
    "wrap",
    "wrap_paragraphs",
]

DEFAULT_WIDTH = 80
"""The width without a terminal (a pipe, a file) when ``COLUMNS`` is not set."""
PROSE_MAX = 100
"""Prose is never wider than this, however wide the terminal: a 200-column line of running text
is hard to read (the eye loses the next line); 100 columns use a 120-column terminal well."""
MIN_WIDTH = 20
"""Below this a ``COLUMNS`` value is taken as 20: nothing useful fits in fewer."""
PAYLOAD_MAX = 40
"""Characters of a payload (data sent or received) shown before it is abbreviated."""
CLIP_MAX = 400
"""Characters of one message (a mismatch quoting a payload) shown before it is cut."""

NO_BREAK_BEFORE = frozenset("，。、：；！？）］｝」』】》〉’”…‥・ー々〕,.:;!?)]}%")
"""Closing and ending punctuation: a line never starts with one of these."""
NO_BREAK_AFTER = frozenset("（［｛「『【《〈‘“〔([{")
"""Opening punctuation: a line never ends with one of these."""

_SPACE = re.compile(r"[^\S\u00a0]")  # whitespace, but not a no-break space


def _wide(char: str) -> bool:
    return cell_len(char) == 2


def _can_break(before: str, after: str) -> bool:
    """May a line end between ``before`` and ``after`` (two characters with no space)?"""
    return (
        (_wide(before) or _wide(after))
        and after not in NO_BREAK_BEFORE
        and before not in NO_BREAK_AFTER
    )


def _units(text: str) -> Iterator[tuple[str, str]]:
    """The unbreakable pieces of ``text``: (the spaces before it, the piece). A line break
    among the spaces counts as one space; other runs of spaces are kept (alignment)."""
    gap = piece_gap = ""
    piece = ""
    for char in text:
        if _SPACE.match(char):
            gap += char
            continue
        if piece and (gap or _can_break(piece[-1], char)):
            yield piece_gap, piece
            piece = ""
        if not piece:
            piece_gap = " " if "\n" in gap or "\r" in gap else gap.replace("\t", " ")
        piece += char
        gap = ""
    if piece:
        yield piece_gap, piece


def _fold(piece: str, room: int, width: int) -> list[str]:
    """``piece`` cut into chunks: the first at most ``room`` columns, the others ``width``."""
    chunks: list[str] = []
    chunk, used, limit = "", 0, room
    for char in piece:
        w = cell_len(char)
        if chunk and used + w > limit:
            chunks.append(chunk)
            chunk, used, limit = "", 0, width
        chunk += char
        used += w
    chunks.append(chunk)
    return chunks


def wrap(text: str, width: int, *, indent: str = "", first: str | None = None) -> list[str]:
    """``text`` (one paragraph; its line breaks count as spaces) in lines of at most ``width``
    display columns. The first line starts with ``first`` (default: ``indent``) and the text's
    own leading spaces, every other line with ``indent``. No line ends with a space. An empty
    text gives no line, or the prefix alone if ``first`` has something to say."""
    prefix = indent if first is None else first
    lines: list[str] = []
    line, used, empty = prefix, cell_len(prefix), True
    indent_w = cell_len(indent)
    for number, (gap, piece) in enumerate(_units(text)):
        piece_w = cell_len(piece)
        # Spaces between two pieces on a line are kept; at the start of a line only the
        # text's own leading ones are (they align it).
        space = gap if not empty or number == 0 else ""
        joined_w = piece_w + cell_len(space)
        if used + joined_w <= width:
            line += space + piece
            used += joined_w
            empty = False
            continue
        if not empty:
            lines.append(line)
            line, used, empty = indent, indent_w, True
            if used + piece_w <= width:
                line += piece
                used += piece_w
                empty = False
                continue
        # Longer than a whole line: cut it where the line ends.
        room = max(width - used, 1)
        chunks = _fold(piece, room, max(width - indent_w, 1))
        for chunk in chunks[:-1]:
            lines.append(line + chunk)
            line, used = indent, indent_w
        line += chunks[-1]
        used += cell_len(chunks[-1])
        empty = False
    if not empty or prefix.strip():
        lines.append(line.rstrip())
    return lines


_ITEM = re.compile(r"(?:[-*]|\d{1,2}[.)])\s+")


def reflow(text: str) -> list[list[str]]:
    """The paragraphs of a text written with line breaks at any column, each a list of its
    blocks: the running text and its list items (a line starting with ``-``, ``*`` or ``1.``),
    each block one line. A blank line parts paragraphs. Line breaks inside a block are joined
    as ``i18n.states.unwrap`` joins them: a space between Latin words, nothing between Chinese
    characters."""
    paragraphs: list[list[str]] = []
    for chunk in re.split(r"\n[ \t]*\n", text.strip()):
        blocks: list[list[str]] = []
        for raw in chunk.splitlines():
            line = raw.strip()
            if not line:
                continue
            if _ITEM.match(line) or not blocks:
                blocks.append([line])
            else:
                blocks[-1].append(line)
        if blocks:
            paragraphs.append([unwrap("\n".join(block)) for block in blocks])
    return paragraphs


def wrap_paragraphs(
    text: str, width: int, *, indent: str = "", first: str | None = None, gap: bool = True
) -> list[str]:
    """``reflow`` then ``wrap`` every block: a list item's continuation lines are indented
    under its text, past the ``-`` or ``1.``; ``first`` starts the very first line; a blank
    line between paragraphs if ``gap``."""
    lines: list[str] = []
    lead = first
    for number, paragraph in enumerate(reflow(text)):
        if number and gap:
            lines.append("")
        for block in paragraph:
            item = _ITEM.match(block)
            hang = indent + " " * (item.end() if item else 0)
            start = lead if lead is not None else indent
            lines += wrap(block, width, indent=hang, first=start)
            lead = None
    return lines


def abbreviate(data: str, limit: int = PAYLOAD_MAX) -> str:
    """A payload as ``repr`` shows it, cut after ``limit`` characters with its length:
    ``'hello wor…' (102400 bytes)``. A short payload is its plain ``repr``."""
    if len(data) <= limit:
        return repr(data)
    shown = repr(data[:limit])
    return f"{shown[:-1]}…{shown[-1]} ({len(data.encode())} bytes)"


def clip(text: str, limit: int = CLIP_MAX) -> str:
    """``text`` cut after ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def output_width(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The width to draw for: ``COLUMNS`` if set, else the terminal's if ``stream`` (stdout)
    is one and knows its size, else 80."""
    env = os.environ if environ is None else environ
    columns = env.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return max(int(columns), MIN_WIDTH)
    out = sys.stdout if stream is None else stream
    try:
        columns_now = os.get_terminal_size(out.fileno()).columns if out.isatty() else 0
    except (OSError, ValueError, AttributeError):
        columns_now = 0
    # 0: a terminal that does not say its size (a fresh pty, a serial line): as without one.
    return max(columns_now, MIN_WIDTH) if columns_now > 0 else DEFAULT_WIDTH


_TAIL = re.compile(r"(?:[ \t]|\x1b\[[0-9;]*m)+$")
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def trim_line(line: str) -> str:
    """``line`` without its trailing spaces; colour codes among them are kept."""
    match = _TAIL.search(line)
    if match is None:
        return line
    return line[: match.start()] + "".join(_SGR.findall(match.group()))


class TrimmedStream(io.TextIOBase):
    """Writes to ``stream`` (default: stdout, or stderr, as it is at each write), each line
    without its trailing spaces. What is written is held until ``flush`` (rich flushes after
    each print or redraw) and then written at once, so a live view's frame reaches the
    terminal in one piece; a last line without its end is passed on as it is."""

    HOLD_MAX = 1 << 16
    """Characters held before complete lines are passed on without waiting for ``flush``."""

    def __init__(self, stderr: bool = False, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stderr = stderr
        self._stream = stream
        self._held = ""

    @property
    def target(self) -> TextIO:
        if self._stream is not None:
            return self._stream
        return sys.stderr if self._stderr else sys.stdout

    def write(self, text: str) -> int:
        self._held += text
        if len(self._held) > self.HOLD_MAX:
            self._pass_on(whole=False)
        return len(text)

    def flush(self) -> None:
        self._pass_on(whole=True)
        self.target.flush()

    def _pass_on(self, whole: bool) -> None:
        done, newline, rest = self._held.rpartition("\n")
        out = "\n".join(trim_line(line) for line in done.split("\n")) + newline
        if whole:
            out, rest = out + rest, ""
        self._held = rest
        if out:
            self.target.write(out)

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", None) or "utf-8"


def make_console(
    stderr: bool = False, *, stream: TextIO | None = None, width: int | None = None
) -> Console:
    """The console of the human output: ``output_width`` wide (or ``width``), no trailing
    spaces. It writes to stdout (stderr), or to ``stream`` if given."""
    shown = stream if stream is not None else sys.stderr if stderr else sys.stdout
    return Console(
        file=cast(IO[str], TrimmedStream(stderr, stream)),  # a text stream, as rich wants
        width=width if width is not None else output_width(shown),
        highlight=False,
        soft_wrap=False,
    )
