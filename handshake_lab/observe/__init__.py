"""Reading the kernel's socket table: one interface, several backends."""

from handshake_lab.observe.base import Address, Observer, SocketRecord, Timer

__all__ = ["Address", "Observer", "SocketRecord", "Timer"]
