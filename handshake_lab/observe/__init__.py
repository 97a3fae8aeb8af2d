"""Reading the kernel's socket table: one interface, several backends."""

from handshake_lab.observe.aliases import UnknownStateError
from handshake_lab.observe.base import Address, Observer, SocketRecord, Timer, port_matches
from handshake_lab.observe.fake import FakeObserver
from handshake_lab.observe.psutil_observer import PsutilObserver
from handshake_lab.observe.reconcile import Reconciled, SourceView, reconcile, reconcile_all
from handshake_lab.observe.ss import SsObserver, parse_ss

__all__ = [
    "Address",
    "FakeObserver",
    "Observer",
    "PsutilObserver",
    "Reconciled",
    "SocketRecord",
    "SourceView",
    "SsObserver",
    "Timer",
    "UnknownStateError",
    "parse_ss",
    "port_matches",
    "reconcile",
    "reconcile_all",
]
