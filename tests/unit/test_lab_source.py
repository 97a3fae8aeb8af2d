"""Line numbers for lab and answers files: SourceMap finds a key's line from the text."""

from __future__ import annotations

from handshake_lab.spec.loader import check_lab
from handshake_lab.spec.source import SourceMap, deepest_line, line_at_byte, toml_error_line

TEXT = '''\
title = { en = "x" }
summary.en = "y"

[[step]]
action = "listen"
explain.en = """
expect = "not a key: inside a string"
[[step]]
"""

[[step]]
"id" = 'two'
[step.expect]
client = "ESTABLISHED"

[course]
level = 1
'''


def test_keys_tables_and_arrays_of_tables_get_their_lines() -> None:
    source = SourceMap(TEXT)
    assert source.line_of(("title",)) == 1
    assert source.line_of(("summary", "en")) == 2
    assert source.line_of(("step", 0)) == 4
    assert source.line_of(("step", 0, "action")) == 5
    assert source.line_of(("step", 1, "id")) == 12
    assert source.line_of(("step", 1, "expect", "client")) == 14
    assert source.line_of(("course", "level")) == 17


def test_lines_inside_a_multiline_string_are_not_keys() -> None:
    source = SourceMap(TEXT)
    assert source.line_of(("step", 0, "expect")) == 4  # the string's text, not a key: parent
    assert ("step", 2) not in source.lines  # "[[step]]" in the string is not a third step


def test_unknown_paths_fall_back_to_the_nearest_parent_then_line_1() -> None:
    source = SourceMap(TEXT)
    assert source.line_of(("step", 1, "timeout")) == 11
    assert source.line_of(("nowhere",)) == 1


def test_positions_of_file_level_errors() -> None:
    assert toml_error_line("Invalid value (at line 7, column 3)") == 7
    assert toml_error_line("no position") is None
    assert line_at_byte(b"a\nb\nc", 4) == 3
    assert deepest_line("a = 1\nb = [[\n[1]]]\n") == 3


def test_check_lab_reports_a_problem_in_each_step_not_only_the_first() -> None:
    text = TEXT.replace('summary.en = "y"', 'summary.en = "y"\ncolour = 1')
    lab, errors = check_lab(text.encode(), "x.toml")
    assert lab is None
    assert [str(e) for e in errors] == [
        "x.toml:3: unknown top-level key 'colour' (did you mean 'course'?)",
        "x.toml:5: step 1 (1): missing actor: say who does listen (server)",
        "x.toml:12: step 2 (two): unknown action ''",
        "x.toml:17: course needs 'duration'",
        "x.toml:17: course needs 'order'",
        "x.toml:17: course needs 'privileges'",
        "x.toml:17: course needs 'states'",
    ]
