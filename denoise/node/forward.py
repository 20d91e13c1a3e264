"""The sending side of the node: C-STORE of a derived series to each
``--forward`` destination with pynetdicom, idempotent by SOP Instance UID.

Each acknowledged instance is recorded (fsync'd) before the next is sent, so a
retry or a restart sends only what the destination has not acknowledged; an
instance sent but not yet recorded when the node was killed is sent again with
the same SOP Instance UID, which an archive stores as the same instance.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from denoise.dicom.reading import lenient
from denoise.node.net import no_delay
from denoise.text import one_line

_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # default character repertoire, no backslash
BACKOFF_S = (2.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0)  # waits after 1, 2, 3... failed attempts


def check_ae_title(title: str, what: str) -> str:
    """``title`` if it is a valid AE title (1-16 printable characters, no backslash, not all spaces)."""
    if not _AE_TITLE.fullmatch(title) or not title.strip():
        raise ValueError(f"{what} {title!r} is not a valid AE title (1-16 printable characters, no backslash)")
    return title


@dataclass(frozen=True)
class Destination:
    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AET@HOST:PORT``, e.g. ``PACS@10.0.0.5:104``."""
        match = re.fullmatch(r"(.+)@(.+):(\d+)", text)
        if not match:
            raise ValueError(f"--forward {text!r}: expected AET@HOST:PORT, e.g. PACS@127.0.0.1:4242")
        aet, host, port = match.group(1), match.group(2), int(match.group(3))
        check_ae_title(aet, f"--forward {text!r}: the AE title")
        if not 1 <= port <= 65535:
            raise ValueError(f"--forward {text!r}: port must be 1..65535")
        return cls(aet, host.strip("[]"), port)

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def backoff(attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed attempts in a row."""
    return BACKOFF_S[min(attempts, len(BACKOFF_S)) - 1] if attempts > 0 else 0.0


class ForwardError(RuntimeError):
    """The destination could not be reached, or refused an instance; retried later."""


def send(files: Iterable[Path], destination: Destination, calling_aet: str, already: set[str],
         on_sent: Callable[[str], None], timeout_s: float = 30.0, connect_timeout_s: float = 10.0,
         stop: Callable[[], bool] = lambda: False) -> int:
    """C-STORE every file whose SOP Instance UID is not in ``already``;
    ``on_sent(uid)`` after each acknowledged one. Returns the number sent.
    Raises :class:`ForwardError` at the first failure (nothing more is sent).
    A destination that does not answer the TCP connection within
    ``connect_timeout_s`` fails the attempt; ``stop()`` is asked between
    instances (a drain), and True ends the attempt with a :class:`ForwardError`."""
    todo = []
    for path in files:
        with lenient(path):
            meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        if str(meta.SOPInstanceUID) not in already:
            todo.append((path, str(meta.SOPClassUID), str(meta.SOPInstanceUID)))
    if not todo:
        return 0
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = connect_timeout_s  # a host that drops SYNs would hold the attempt for minutes
    for sop_class in sorted({c for _, c, _ in todo}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    try:
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.aet,
                             evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])
    except OSError as exc:
        raise ForwardError(f"cannot connect: {one_line(exc)}") from exc
    if not assoc.is_established:
        raise ForwardError(f"association rejected by {destination.aet}" if assoc.is_rejected
                           else f"cannot connect (nothing listening, unreachable, no answer within "
                                f"{connect_timeout_s:g} s, or the association was aborted)")
    sent = 0
    try:
        for path, _, uid in todo:
            if stop():
                raise ForwardError(f"stopped after {sent} instances: the node is draining")
            status = assoc.send_c_store(path)
            code = status.get("Status") if status else None
            if code is None:
                raise ForwardError("no response to C-STORE (connection lost or timed out)")
            if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:  # warnings are stored too
                raise ForwardError(f"C-STORE refused with status 0x{code:04X}")
            on_sent(uid)
            sent += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return sent
