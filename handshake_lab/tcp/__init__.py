"""Pure TCP model: states, the RFC 9293 state machine as one table. No I/O, no clock."""

from handshake_lab.tcp.states import TcpState

__all__ = ["TcpState"]
