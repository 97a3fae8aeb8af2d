"""``watch``: follow the kernel's TCP states of any program's sockets, refresh after refresh.

Layers: ``tracker`` is pure (snapshots in, transitions out); ``delta`` decodes only what
changed; ``owners`` finds socket owners (``ProcOwners``); ``watcher`` is the impure part that
reads the socket table (``Watcher.refresh``) and paces the refreshes (``run_watch``).
Rendering lives in ``handshake_lab.render.watch``.

Cost per refresh, designed for 10 refreshes per second at 50 000 sockets on one core:

- The table is read over netlink sock_diag with the port filter run in the kernel
  (``NetlinkObserver``): no process to spawn, no text to parse, and sockets on other ports
  never reach Python. If netlink is unusable (a sandbox without NETLINK_SOCK_DIAG) the
  watcher falls back to ``ss`` with the same kernel filter, once, and says so (``note``).
  The state filter is NOT pushed to the kernel: a socket that leaves the watched state must
  still be seen, or ``ESTABLISHED -> CLOSE_WAIT`` would look like a disappearance.
- Owners are not in the kernel's table. The owner of a socket is the process holding a file
  descriptor whose link reads ``socket:[INODE]`` (netlink reports the inode), so finding it
  means reading every ``/proc/PID/fd`` link (``ss -p`` does the same). That costs 3-9 us
  per descriptor (measured here: 150 ms for 17 500 descriptors), as much as a whole netlink
  read at 50 000 sockets, so ``ProcOwners`` rescans only when a socket with an unknown
  inode shows up, and never more often than its own cost allows: after a scan that took
  ``c`` seconds the next one waits ``c / budget`` (budget 5 %: a 150 ms scan runs at most
  every 3 s), and an inode no scan could place (another user's process) is retried every
  2 s at most. ``--pid P`` scans only ``/proc/P/fd`` (P itself: not its children).
  TIME_WAIT and request sockets have no owner (inode 0) and cost nothing. With the ``ss``
  fallback (no inodes) owners come from ``psutil.net_connections`` by 4-tuple on the same
  budget (psutil takes ~0.7 s at 50 000).
- The table is not decoded whole at each refresh (``watch.delta``): the dump is read as one
  byte key per socket (state, 4-tuple, inode...), compared with the previous dump in C
  (dict lookups), and only the sockets that appeared, changed or still lack an owner are
  decoded and given to the tracker; the table's rows are decoded when they are shown. At
  50 000 sockets a whole-table refresh went from ~250 ms (every socket decoded, then one
  tracker pass over all of them) to ~55-60 ms, most of it the kernel filling the dump and
  the one pass that keys it (``bench/watchbench.py`` prints both). The ``ss`` fallback and
  observers passed in by tests take the plain path: the tracker's one dict pass over every
  record with plain-tuple keys.

An owner found late (a socket newer than the last scan) shows in the table at the next scan;
its ``appeared`` event, already emitted, says ``pid: null``. A socket whose owner closes it
before any scan saw it (a connection shorter than a refresh) is never attributed: after
``close()`` its inode is 0. ``--pid`` therefore misses such connections entirely.
"""

from handshake_lab.watch.owners import OWNER_BUDGET, ProcOwners, PsutilOwners, process_exists
from handshake_lab.watch.tracker import Tracked, Tracker, Transition, WatchFilter
from handshake_lab.watch.watcher import Refresh, Sink, Watcher, run_watch

__all__ = [
    "OWNER_BUDGET",
    "ProcOwners",
    "PsutilOwners",
    "Refresh",
    "Sink",
    "Tracked",
    "Tracker",
    "Transition",
    "WatchFilter",
    "Watcher",
    "process_exists",
    "run_watch",
]
