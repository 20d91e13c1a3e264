"""Hostile peers against the node's receiving side, on loopback only.

Raw sockets play the broken or malicious peers (stalled and slow PDUs, huge
announced lengths, many connections from one host); dcmtk's echoscu is the
legitimate sender that must still get through. Most tests run the receiving
side in-process (:func:`denoise.node.scp.build_ae` with short timeouts); the
memory and SIGTERM tests run ``ct-denoise serve`` as a subprocess with its
defaults. Sources other than 127.0.0.1 are other loopback addresses
(127.0.0.0/8), so "another host" needs no network.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from denoise.node.scp import StorageHandlers, build_ae
from denoise.node.spool import Spool
from pipelines.serve import Node, ServeOptions
from tests import peers

pytestmark = pytest.mark.skipif(not peers.ECHOSCU, reason="needs dcmtk's echoscu: apt-get install dcmtk")

AET = "CTDENOISE"
A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04


@pytest.fixture(autouse=True)
def _python(monkeypatch):
    monkeypatch.setenv("PYTHON", sys.executable)


def header(pdu_type: int, length: int) -> bytes:
    """The 6 bytes that start a PDU: type, reserved, length of the rest."""
    return struct.pack(">BBL", pdu_type, 0, length)


@contextmanager
def scp(tmp_path: Path, **options):
    """The node's receiving side in-process (``build_ae`` with ``options``); yields its port."""
    spool = Spool(tmp_path / "node")
    spool.open()
    ae = build_ae(AET, **options)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=StorageHandlers(spool).handlers())
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        ae.shutdown()


class Peers:
    """Raw TCP peers; every socket is closed on exit (before the node stops,
    so a node that would wait on them forever still stops)."""

    def __init__(self):
        self.socks: list[socket.socket] = []
        self._trickle: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()
        for s in self.socks:
            s.close()

    def connect(self, port: int, source: str = "127.0.0.1", send: bytes = b"") -> socket.socket:
        s = socket.socket()
        self.socks.append(s)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        if send:
            s.sendall(send)
        return s

    def trickle(self, s: socket.socket) -> None:
        """Send one byte every 0.1 s on ``s`` (a slow-loris peer) until it is closed."""
        self._trickle.append(s)
        if self._thread is None:
            self._thread = threading.Thread(target=self._drip, daemon=True)
            self._thread.start()

    def _drip(self):
        while not self._stop.wait(0.1):
            for s in list(self._trickle):
                try:
                    s.send(b"\0")
                except OSError:
                    self._trickle.remove(s)


def closed_by_node(socks: list[socket.socket], timeout: float, until: int | None = None) -> dict[socket.socket, float]:
    """Which of ``socks`` the node closed within ``timeout`` s (or until ``until``
    of them are), and after how many seconds (whatever the node sent before
    closing, an A-ABORT say, is read and dropped)."""
    t0 = time.monotonic()
    closed: dict[socket.socket, float] = {}
    while len(closed) < (len(socks) if until is None else until):
        remaining = t0 + timeout - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([s for s in socks if s not in closed], [], [], min(remaining, 0.05))
        for s in ready:
            try:
                data = s.recv(65536)
            except OSError:  # reset
                data = b""
            if not data:
                closed[s] = time.monotonic() - t0
    return closed


def still_open(s: socket.socket) -> bool:
    return not closed_by_node([s], 0)


def associate(port: int, source: str = "127.0.0.1") -> tuple:
    """An established association (pynetdicom as the SCU); its raw socket for hostile writes."""
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=AET, bind_address=(source, 0))
    assert assoc.is_established
    return assoc, assoc.dul.socket.socket


def abort(assoc) -> None:
    if assoc.is_established:
        assoc.abort()


def echo_ok(port: int) -> bool:
    return peers.echo(port).returncode == 0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# ---------------------------------------------------------------- defect 4
def test_one_host_cannot_take_every_association_slot(tmp_path, caplog):
    """20 stalled connections from one host: only max_per_peer of them stay
    open (the rest are closed at once), so a sender elsewhere is served; once
    those time out, the host is served again."""
    caplog.set_level(logging.INFO, logger="ct_denoise.serve")
    with scp(tmp_path, max_per_peer=4, idle_timeout_s=4) as port, Peers() as p:
        stalled = [p.connect(port, "127.0.0.2", header(A_ASSOCIATE_RQ, 1000)) for _ in range(20)]
        closed = closed_by_node(stalled, 2.0, until=16)
        kept = [s for s in stalled if s not in closed]
        assert len(closed) == 16 and all(map(still_open, kept)), f"{len(closed)} of 20 from one host closed"
        assert echo_ok(port), "a legitimate echo was refused while one host held stalled connections"
        assert "127.0.0.2" in caplog.text and "limit 4" in caplog.text
        assert len(closed_by_node(kept, 5.0)) == 4  # the idle timeout
        assoc, _ = associate(port, source="127.0.0.2")
        assoc.release()


def test_stalled_silent_and_slow_peers_are_dropped(tmp_path):
    """20 connections from 20 hosts, more than the association limit: silent
    ones, ones stalled inside their A-ASSOCIATE-RQ and slow-loris ones (a
    byte every 0.1 s) are all closed once their timeout passes; then a
    legitimate echo is served. An established association that trickles a
    P-DATA-TF is dropped at the PDU deadline too."""
    with scp(tmp_path, idle_timeout_s=1.0, pdu_timeout_s=1.5) as port, Peers() as p:
        assoc, raw = associate(port)
        try:
            raw.sendall(header(P_DATA_TF, 1000))
            p.trickle(raw)
            silent = [p.connect(port, f"127.0.0.{10 + k}") for k in range(7)]
            stalled = [p.connect(port, f"127.0.0.{20 + k}", header(A_ASSOCIATE_RQ, 1000)) for k in range(7)]
            slow = [p.connect(port, f"127.0.0.{30 + k}", header(A_ASSOCIATE_RQ, 100_000)) for k in range(6)]
            for s in slow:
                p.trickle(s)
            closed = closed_by_node(silent + stalled + slow, 4.0)
            assert len(closed) == 20, f"{20 - len(closed)} of 20 stalled connections still open after 4 s"
            assert peers.wait_for(lambda: assoc.is_aborted, 3.0), "a P-DATA-TF trickled past the PDU deadline"
            assert echo_ok(port)
        finally:
            abort(assoc)


# ---------------------------------------------------------------- defect 5
def test_huge_announced_pdus_are_refused_before_reading_them(tmp_path):
    """An A-ASSOCIATE-RQ announcing 4 GiB and a P-DATA-TF announcing 2 GiB on
    an established association, both streamed as fast as loopback allows:
    the node closes both at once and its memory does not grow."""
    with peers.node(tmp_path / "out") as n, Peers() as p:
        time.sleep(0.5)
        base = rss_mib(n.proc.pid)
        rq = p.connect(n.port, send=header(A_ASSOCIATE_RQ, 0xFFFFFFFF))
        assoc, pdata = associate(n.port)
        try:
            pdata.sendall(header(P_DATA_TF, 0x7FFFFFFF))
            chunk = bytes(1 << 20)
            open_ = {rq: None, pdata: None}
            t0, grown = time.monotonic(), 0.0
            while any(v is None for v in open_.values()) and time.monotonic() - t0 < 5 and grown < 256:
                for s in [s for s, v in open_.items() if v is None]:
                    try:
                        s.settimeout(0.2)
                        s.send(chunk)
                    except TimeoutError:
                        pass
                    except OSError:  # reset or broken pipe: the node closed it
                        open_[s] = time.monotonic() - t0
                grown = max(grown, rss_mib(n.proc.pid) - base)
            assert grown < 32, f"the node grew by {grown:.0f} MiB"
            assert all(v is not None and v < 2 for v in open_.values()), f"still streaming after {open_}"
        finally:
            abort(assoc)


def test_pdata_limit_is_the_maximum_the_node_announces(tmp_path):
    """A P-DATA-TF up to the announced maximum (plus a margin) is read; one
    byte more is refused from its header."""
    with scp(tmp_path, max_pdu=16382) as port:
        fits, fits_raw = associate(port)
        over, over_raw = associate(port)
        try:
            fits_raw.sendall(header(P_DATA_TF, 16382 + 1024))
            over_raw.sendall(header(P_DATA_TF, 16382 + 1024 + 1))
            assert peers.wait_for(lambda: over.is_aborted, 2.0)
            assert not fits.is_aborted  # still waiting for the body
        finally:
            abort(fits)
            abort(over)


# --------------------------------------------------------------- defect 12
def test_rejections_log_the_true_reason(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ct_denoise.serve")
    with scp(tmp_path, max_associations=1) as port:
        assoc, _ = associate(port)
        try:
            assert not echo_ok(port)
        finally:
            assoc.release()
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1 and "association limit" in rejected[0] and "called AE" not in rejected[0], rejected
    caplog.clear()
    with scp(tmp_path) as port:
        assert peers.echo(port, aet="SOMEONE_ELSE").returncode != 0
    assert "called AE title" in caplog.text


# ------------------------------------------------------------------ drains
def test_sigterm_ends_with_stalled_peers_connected(tmp_path):
    with Peers() as p:
        n = peers.start_node(tmp_path / "out")
        try:
            for k in range(8):
                p.connect(n.port, f"127.0.0.{50 + k}", header(A_ASSOCIATE_RQ, 1000))
            p.connect(n.port, "127.0.0.60")
            time.sleep(0.3)
            t0 = time.monotonic()
            code = n.stop(timeout=15)
            took = time.monotonic() - t0
        finally:
            n.stop(timeout=1)
        assert (code, took < 5) == (0, True), f"exit {code} after {took:.1f} s"
        assert len(closed_by_node(p.socks, 1.0)) == len(p.socks)


def test_drain_ends_within_drain_s_with_a_stalled_association(tmp_path):
    """Node.run in-process with drain_s=1: an established association stalled
    inside a P-DATA-TF, and stalled or silent connections, do not hold the
    drain past it, and all of them are closed when it ends."""
    node = Node(ServeOptions(out=tmp_path / "out", port=0, drain_s=1.0))
    runner = threading.Thread(target=node.run, daemon=True)
    runner.start()
    port_file = tmp_path / "out" / "node.port"
    assert peers.wait_for(port_file.is_file, 30)
    port = int(port_file.read_text())
    with Peers() as p:
        assoc, raw = associate(port)
        try:
            raw.sendall(header(P_DATA_TF, 1000))
            for k in range(4):
                p.connect(port, f"127.0.0.{70 + k}", header(A_ASSOCIATE_RQ, 1000))
            for k in range(2):
                p.connect(port, f"127.0.0.{80 + k}")  # silent
            time.sleep(0.3)
            t0 = time.monotonic()
            node.stopping.set()
            runner.join(timeout=6)
            took = time.monotonic() - t0
            assert not runner.is_alive(), f"the drain still runs after {took:.1f} s (drain_s 1)"
            assert took < 3, f"the drain took {took:.1f} s (drain_s 1)"
            assert len(closed_by_node(p.socks, 1.0)) == len(p.socks)
            assert peers.wait_for(lambda: assoc.is_aborted, 2.0)
        finally:
            abort(assoc)
    runner.join(timeout=30)
