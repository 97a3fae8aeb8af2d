"""One record per run, every view drawn from it: real runs of the half-close lab."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handshake_lab.errors import ExitStatus
from handshake_lab.record.codec import TEXT_FIELDS, dumps, read_run
from handshake_lab.record.run import RunRecord
from handshake_lab.spec.loader import find_lab
from tests.integration.labrun import run_lab
from tests.integration.test_cli import cli, one_error_line


def without_texts(line: str) -> str:
    doc = json.loads(line)
    for key in TEXT_FIELDS.get(doc["event"], ()):
        doc.pop(key)
    return json.dumps(doc)


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_json_of_one_run_is_identical_in_both_languages_but_for_the_text_fields(
    loop_name: str,
) -> None:
    recorded = run_lab(find_lab("half-close"), loop_name)
    rec = RunRecord(recorded.header, tuple(recorded.steps.values()), recorded.result)
    en = [dumps(event, "en") for event in rec.events()]
    zh = [dumps(event, "zh") for event in rec.events()]
    assert en != zh  # the texts differ...
    assert [without_texts(x) for x in en] == [without_texts(x) for x in zh]  # ...nothing else
    # and the texts really are the two languages, taken from the lab file
    assert json.loads(zh[1])["explanation"] == find_lab("half-close").steps[0].explain.zh


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_show_of_a_saved_run_prints_what_the_run_printed(tmp_path: Path, lang: str) -> None:
    saved = tmp_path / "run.jsonl"
    ran = cli("run", "half-close", "--lang", lang, "--save", str(saved))
    assert ran.returncode == 0, ran.stderr
    shown = cli("show", str(saved))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == ran.stdout
    assert "Step 10/10" in shown.stdout or "步骤 10/10" in shown.stdout
    record = read_run(saved)
    assert record.lang == lang
    assert len(record.steps) == 10
    assert record.exit_status() is ExitStatus.OK


def test_the_saved_run_is_the_json_the_run_would_print(tmp_path: Path) -> None:
    saved = tmp_path / "run.jsonl"
    ran = cli("run", "half-close", "--json", "--save", str(saved))
    assert ran.returncode == 0, ran.stderr
    assert saved.read_text(encoding="utf-8") == ran.stdout


def test_show_of_a_truncated_run_gives_its_verdict_and_a_broken_one_exits_10(
    tmp_path: Path,
) -> None:
    saved = tmp_path / "run.jsonl"
    assert cli("run", "half-close", "--json", "--save", str(saved)).returncode == 0
    lines = saved.read_text(encoding="utf-8").splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")  # no result: interrupted
    shown = cli("show", str(cut))
    assert shown.returncode == ExitStatus.INTERRUPTED
    assert "Step 3/10" in shown.stdout
    broken = tmp_path / "broken.jsonl"
    broken.write_text(lines[0] + "\n" + lines[1][:50] + "\n", encoding="utf-8")
    proc = cli("show", str(broken))
    assert proc.returncode == ExitStatus.RUN_INVALID
    assert f"{broken}:2:" in one_error_line(proc)
