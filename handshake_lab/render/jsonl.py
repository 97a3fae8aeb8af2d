"""``--json``: one JSON object per line on stdout, from the same records as the table."""

from __future__ import annotations

import sys
from typing import TextIO

from handshake_lab.record.codec import dumps
from handshake_lab.record.events import Event, LabStarted
from handshake_lab.render.kernel_text import filler


class JsonLinesRenderer:
    """Writes each event as it comes; ``lang`` picks the text of the text fields only."""

    def __init__(self, lang: str, out: TextIO | None = None) -> None:
        self.lang = lang
        self.out = out or sys.stdout
        self.fill = filler({}, lang)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LabStarted):
            self.fill = filler(event.kernel, self.lang)
        self.out.write(dumps(event, self.lang, self.fill) + "\n")
        self.out.flush()
