"""Socket settings shared by the node's receiving and sending sides."""

from __future__ import annotations

import socket


def no_delay(event) -> None:
    """``EVT_CONN_OPEN`` handler: send each PDU at once (TCP_NODELAY). pynetdicom
    writes a PDU in pieces, and Nagle's algorithm with delayed ACKs then adds
    about 40 ms to every message (measured: 50 C-STOREs to pynetdicom's
    storescp in 2.55 s without it, 0.45 s with it)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
