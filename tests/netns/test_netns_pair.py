"""A real pair of namespaces: TCP across the veth, per-namespace views, clean teardown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.topo.netns import in_netns
from handshake_lab.topo.pair import NetnsPair, get_sysctl
from handshake_lab.topo.registry import list_netns, netns_exists, read_registries
from tests.netns.helpers import listener, poll_until, ss_states

pytestmark = pytest.mark.root

PORT = 5000


def _connected_pair(pair: NetnsPair) -> tuple[socket.socket, socket.socket, socket.socket]:
    server = listener(pair.server_ns, pair.server_addr, PORT)
    with pair.in_client():
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect((pair.server_addr, PORT))
    server.settimeout(5)
    accepted, _ = server.accept()
    return server, client, accepted


def test_tcp_connects_across_the_veth_between_the_namespaces(pair: NetnsPair) -> None:
    server, client, accepted = _connected_pair(pair)
    with server, client, accepted:
        client.sendall(b"ping")
        assert accepted.recv(4) == b"ping"
        assert accepted.getpeername()[0] == pair.client_addr
        assert client.getsockname()[0] == pair.client_addr


def test_ss_in_each_namespace_sees_only_its_own_sockets(pair: NetnsPair) -> None:
    server, client, accepted = _connected_pair(pair)
    with server, client, accepted:
        on_server = {(r.raw_state, r.local.host) for r in ss_states(pair.server_ns, PORT)}
        on_client = {(r.raw_state, r.local.host) for r in ss_states(pair.client_ns, PORT)}
    assert on_server == {("LISTEN", pair.server_addr), ("ESTAB", pair.server_addr)}
    assert on_client == {("ESTAB", pair.client_addr)}


def test_psutil_in_the_main_thread_inside_the_netns_sees_its_sockets(pair: NetnsPair) -> None:
    server, client, accepted = _connected_pair(pair)
    with server, client, accepted:
        with in_netns(pair.server_ns):
            inside = PsutilObserver().snapshot([PORT])
        outside = PsutilObserver().snapshot([PORT])
    assert {(r.raw_state, r.local.host) for r in inside} == {
        ("LISTEN", pair.server_addr),
        ("ESTABLISHED", pair.server_addr),
    }
    assert not [r for r in outside if r.local.host.startswith("198.18.")]


def test_psutil_in_a_worker_thread_follows_the_main_threads_netns(pair: NetnsPair) -> None:
    """psutil reads /proc/net/tcp, which resolves through /proc/self (the thread-group leader):
    a worker thread that entered the netns still sees the main thread's namespace. Observers
    must enter the namespace from the main thread (or use ss with ``netns=``)."""
    server, client, accepted = _connected_pair(pair)
    seen: list[int] = []

    def worker() -> None:
        with in_netns(pair.server_ns):
            seen.append(len(PsutilObserver().snapshot([PORT])))

    with server, client, accepted:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(timeout=10)
    assert seen == [0]


def test_sysctls_are_set_inside_the_namespaces_only(tmp_path: Path) -> None:
    key = "net.ipv4.ip_local_port_range"
    with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
        host_before = handle.read()
    with NetnsPair(
        registry_dir=tmp_path,
        sysctls={key: (40000, 40009)},
        server_sysctls={"net.ipv4.tcp_synack_retries": 2},
    ) as pair:
        assert get_sysctl(pair.client_ns, key) == "40000 40009"
        assert get_sysctl(pair.server_ns, "net.ipv4.tcp_synack_retries") == "2"
    with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
        assert handle.read() == host_before


def test_teardown_removes_namespaces_and_registry_file(tmp_path: Path) -> None:
    pair = NetnsPair(registry_dir=tmp_path)
    with pair:
        assert all(netns_exists(ns) for ns in pair.namespaces)
        assert [e.run_id for e in read_registries(tmp_path)] == [pair.run_id]
    assert not [ns for ns in list_netns() if pair.run_id in ns]
    assert list(tmp_path.glob("*.json")) == []
    pair.close()  # idempotent


def test_teardown_runs_when_the_body_raises(tmp_path: Path) -> None:
    pair = NetnsPair(registry_dir=tmp_path)
    with pytest.raises(RuntimeError, match="boom"), pair:
        raise RuntimeError("boom")
    assert not any(netns_exists(ns) for ns in pair.namespaces)


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "uvloop":
        import uvloop  # noqa: PLC0415

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def test_cancelling_the_task_inside_async_with_tears_down(loop_name: str, tmp_path: Path) -> None:
    made: list[NetnsPair] = []

    async def lab() -> None:
        async with NetnsPair(registry_dir=tmp_path) as pair:
            made.append(pair)
            await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(lab())
        await asyncio.to_thread(
            poll_until, lambda: made and netns_exists(made[0].server_ns), what="pair created"
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with asyncio.Runner(loop_factory=_loop_factory(loop_name)) as runner:
        runner.run(main())
    assert not any(netns_exists(ns) for ns in made[0].namespaces)


_CHILD = """
import asyncio, sys
from pathlib import Path
from handshake_lab.topo.pair import NetnsPair

async def main():
    async with NetnsPair(registry_dir=Path(sys.argv[1])) as pair:
        print(pair.server_ns, pair.client_ns, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _default_sigint() -> None:
    # A backgrounded `make test` ("cmd &") starts children with SIGINT ignored, and Python then
    # keeps it ignored: the test wants what a user at a terminal has, the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_a_running_lab_tears_the_pair_down(signum: int, tmp_path: Path) -> None:
    """SIGINT: asyncio.run cancels the main task. SIGTERM: the child installs the handler the
    CLI will install (cancel the main task), proving teardown under cancellation."""
    code = _CHILD
    if signum == signal.SIGTERM:
        code = code.replace(
            "    async with",
            "    asyncio.get_running_loop().add_signal_handler(\n"
            "        15, asyncio.current_task().cancel)\n    async with",
        )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads in the child before exec
    ) as child:
        try:
            assert child.stdout is not None
            names = child.stdout.readline().split()
            assert len(names) == 2
            assert all(netns_exists(ns) for ns in names)
            os.kill(child.pid, signum)
            _, stderr = child.communicate(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode != 0, stderr
    assert not any(netns_exists(ns) for ns in names)
    assert list(tmp_path.glob("*.json")) == []
