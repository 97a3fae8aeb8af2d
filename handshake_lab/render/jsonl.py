"""``--json``: one JSON object per line on stdout, from the same records as the table."""

from __future__ import annotations

import sys
from typing import TextIO

from handshake_lab.record.codec import dumps
from handshake_lab.record.events import Event


class JsonLinesRenderer:
    """Writes each event as it comes; ``lang`` picks the text of the text fields only."""

    def __init__(self, lang: str, out: TextIO | None = None) -> None:
        self.lang = lang
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        self.out.write(dumps(event, self.lang) + "\n")
        self.out.flush()
