"""``--json``: one JSON object per line on stdout, from the same records as the table."""

from __future__ import annotations

import sys
from typing import TextIO

from handshake_lab.record.codec import dumps
from handshake_lab.record.events import Event, LabStarted, StepReport
from handshake_lab.render.kernel_text import filler


class JsonLinesRenderer:
    """Writes each event as it comes; ``lang`` picks the text of the text fields only."""

    def __init__(self, lang: str, out: TextIO | None = None) -> None:
        self.lang = lang
        self.out = out or sys.stdout
        self.kernel: dict[str, str | None] = {}
        self.fill = filler({}, lang)

    def __call__(self, event: Event) -> None:
        fill = self.fill
        if isinstance(event, LabStarted):
            self.kernel = event.kernel
            self.fill = fill = filler(event.kernel, self.lang)
        elif isinstance(event, StepReport):
            fill = filler(self.kernel, self.lang, event.tcp_info)  # {rtt:SIDE} of this step
        self.out.write(dumps(event, self.lang, fill) + "\n")
        self.out.flush()
