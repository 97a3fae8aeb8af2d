"""The progress line of a waiting step (render.progress): shown after SHOW_AFTER, redrawn in
place, erased when the step ends; nothing for a quick step. The command's choice (a terminal
only, never --json) is tested through a pty in tests/integration/test_terminal_output.py."""

from __future__ import annotations

import io
import threading
import time

from rich.cells import cell_len

from handshake_lab.render.progress import ERASE, SHOW_AFTER, StepProgress, fit


class Stream(io.StringIO):
    """A StringIO the drawing thread and the test may both touch."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


def wait_for(stream: Stream, needle: str, count: int = 1, limit: float = 5.0) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        text = stream.text()
        if text.count(needle) >= count:
            return text
        time.sleep(0.01)
    raise AssertionError(f"{needle!r} not written {count} times: {stream.text()!r}")


def test_a_waiting_step_is_redrawn_in_place_then_erased() -> None:
    stream = Stream()
    with StepProgress(stream, "en") as progress:
        progress.started(4, 9, "client", "connect", timeout=4.0)
        text = wait_for(stream, "waiting for the kernel", count=2)
        assert text.startswith("\rStep 4/9 client: connect: waiting for the kernel 0.")
        assert "(timeout 4 s)" in text
        assert "\n" not in text  # one line, redrawn with carriage returns
        progress.clear()
        assert stream.text().endswith(ERASE)
        after = stream.text()
    assert stream.text() == after  # nothing more once cleared and closed


def test_a_quick_step_shows_nothing_and_chinese_has_its_words() -> None:
    stream = Stream()
    with StepProgress(stream, "zh") as progress:
        progress.started(1, 2, "server", "listen", timeout=2.0)
        progress.clear()
        time.sleep(SHOW_AFTER + 0.2)  # longer than a line would need to appear
        assert stream.text() == ""
        progress.started(2, 2, "lab", "observe", timeout=3.0, stay=1.2)
        text = wait_for(stream, "等待内核")
        assert "步骤 2/2 lab: observe: 等待内核" in text
        assert "须保持 1.2 s" in text
    assert stream.text().endswith(ERASE)  # closing erases a line still shown


def test_fit_keeps_the_line_within_the_terminal() -> None:
    assert fit("abcdef", 4) == "abc"
    assert cell_len(fit("步骤 2/2 等待内核", 8)) <= 7
