"""``lab check FILE...`` and ``lab new NAME``: options in, one call to ``spec.authoring``, out."""

from __future__ import annotations

import json
import sys

from handshake_lab.errors import ExitStatus
from handshake_lab.spec.authoring import check_files, check_report, check_status, write_new_lab


def lab_check_command(files: list[str], json_out: bool) -> ExitStatus:
    checks = check_files(files)
    status = check_status(checks)
    if json_out:
        document = {"files": [c.as_dict() for c in checks], "exit": int(status)}
        sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    else:
        for line in check_report(checks):
            sys.stdout.write(line + "\n")
    return status


def lab_new_command(name: str) -> ExitStatus:
    path = write_new_lab(name)
    sys.stdout.write(
        f"wrote {path}: check it with 'handshake-lab lab check {path}', "
        f"run it with 'handshake-lab run {path}'\n"
    )
    return ExitStatus.OK
