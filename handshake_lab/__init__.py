"""handshake-lab: watch a real kernel's TCP states while a lab drives real sockets."""

__version__ = "0.1.0"
