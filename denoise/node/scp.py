"""The receiving side of the node: a pynetdicom Storage SCP for CT and
Enhanced CT plus Verification, with an optional calling-AE allow list.

pynetdicom writes each received data set to a file as it arrives (memory
does not grow with the instance's size). Each C-STORE is answered only after
the instance is admitted (:func:`denoise.node.admit.admit`) and durably in
the spool (:meth:`denoise.node.spool.Spool.store_file`). Statuses (PS3.4
Annex B), refusals with a one-line Error Comment and a log line:

* ``0x0000`` success;
* ``0xA700`` refused, out of resources: the instance could not be written (a
  full disk); nothing of it is kept, the sender may retry;
* ``0xA900`` the data set's SOP class or instance UID is not the request's;
* ``0xC000`` cannot understand: not a CT image the node processes, invalid
  UIDs, over the pixel limit, or pixel data that does not decode.

SOP classes other than CT and Enhanced CT are refused at association
negotiation; an association from a calling AE title not allowed is rejected.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from denoise.hashing import short_hash
from denoise.node.admit import NOT_MATCHING, Limits, Refused, admit
from denoise.node.inbox import Inbox
from denoise.node.net import no_delay
from denoise.node.spool import Spool
from denoise.text import one_line

log = logging.getLogger("ct_denoise.serve")

STORAGE_CLASSES = (CTImageStorage, EnhancedCTImageStorage)
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700
_NATIVE = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)


def decodable_syntaxes() -> list[UID]:
    """Transfer syntaxes the loader decodes: native encodings plus every
    compressed one pydicom has a working decoder for on this install."""
    compressed = []
    for syntax in AllTransferSyntaxes:
        if syntax in _NATIVE or not syntax.is_encapsulated:
            continue
        try:
            if get_decoder(syntax).is_available:
                compressed.append(syntax)
        except (NotImplementedError, ValueError):  # no decoder at all for this syntax
            continue
    return [*_NATIVE, *compressed]


@dataclass
class _Tally:
    calling: str
    peer: str
    stored: int = 0
    refused: int = 0
    series: set = field(default_factory=set)


class StorageHandlers:
    """The event handlers, with per-association counts for the log lines."""

    def __init__(self, spool: Spool, limits: Limits | None = None, inbox: Inbox | None = None):
        self.spool = spool
        self.limits = limits or Limits()
        self.inbox = inbox
        self._tallies: dict[int, _Tally] = {}
        self._lock = threading.Lock()

    def _tally(self, event) -> _Tally:
        key = id(event.assoc)
        with self._lock:
            if key not in self._tallies:
                req = event.assoc.requestor
                self._tallies[key] = _Tally(req.ae_title, f"{req.address}:{req.port}")
            return self._tallies[key]

    def on_store(self, event) -> int | Dataset:
        tally = self._tally(event)
        status = self._store(event)
        if status == SUCCESS:
            tally.stored += 1
        else:
            tally.refused += 1
        return status

    def _store(self, event) -> int | Dataset:
        """Admit the instance pynetdicom wrote to a temporary file, then move it into the spool."""
        request = event.request
        path = Path(event.dataset_path)
        error = self.inbox.write_error(path) if self.inbox is not None else None
        if error is not None:  # a full disk while it arrived: the sender keeps its image
            return self._refuse(event, OUT_OF_RESOURCES, f"cannot keep it: {one_line(error)}")
        try:
            found = admit(path, str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID), self.limits)
            self.spool.store_file(found.series_uid, found.sop_uid, path)
        except Refused as exc:
            return self._refuse(event, exc.status, str(exc))
        except OSError as exc:  # full disk, quota, permissions: the sender keeps its image
            return self._refuse(event, OUT_OF_RESOURCES, f"cannot keep it: {one_line(exc)}")
        self._tally(event).series.add(short_hash(found.series_uid))
        return SUCCESS

    def _refuse(self, event, status: int, reason: str) -> Dataset:
        tally = self._tally(event)
        what = {OUT_OF_RESOURCES: "out of resources", NOT_MATCHING: "not matching its SOP class"}.get(
            status, "cannot understand")
        log.warning("instance %s from %s (%s) refused with 0x%04X (%s): %s",
                    short_hash(str(event.request.AffectedSOPInstanceUID)), tally.calling or "?", tally.peer,
                    status, what, one_line(reason))
        reply = Dataset()
        reply.Status = status
        reply.ErrorComment = one_line(reason, 64)  # LO: 64 characters
        return reply

    def on_closed(self, event, how: str) -> None:
        with self._lock:
            tally = self._tallies.pop(id(event.assoc), None)
        if tally is None:
            req = event.assoc.requestor
            tally = _Tally(req.ae_title, f"{req.address}:{req.port}")
        series = ", ".join(sorted(tally.series)) or "none"
        log.info("association from %s (%s) %s: %d stored, %d refused, series %s",
                 tally.calling or "?", tally.peer, how, tally.stored, tally.refused, series)

    def on_conn_close(self, event) -> None:
        """An instance still arriving when the connection closed is dropped (it was never acknowledged)."""
        if self.inbox is not None and self.inbox.discard_partial(event.assoc.dul):
            log.warning("association from %s (%s:%s): connection closed during an instance; its partial data "
                        "was dropped", event.assoc.requestor.ae_title or "?", event.assoc.requestor.address,
                        event.assoc.requestor.port)

    def on_rejected(self, event) -> None:
        from denoise.node.guard import why_rejected  # the reason pynetdicom sent, not a guess

        req = event.assoc.requestor
        log.warning("association from %s (%s:%s) rejected: %s", req.ae_title, req.address, req.port,
                    why_rejected(event.assoc))

    def handlers(self) -> list:
        from denoise.node import guard  # connection limits and deadlines (build_ae installs them)

        return [(evt.EVT_CONN_OPEN, no_delay), *guard.HANDLERS, (evt.EVT_C_STORE, self.on_store),
                (evt.EVT_CONN_CLOSE, self.on_conn_close),
                (evt.EVT_RELEASED, lambda e: self.on_closed(e, "released")),
                (evt.EVT_ABORTED, lambda e: self.on_closed(e, "aborted")),
                (evt.EVT_REJECTED, self.on_rejected)]


def build_ae(aet: str, allow: Iterable[str] = (), *, max_associations: int = 16, max_per_peer: int = 4,
             idle_timeout_s: float = 30.0, pdu_timeout_s: float = 60.0, max_pdu: int = 16382,
             max_control_pdu: int = 64 * 1024) -> AE:
    """An application entity accepting CT storage (in every decodable transfer
    syntax) and verification; with ``allow``, only those calling AE titles.

    Against stalled, slow or oversized peers (:mod:`denoise.node.guard`, active
    once the server runs with :meth:`StorageHandlers.handlers`): at most
    ``max_associations`` at once and ``max_per_peer`` connections from one
    address; a connection must complete its A-ASSOCIATE-RQ within
    ``idle_timeout_s`` of opening (a silent one is closed then), and every
    PDU within ``pdu_timeout_s`` of its first byte; a P-DATA-TF may be
    ``max_pdu`` bytes (the maximum this node announces) plus a small margin,
    any other PDU ``max_control_pdu`` bytes. A PDU over its limit is refused
    from its header, before its body is read."""
    from denoise.node import guard

    if max_pdu < 1024 or max_associations < 1 or not idle_timeout_s > 0:
        raise ValueError("max_pdu must be >= 1024, max_associations >= 1 and idle_timeout_s > 0")
    ae = AE(ae_title=aet)
    guard.install(ae, guard.GuardLimits(max_per_peer=max_per_peer, pdu_timeout_s=pdu_timeout_s,
                                        max_control_pdu=max_control_pdu))
    ae.maximum_pdu_size = max_pdu
    syntaxes = decodable_syntaxes()
    for sop_class in STORAGE_CLASSES:
        ae.add_supported_context(sop_class, syntaxes)
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    allowed = [a for a in allow]
    if allowed:
        ae.require_calling_aet = allowed
    ae.maximum_associations = max_associations
    ae.network_timeout = 60
    ae.dimse_timeout = 60
    ae.acse_timeout = idle_timeout_s  # also pynetdicom's ARTIM timer: a silent connection is closed after it
    return ae
