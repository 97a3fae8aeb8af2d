"""``handshake-lab grade DIR``: grade a class's saved runs; write a CSV and an HTML page.

The exit status is OK whenever the grading ran, whatever the students scored (their classes
are in the outputs); CLASS_DIR_INVALID when DIR is not a directory of submissions (the message
names the file in the way); OUTPUT_UNWRITABLE when an output cannot be written (checked before
anything is read, as ``--pcap`` is).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from handshake_lab.errors import ExitStatus, OutputError, UsageError
from handshake_lab.lab.grading import grade_class
from handshake_lab.outputs import check_output, write_output
from handshake_lab.render.grade import csv_text, html_page, json_doc, summary_lines

CSV_NAME = "grades.csv"
HTML_NAME = "grades.html"


def _outdir(directory: Path, outdir: Path) -> Path:
    if outdir.resolve() == directory.resolve():
        raise UsageError(
            f"{outdir}: the outputs would land among the submissions; choose another -o"
        )
    try:
        outdir.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{outdir}: cannot create the output directory: {exc.strerror}") from exc
    return outdir


def grade_command(directory: Path, outdir: Path, json_out: bool, lang: str) -> ExitStatus:
    graded = grade_class(directory)  # ClassDirError first: an unusable DIR writes nothing
    out = _outdir(directory, outdir)
    targets = {
        out / CSV_NAME: csv_text(graded),
        out / HTML_NAME: html_page(graded, directory.name, lang),
    }
    for path in targets:
        check_output(path)
    for path, text in targets.items():
        data = text.encode("utf-8")
        write_output(path, lambda stream, data=data: stream.write(data))  # type: ignore[misc]
    if json_out:
        sys.stdout.write(json.dumps(json_doc(graded, directory.name), ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("\n".join(summary_lines(graded, lang)) + "\n")
    sys.stderr.write(f"handshake-lab: wrote {out / CSV_NAME} and {out / HTML_NAME}\n")
    return ExitStatus.OK
