"""``run LAB --browser``: the live page in a real headless Chromium, driven by the lab's run.

Each test starts the command as a user would, reads the URL it prints on stderr, opens it in
the browser and checks that the page follows the lab (step N shows once the lab has done step
N), that ``--step`` waits for the page's button, and that nothing listens afterwards.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from handshake_lab.errors import ExitStatus
from handshake_lab.spec.loader import find_lab
from handshake_lab.topo.caps import user_namespaces_work
from tests import needs
from tests.browser import chromium, console_errors
from tests.integration.test_cli import CLI, one_error_line

URL_LINE = re.compile(r"live view at (http://127\.0\.0\.1:(\d+)/[\w-]+/)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


class Live:
    """The command (``run``, or ``play`` with its stdin kept open: EOF would end the session)
    running with ``--browser``: its process, URL and port."""

    def __init__(self, *args: str, command: str = "run", keep_stdin: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY"}}
        env.pop("BROWSER", None)  # print the URL, open nothing
        self.proc = subprocess.Popen(
            [*CLI, command, *args, "--browser"],
            stdin=subprocess.PIPE if keep_stdin else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stderr = ""
        self.url, self.port = self._read_url(timeout=30)

    def _read_url(self, timeout: float) -> tuple[str, int]:
        assert self.proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                continue
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr += line
            found = URL_LINE.search(line)
            if found:
                return found.group(1), int(found.group(2))
        raise AssertionError(f"no URL on stderr: {self.stderr!r}")

    def finish(self, timeout: float = 60) -> int:
        _, err = self.proc.communicate(timeout=timeout)
        self.stderr += err
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


def nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_until(driver: Any, what: str, timeout: float = 30) -> Any:
    """Poll a script expression in the page until it is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {what}")
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"the page never showed: {what}")


def steps_shown(driver: Any) -> int:
    return int(driver.execute_script("return document.querySelectorAll('article.step').length"))


def test_with_step_the_page_runs_each_step_and_shows_it(browser: Any) -> None:
    total = len(find_lab("close").steps_for("loopback"))
    live = Live("close", "--step")
    try:
        browser.get_log("browser")
        browser.get(live.url)
        for n in range(1, total + 1):
            # The lab waits before step n: the button offers it, and step n is not shown yet.
            wait_until(
                browser,
                "(function(){var b=document.getElementById('run-next');"
                f"return !b.hidden && !b.disabled && b.textContent.indexOf('{n}')>=0;}})()",
            )
            assert steps_shown(browser) == n - 1
            browser.find_element("id", "run-next").click()
            wait_until(browser, f"document.getElementById('step-{n}')")
            cursor = browser.find_element("id", "cursor-label").text
            assert cursor == f"Step {n}/{total}"  # the cursor follows the newest step
        wait_until(browser, "document.body.dataset.ended === '1'")
        assert browser.find_element("css selector", ".verdict").get_attribute("data-verdict") in {
            "pass",
            "fail",
        }
        assert live.finish() in {ExitStatus.OK, ExitStatus.KERNEL_DISAGREED}
        assert nothing_listens(live.port)
        assert steps_shown(browser) == total  # the page keeps the run after the server went
        assert console_errors(browser) == []
    finally:
        live.stop()


def test_without_step_the_page_follows_the_run_to_its_end(browser: Any) -> None:
    live = Live("half-close")
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{live.port}/", timeout=10)
        refused.value.close()
        assert refused.value.code == 404  # no token, no page
        wrong = re.sub(r"/[\w-]+/$", "/not-the-token/", live.url)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=10)
        refused.value.close()
        assert refused.value.code == 404
        browser.get(live.url)
        wait_until(browser, "document.body.dataset.ended === '1'")
        assert live.finish() == ExitStatus.OK
        assert steps_shown(browser) == len(find_lab("half-close").steps_for("loopback"))
        assert (
            browser.find_element("css selector", ".verdict").get_attribute("data-verdict")
            == "pass"
        )
        assert nothing_listens(live.port)
    finally:
        live.stop()


def test_sigterm_while_the_page_waits_closes_the_server(browser: Any) -> None:
    live = Live("close", "--step")
    try:
        browser.get(live.url)
        wait_until(browser, "!document.getElementById('run-next').hidden")
        live.proc.send_signal(signal.SIGTERM)
        assert live.finish() == ExitStatus.INTERRUPTED
        assert nothing_listens(live.port)
    finally:
        live.stop()


def test_browser_is_refused_where_the_run_would_move_to_a_private_network() -> None:
    works, detail = user_namespaces_work()
    needs.require(works, f"unprivileged user namespaces: {detail}")
    env = dict(os.environ, HANDSHAKE_LAB_USERNS="1")  # as root: the path a normal user takes
    proc = subprocess.run(
        [*CLI, "run", "lost-last-ack", "--browser"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == ExitStatus.USAGE
    assert "--html" in one_error_line(proc)
