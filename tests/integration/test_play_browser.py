"""``play --browser``: a real headless Chromium clicks a connection through its handshake,
half-close and close on loopback sockets, and the page shows what the kernel showed.

The command runs as a user starts it (stdin kept open: its EOF would end the session); the
test reads the URL it prints, clicks the panel's buttons one at a time and, after each click,
waits (bounded) for the new step and for the panel to be offered again. What the page showed is
compared with the session's ``--save`` record afterwards, state by state.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake_lab.errors import ExitStatus
from handshake_lab.record.codec import read_run
from handshake_lab.record.events import StepReport
from handshake_lab.render.live import LiveView
from handshake_lab.topo.caps import user_namespaces_work
from tests import needs
from tests.browser import chromium, console_errors
from tests.integration.test_cli import CLI, one_error_line
from tests.integration.test_live_view import Live, nothing_listens

WAIT_S = 30.0


class PlayLive(Live):
    """``handshake-lab play --browser`` as a process: its URL, port and open stdin."""

    def __init__(self, *args: str) -> None:
        super().__init__(*args, command="play", keep_stdin=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def post(url: str, body: str = "") -> int:
    request = urllib.request.Request(url, data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        refused.close()
        return refused.code


def page_states(driver: Any) -> dict[int, dict[str, str]]:
    """Each step card's kernel state per side, as the page shows it."""
    found: dict[str, dict[str, str]] = driver.execute_script(
        "var out={};document.querySelectorAll('article.step').forEach(function(a){"
        "var rows={};a.querySelectorAll('tr[data-side]').forEach(function(r){"
        "var k=r.querySelector('.kstate');rows[r.dataset.side]=k.firstChild.textContent;});"
        "out[a.id.replace('step-','')]=rows;});return out;"
    )
    return {int(n): rows for n, rows in found.items()}


def test_clicks_drive_a_half_close_and_the_page_shows_every_kernel_state(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415 - dev extra

    saved = tmp_path / "session.jsonl"
    live = PlayLive("--save", str(saved))
    wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.05)

    def steps() -> int:
        script = "return document.querySelectorAll('article.step').length"
        return int(browser.execute_script(script))

    def ready(n: int) -> None:
        """Step ``n`` is on the page and the panel is offered again."""
        wait.until(
            lambda d: (
                steps() >= n
                and d.execute_script(
                    "return !document.body.dataset.busy && "
                    "!!document.querySelector('#play-controls button[data-cmd]')"
                )
            )
        )

    def click(button: str, n: int) -> None:
        element = browser.find_element("id", button)
        assert element.is_enabled(), (button, element.get_attribute("title"))
        element.click()
        ready(n)

    try:
        browser.get(live.url)
        ready(1)  # play's own opening listen
        # Before connect: what makes no sense is disabled, and says why on hover.
        send = browser.find_element("id", "cmd-client-send")
        assert not send.is_enabled()
        assert send.get_attribute("title") == "client has no socket yet: connect first"
        drop = browser.find_element("id", "cmd-client-drop-fin")
        assert not drop.is_enabled()
        assert "--topology netns" in drop.get_attribute("title")
        assert not browser.find_element("id", "cmd-listener-listen").is_enabled()

        click("cmd-client-connect", 2)
        connect = browser.find_element("id", "cmd-client-connect")
        assert not connect.is_enabled()
        assert "one connection a session" in connect.get_attribute("title")
        assert browser.find_element("id", "state-server").text == "ESTABLISHED"

        # A bad command (send with no text) is refused on the page; the session goes on.
        browser.find_element("id", "text-client").clear()
        browser.find_element("id", "cmd-client-send").click()
        wait.until(
            lambda d: "send needs an end and a text" in d.find_element("id", "play-log").text
        )
        ready(2)
        assert steps() == 2

        click("cmd-client-shutdown", 3)
        assert not browser.find_element("id", "cmd-client-send").is_enabled()
        assert "FIN_WAIT2" in browser.find_element("id", "cmd-client-send").get_attribute("title")
        click("cmd-server-recv", 4)  # EOF
        text = browser.find_element("id", "text-server")
        text.clear()
        text.send_keys("data after FIN")
        click("cmd-server-send", 5)
        click("cmd-client-recv", 6)
        click("cmd-server-close", 7)
        click("cmd-client-close", 8)
        assert not browser.find_element("id", "cmd-client-close").is_enabled()

        # The token guards the commands: without it 404; with it the command runs as a step.
        base = live.url.rsplit("/", 2)[0]
        assert post(f"{base}/command", "wait 0.2") == 404
        assert post(f"{base}/not-the-token/command", "wait 0.2") == 404
        assert post(f"{live.url}command", "wait 0.2") == 202
        ready(9)
        with urllib.request.urlopen(f"{live.url}lab.toml", timeout=10) as response:
            lab = response.read().decode()
        assert lab.count("[[step]]") == 9
        assert "# play> send server data after FIN" in lab

        shown = page_states(browser)
        assert len(shown) == 9
        browser.set_window_size(1400, 1600)
        browser.save_screenshot(str(tmp_path / "play.png"))
        problems = console_errors(browser)

        browser.find_element("id", "cmd-session-quit").click()
        wait.until(lambda d: d.execute_script("return document.body.dataset.ended === '1'"))
        assert live.finish() == ExitStatus.OK
        assert nothing_listens(live.port)
        assert problems == []
    finally:
        live.stop()

    record = read_run(saved)
    reports = [e for e in record.steps if isinstance(e, StepReport)]
    assert [r.action for r in reports] == [
        "listen",
        "connect",
        "send_eof",
        "recv",
        "send",
        "recv",
        "close",
        "close",
        "observe",
    ]
    # The page showed every state the kernel showed, step by step.
    for report in reports:
        assert shown[report.index] == {s: o.state for s, o in report.observed.items()}
    assert shown[2] == {"listener": "LISTEN", "client": "ESTABLISHED", "server": "ESTABLISHED"}
    assert shown[3]["client"] == "FIN_WAIT2"
    assert shown[3]["server"] == "CLOSE_WAIT"
    assert (reports[3].outcome, reports[5].data) == ("EOF", "data after FIN")
    assert shown[7]["client"] == "TIME_WAIT"
    # The session's own listener is gone too.
    listener = reports[0].observed["listener"].local
    assert listener is not None
    assert nothing_listens(int(listener.rsplit(":", 1)[1]))


def test_sigterm_ends_a_browser_session_and_closes_its_server() -> None:
    live = PlayLive()
    try:
        assert post(f"{live.url}command", "connect") == 202
        live.proc.send_signal(signal.SIGTERM)
        assert live.finish() == ExitStatus.INTERRUPTED
        assert nothing_listens(live.port)
    finally:
        live.stop()


def test_the_command_route_takes_one_line_with_the_token_and_only_for_play() -> None:
    view = LiveView("en", step_mode=True, play=True)
    plain = LiveView("en")
    try:
        base = view.url.rsplit("/", 2)[0]
        assert post(f"{base}/command", "connect") == 404
        assert post(f"{base}/x{view.token}/command", "connect") == 404
        assert post(f"{view.url}command", "connect\nquit") == 400
        assert post(f"{view.url}command", "send client " + "x" * 5000) == 400
        assert post(f"{plain.url}command", "connect") == 404  # run --browser has no commands
        assert post(f"{view.url}command", "send client héllo") == 202
        assert post(f"{view.url}command", "quit") == 202

        async def two() -> list[str]:
            return [await view.commands.get(), await view.commands.get()]

        assert asyncio.run(asyncio.wait_for(two(), 10)) == ["send client héllo", "quit"]

        def fetch(url: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    return int(response.status), response.read().decode()
            except urllib.error.HTTPError as refused:
                refused.close()
                return refused.code, ""

        assert fetch(f"{view.url}lab.toml")[0] == 409  # nothing played yet
        view.lab_file = lambda: "schema = 1\n"
        assert fetch(f"{view.url}lab.toml") == (200, "schema = 1\n")
        assert fetch(f"{base}/lab.toml")[0] == 404
        assert fetch(f"{plain.url}lab.toml")[0] == 404
    finally:
        view.close()
        plain.close()
    assert nothing_listens(view.port)
    assert not view.command("quit")  # after the end, refused


def test_browser_is_refused_where_the_session_would_move_to_a_private_network() -> None:
    works, detail = user_namespaces_work()
    needs.require(works, f"unprivileged user namespaces: {detail}")
    env = dict(os.environ, HANDSHAKE_LAB_USERNS="1")  # as root: the path a normal user takes
    proc = subprocess.run(
        [*CLI, "play", "--browser", "--topology", "netns"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == ExitStatus.USAGE
    assert "--topology loopback" in one_error_line(proc)
