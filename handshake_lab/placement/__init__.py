"""Where the two ends of a lab live: the ``Topology`` enum, one module per placement, and
``place.place()``, the one function the engine calls to build (and afterwards remove) them.

This ``__init__`` imports only the enum, so the CLI can parse ``--topology`` without loading
the placements.

- ``topology``: the enum and what each value implies (step set, namespaces).
- ``placed``: the typed result (``Placed``, ``NetnsDetails``, ``CaptureTarget``).
- ``loopback``, ``netns`` (also ``netns-agent``), ``agent`` (the namespace agent child),
  ``remote`` (``--peer``).
"""

from handshake_lab.placement.topology import CLI_TOPOLOGIES, Topology

__all__ = ["CLI_TOPOLOGIES", "Topology"]
