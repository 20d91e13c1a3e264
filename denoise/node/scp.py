"""The receiving side of the node: a pynetdicom Storage SCP for CT and
Enhanced CT plus Verification, with an optional calling-AE allow list.

Each C-STORE is answered only after the instance is durably in the spool
(:meth:`denoise.node.spool.Spool.store`). Statuses (PS3.4 Annex B):

* ``0x0000`` success;
* ``0xA700`` refused, out of resources: the instance could not be written (a
  full disk); nothing of it is kept, the sender may retry;
* ``0xA900`` data set does not match the SOP class of the request;
* ``0xC000`` cannot understand: not decodable, or no Series/SOP Instance UID
  or pixel data.

SOP classes other than CT and Enhanced CT are refused at association
negotiation; an association from a calling AE title not allowed is rejected.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

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

from denoise.dicom.reading import lenient
from denoise.node.net import no_delay
from denoise.node.spool import Spool, short_hash
from denoise.text import one_line

log = logging.getLogger("ct_denoise.serve")

STORAGE_CLASSES = (CTImageStorage, EnhancedCTImageStorage)
SUCCESS, OUT_OF_RESOURCES, NOT_MATCHING, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000
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

    def __init__(self, spool: Spool):
        self.spool = spool
        self._tallies: dict[int, _Tally] = {}
        self._lock = threading.Lock()

    def _tally(self, event) -> _Tally:
        key = id(event.assoc)
        with self._lock:
            if key not in self._tallies:
                req = event.assoc.requestor
                self._tallies[key] = _Tally(req.ae_title, f"{req.address}:{req.port}")
            return self._tallies[key]

    def on_store(self, event) -> int:
        tally = self._tally(event)
        status = self._store(event)
        if status == SUCCESS:
            tally.stored += 1
        else:
            tally.refused += 1
        return status

    def _store(self, event) -> int:
        with lenient("received instance"):
            return self._check_and_store(event)

    def _check_and_store(self, event) -> int:
        try:
            ds = event.dataset
            requested = event.request.AffectedSOPClassUID
            sop_class, sop_uid = ds.get("SOPClassUID"), ds.get("SOPInstanceUID")
            series_uid = ds.get("SeriesInstanceUID")
        except Exception as exc:  # a malformed data set: pydicom cannot parse it
            log.warning("instance refused (cannot understand): %s", one_line(exc))
            return CANNOT_UNDERSTAND
        if sop_class != requested:
            log.warning("instance refused: its SOP class %s is not the one requested (%s)", sop_class, requested)
            return NOT_MATCHING
        missing = [k for k, v in (("SOPInstanceUID", sop_uid), ("SeriesInstanceUID", series_uid)) if not v]
        if "PixelData" not in ds:
            missing.append("PixelData")
        if missing:
            log.warning("instance refused (cannot understand): no %s", ", ".join(missing))
            return CANNOT_UNDERSTAND
        try:
            self.spool.store(str(series_uid), str(sop_uid), event.encoded_dataset())
        except OSError as exc:  # full disk, quota, permissions: the sender keeps its image
            log.error("instance refused (out of resources): %s", one_line(exc))
            return OUT_OF_RESOURCES
        self._tally(event).series.add(short_hash(str(series_uid)))
        return SUCCESS

    def on_closed(self, event, how: str) -> None:
        with self._lock:
            tally = self._tallies.pop(id(event.assoc), None)
        if tally is None:
            req = event.assoc.requestor
            tally = _Tally(req.ae_title, f"{req.address}:{req.port}")
        series = ", ".join(sorted(tally.series)) or "none"
        log.info("association from %s (%s) %s: %d stored, %d refused, series %s",
                 tally.calling or "?", tally.peer, how, tally.stored, tally.refused, series)

    def on_rejected(self, event) -> None:
        req = event.assoc.requestor
        allowed = event.assoc.ae.require_calling_aet
        why = ("calling AE title not allowed" if allowed and req.ae_title not in allowed
               else "called AE title is not this node's")
        log.warning("association from %s (%s:%s) rejected: %s", req.ae_title, req.address, req.port, why)

    def handlers(self) -> list:
        return [(evt.EVT_CONN_OPEN, no_delay), (evt.EVT_C_STORE, self.on_store),
                (evt.EVT_RELEASED, lambda e: self.on_closed(e, "released")),
                (evt.EVT_ABORTED, lambda e: self.on_closed(e, "aborted")),
                (evt.EVT_REJECTED, self.on_rejected)]


def build_ae(aet: str, allow: Iterable[str] = ()) -> AE:
    """An application entity accepting CT storage (in every decodable transfer
    syntax) and verification; with ``allow``, only those calling AE titles."""
    ae = AE(ae_title=aet)
    syntaxes = decodable_syntaxes()
    for sop_class in STORAGE_CLASSES:
        ae.add_supported_context(sop_class, syntaxes)
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    allowed = [a for a in allow]
    if allowed:
        ae.require_calling_aet = allowed
    ae.maximum_associations = 16
    ae.network_timeout = 60
    ae.dimse_timeout = 60
    ae.acse_timeout = 30
    return ae
