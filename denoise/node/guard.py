"""Guards for the connections the node accepts: stalled, slow, oversized and
crowding peers are dropped instead of holding a thread, a socket and an
association slot (or unbounded memory) for ever.

pynetdicom reads a PDU as ``recv(6)`` (type and length) then ``recv(length)``
on a blocking socket: a peer that announces a length and then sends nothing
(or a byte a minute) blocks that read for ever, and a peer that announces
4 GiB has all of it buffered before anything checks it. And an association
thread blocked that way also blocks ``Association.abort``, so ``AE.shutdown``
(the end of the node's drain) never returns. The guard, installed on each
accepted connection by an ``EVT_CONN_OPEN`` handler (pynetdicom fires it in
the request thread before the association's reader starts), replaces that
connection's ``AssociationSocket.recv`` with a reader that

* refuses a PDU longer than its limit from its 6-byte header, before reading
  the body: a P-DATA-TF may be as long as the maximum PDU length this node
  announces (``AE.maximum_pdu_size``) plus :data:`PDATA_MARGIN`, any other PDU
  ``max_control_pdu`` bytes;
* gives each PDU ``pdu_timeout_s`` from its first byte to its last, and the
  first one (the A-ASSOCIATE-RQ) no later than the ACSE timeout after the
  connection opened; a connection that sends nothing at all is closed by
  pynetdicom's ARTIM timer after that same ACSE timeout;
* stops waiting once this node aborts the association (``EVT_ACSE_SENT`` with
  an A-ABORT, as ``AE.shutdown`` does), so a drain ends on time.

A refused PDU or a missed deadline reads as the connection closing (pynetdicom
then closes the socket). Beyond ``max_per_peer`` connections open from one
address, a new one is closed at once, so one host cannot take every
association slot. Sends get ``pdu_timeout_s`` too (``SO_SNDTIMEO``), so a peer
that stops reading cannot block a reply for ever.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
import weakref
from dataclasses import dataclass

from pynetdicom import evt
from pynetdicom.pdu_primitives import A_ABORT

log = logging.getLogger("ct_denoise.serve")

P_DATA_TF = 0x04
_PDU_TYPES = range(0x01, 0x08)
PDATA_MARGIN = 1024  # for peers that count the PDV item header in the announced maximum
UNBOUNDED_PDATA = 4 << 20  # when the node announces no maximum (maximum_pdu_size 0)
_POLL_S = 0.1  # how often a blocked read looks at its deadline and at an abort
_CHUNK = 1 << 16
_WARN_EVERY_S = 10.0  # guard warnings: at most one per peer address this often


@dataclass(frozen=True)
class GuardLimits:
    max_per_peer: int = 4
    pdu_timeout_s: float = 60.0
    max_control_pdu: int = 64 * 1024

    def __post_init__(self):
        if self.max_per_peer < 1 or not self.pdu_timeout_s > 0 or self.max_control_pdu < 1024:
            raise ValueError(f"invalid connection limits: {self}")


class ConnectionGuard:
    """The guard of one AE's accepted connections (see the module docstring)."""

    def __init__(self, limits: GuardLimits = GuardLimits()):
        self.limits = limits
        self._lock = threading.Lock()
        self._open: dict[str, list] = {}  # peer address -> [(association, opened at)]
        self._readers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # association -> _Reader
        self._warned: dict[str, tuple[float, int]] = {}

    def on_conn_open(self, event) -> None:
        assoc = event.assoc
        ams = assoc.dul.socket
        sock = getattr(ams, "socket", None)
        if sock is None:
            return
        address = assoc.requestor.address
        now = time.monotonic()
        with self._lock:
            mine = [a for a in self._open.get(address, ()) if _running(a, now)]
            crowded = len(mine) >= self.limits.max_per_peer
            if not crowded:
                mine.append((assoc, now))
            self._open = {p: v for p, v in self._open.items()
                          if p != address and any(_running(a, now) for a in v)}
            if mine:
                self._open[address] = mine
        try:
            secs = int(self.limits.pdu_timeout_s)
            usecs = int((self.limits.pdu_timeout_s - secs) * 1e6)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", secs, usecs))
        except (OSError, AttributeError, struct.error):
            pass  # a platform without it: sends stay blocking
        reader = _Reader(self, assoc, sock)
        self._readers[assoc] = reader
        # Per instance, on this connection's AssociationSocket only: pynetdicom
        # has no setting for a read deadline or a PDU size limit on accepted
        # sockets, and its DUL reads through exactly `self.socket.recv(n)`.
        ams.recv = reader.recv
        if crowded:
            why = f"{len(mine)} connections already open from this address (limit {self.limits.max_per_peer})"
            self.warn(reader.peer, why)
            reader.stop(why, quiet=True)
            # The acceptor thread waits ACSE-timeout seconds for an A-ASSOCIATE-RQ
            # and pynetdicom's ARTIM timer closes a silent connection after as
            # long: with 0 both happen at once, so this connection holds no slot.
            assoc.acse_timeout = 0

    def on_acse_sent(self, event) -> None:
        """This node aborted the association (``AE.shutdown`` at the end of a
        drain, a network timeout): a read blocked on the peer stops now."""
        if isinstance(event.primitive, A_ABORT):
            reader = self._readers.get(event.assoc)
            if reader is not None:
                reader.stop("this node aborted the association", quiet=True)
                if not event.assoc.is_established:
                    # No association yet: there is no A-ABORT to send (pynetdicom's
                    # DUL would fail on it in Sta2: stop it before it tries) and
                    # Association.abort does not close the socket (see
                    # _Reader.hang_up), so a silent peer would stay connected
                    # after AE.shutdown. Hang up now.
                    event.assoc.dul.kill_dul()
                    reader.hang_up()

    def warn(self, peer: tuple[str, int], message: str) -> None:
        """A warning about ``peer``; at most one per address every few seconds
        (a flood of bad connections does not flood the log)."""
        now = time.monotonic()
        with self._lock:
            last, held = self._warned.get(peer[0], (-_WARN_EVERY_S, 0))
            if now - last < _WARN_EVERY_S:
                self._warned[peer[0]] = (last, held + 1)
                return
            self._warned[peer[0]] = (now, 0)
            if len(self._warned) > 1024:  # forget old peers
                self._warned = {p: v for p, v in self._warned.items() if now - v[0] < _WARN_EVERY_S}
        more = f" ({held} more from this address not logged)" if held else ""
        log.warning("connection from %s:%s dropped: %s%s", *peer, message, more)


_GUARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # AE -> its ConnectionGuard


def install(ae, limits: GuardLimits = GuardLimits()) -> ConnectionGuard:
    """Guard the connections ``ae`` accepts, once its server is started with :data:`HANDLERS`."""
    guard = _GUARDS[ae] = ConnectionGuard(limits)
    return guard


def on_conn_open(event) -> None:
    """``EVT_CONN_OPEN`` handler: guard the connection if its AE has a guard."""
    guard = _GUARDS.get(event.assoc.ae)
    if guard is not None:
        guard.on_conn_open(event)


def on_acse_sent(event) -> None:
    """``EVT_ACSE_SENT`` handler: a local A-ABORT ends a guarded connection's blocked read."""
    guard = _GUARDS.get(event.assoc.ae)
    if guard is not None:
        guard.on_acse_sent(event)


HANDLERS = [(evt.EVT_CONN_OPEN, on_conn_open), (evt.EVT_ACSE_SENT, on_acse_sent)]


def _running(entry: tuple, now: float) -> bool:
    """Whether an (association, opened at) entry still holds its slot; one
    whose thread has not started yet counts for a few seconds."""
    assoc, opened = entry
    return assoc.is_alive() or assoc.dul.is_alive() or (assoc.ident is None and now - opened < 10)


class _Reader:
    """``AssociationSocket.recv`` for one connection, with PDU limits and deadlines."""

    def __init__(self, guard: ConnectionGuard, assoc, sock: socket.socket):
        self.guard, self.assoc, self.sock = guard, assoc, sock
        self.peer = (assoc.requestor.address, assoc.requestor.port)
        self.pdu_timeout_s = guard.limits.pdu_timeout_s
        self.max_pdata = (assoc.acceptor.maximum_length or UNBOUNDED_PDATA) + PDATA_MARGIN
        self.max_control = guard.limits.max_control_pdu
        first = assoc.acse_timeout
        self.first_deadline = None if first is None else time.monotonic() + first
        self.body: int | None = None  # length of the PDU body the next read is for
        self.deadline = 0.0
        self.stopped: str | None = None
        self.quiet = False
        self.flags = getattr(socket, "MSG_DONTWAIT", 0) if type(sock) is socket.socket else 0

    def stop(self, reason: str, quiet: bool = False) -> None:
        if self.stopped is None:
            self.stopped, self.quiet = reason, quiet

    def recv(self, n: int) -> bytearray:
        if self.body is not None and n == self.body:  # the body of the PDU whose header was just read
            self.body = None
            return self._read(n, self.deadline)
        self.body = None  # a new PDU: its header
        self.deadline = time.monotonic() + self.pdu_timeout_s
        if self.first_deadline is not None:
            self.deadline = min(self.deadline, self.first_deadline)
        if n > self.max_control:
            return self._drop(f"a read of {n} bytes")
        data = self._read(n, self.deadline)
        if n == 6 and len(data) == 6:
            pdu_type, _, length = struct.unpack(">BBL", data)
            if pdu_type in _PDU_TYPES:  # pynetdicom refuses other types itself
                limit = self.max_pdata if pdu_type == P_DATA_TF else self.max_control
                if length > limit:
                    return self._drop(f"a PDU of type 0x{pdu_type:02X} announces {length} bytes (limit {limit})")
                self.body = length
                self.first_deadline = None
        return data

    def _read(self, n: int, deadline: float) -> bytearray:
        """``n`` bytes, or fewer if the peer closes (pynetdicom then sees a closed connection)."""
        buf = bytearray(n)
        got = 0
        with memoryview(buf) as view:
            while got < n and self.stopped is None:
                if self.flags:  # plain socket: read what is there without blocking
                    try:
                        k = self.sock.recv_into(view[got:], min(n - got, _CHUNK), self.flags)
                    except BlockingIOError:
                        self._wait(deadline)
                        continue
                elif self._wait(deadline):
                    k = self.sock.recv_into(view[got:], min(n - got, _CHUNK))
                else:
                    continue
                if k == 0:
                    break
                got += k
                if got < n and time.monotonic() >= deadline:
                    self._wait(deadline)
        if self.stopped is not None:
            return self._drop(self.stopped)
        return buf if got == n else buf[:got]

    def _wait(self, deadline: float) -> bool:
        """Whether the socket became readable within one poll interval; once
        ``deadline`` has passed, stops the reader instead."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.stop("a PDU did not arrive in time (the first one within the ACSE timeout of the "
                      f"connection, any other within {self.pdu_timeout_s:g} s of its first byte)")
            return False
        pending = getattr(self.sock, "pending", None)  # TLS: decrypted bytes select() cannot see
        if pending is not None and pending():
            return True
        return bool(select.select([self.sock], [], [], min(remaining, _POLL_S))[0])

    def _drop(self, reason: str) -> bytearray:
        """Read as a closed connection (pynetdicom then ends the association:
        Evt17), and hang up."""
        self.stop(reason)
        self.body = None
        if not self.quiet:
            self.quiet = True
            self.guard.warn(self.peer, reason)
        self.hang_up()
        return bytearray()

    def hang_up(self) -> None:
        """Close the connection for the peer now. pynetdicom does not always do
        it: ``Association.abort`` means to but cannot (pynetdicom 3.0.4 names
        ``AssociationSocket`` there only for type checking and swallows the
        NameError). And while no association exists yet, its acceptor thread
        would wait for the A-ASSOCIATE-RQ until the ACSE timeout, holding a
        slot: wake it as that timeout does (``None`` on its queue); it then
        closes the socket."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.assoc.requestor.primitive is None and not self.assoc.is_established:
            self.assoc.dul.to_user_queue.put(None)

_REJECTIONS = {  # (source, diagnostic) of an A-ASSOCIATE-RJ (PS3.8 9.3.4) -> the reason in words
    (1, 1): "no reason given", (1, 2): "application context name not supported",
    (1, 3): "calling AE title not allowed", (1, 7): "called AE title is not this node's",
    (2, 1): "refused by the ACSE (no reason given)", (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion", (3, 2): "association limit reached",
}


def why_rejected(assoc) -> str:
    """The reason of the A-ASSOCIATE-RJ pynetdicom just sent for ``assoc``
    (``EVT_REJECTED`` fires after it is set as the acceptor's primitive)."""
    rj = assoc.acceptor.primitive
    source, diagnostic = getattr(rj, "result_source", None), getattr(rj, "diagnostic", None)
    why = _REJECTIONS.get((source, diagnostic), f"source {source}, diagnostic {diagnostic}")
    if (source, diagnostic) == (3, 2):
        why += f" (limit {assoc.ae.maximum_associations})"
    return why
