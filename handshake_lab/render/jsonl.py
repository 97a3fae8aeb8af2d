"""``--json``: one JSON object per line on stdout, from the same records as the table."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from handshake_lab.record.events import Event, to_json


class JsonLinesRenderer:
    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        self.out.write(json.dumps(to_json(event), ensure_ascii=False, sort_keys=False) + "\n")
        self.out.flush()
