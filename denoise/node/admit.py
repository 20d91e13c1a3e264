"""What the node admits: the checks a received instance passes before the
sender is told it is safe (C-STORE status 0x0000).

An instance is admitted when it is a CT image the denoiser will process (the
same rules as a folder scan, :func:`denoise.dicom.scan.inspect_file`), its
UIDs are valid (the derived objects copy and reference them), it is within
the node's :class:`Limits`, and every frame of its pixel data decodes. The
frames are decoded one at a time, so checking costs one frame of memory
whatever the instance declares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydicom.pixels import iter_pixels
from pydicom.uid import UID

from denoise.dicom.pixels import preferred_plugin
from denoise.dicom.reading import lenient
from denoise.dicom.scan import SkipFile, inspect_file, read_header
from denoise.text import one_line

NOT_MATCHING, CANNOT_UNDERSTAND = 0xA900, 0xC000
DEFAULT_MAX_PIXELS = 1 << 26  # 256 frames of 512 x 512: about 1 GB to denoise (measured in benchmarks/serve_load.py)
_UIDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID")


@dataclass(frozen=True)
class Limits:
    """What one instance may hold. ``max_pixels`` bounds rows x columns x
    frames, and with it the memory and time the node spends on one instance."""

    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Admitted:
    series_uid: str
    sop_uid: str


class Refused(Exception):
    """The instance is not admitted: ``status`` for the sender, the reason as message."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def check_uid(value: object, keyword: str) -> str:
    """``value`` as a string if it is a valid UID (digits and dots, at most 64
    characters, no leading zeros); otherwise :class:`Refused`."""
    text = "" if value is None else str(value)
    if not UID(text).is_valid:
        raise Refused(CANNOT_UNDERSTAND, f"invalid {keyword} {text[:80]!r}")
    return text


def admit(path: Path, requested_class: str, requested_uid: str, limits: Limits | None = None) -> Admitted:
    """Check the received instance at ``path`` (a DICOM file as pynetdicom
    wrote it); raise :class:`Refused` with a status and a one-line reason.

    Parameters
    ----------
    path
        The instance, with its file meta.
    requested_class, requested_uid
        The C-STORE request's Affected SOP Class and Instance UIDs, which the
        data set must repeat.
    limits
        The node's limits (default :class:`Limits`).
    """
    limits = limits or Limits()
    with lenient(path):
        try:
            header = read_header(path)
            uids = {k: header.get(k) for k in _UIDS}
        except SkipFile as exc:
            raise Refused(CANNOT_UNDERSTAND, str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a corrupt header
            raise Refused(CANNOT_UNDERSTAND, f"unreadable data set ({one_line(exc)})") from exc
        for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            if not uids[keyword]:
                raise Refused(CANNOT_UNDERSTAND, f"no {keyword}")
        for keyword, value in uids.items():
            if value is not None:
                check_uid(value, keyword)
        if str(uids["SOPClassUID"]) != str(requested_class):
            raise Refused(NOT_MATCHING, f"the data set's SOP class {uids['SOPClassUID']} is not the one "
                                        f"requested ({requested_class})")
        if str(uids["SOPInstanceUID"]) != str(requested_uid):
            raise Refused(NOT_MATCHING, "the data set's SOP Instance UID is not the one requested")
        try:
            ct = inspect_file(path, PurePosixPath(path.name))
        except SkipFile as exc:
            raise Refused(CANNOT_UNDERSTAND, str(exc)) from exc
        pixels = ct.rows * ct.columns * ct.n_frames
        if pixels > limits.max_pixels:
            raise Refused(CANNOT_UNDERSTAND, f"{ct.n_frames} frame(s) of {ct.rows}x{ct.columns} = {pixels} pixels, "
                                             f"over the node's limit of {limits.max_pixels} (--max-pixels)")
        _decode_every_frame(path, ct.n_frames, preferred_plugin(header.file_meta.get("TransferSyntaxUID")))
    return Admitted(str(uids["SeriesInstanceUID"]), str(uids["SOPInstanceUID"]))


def _decode_every_frame(path: Path, frames: int, plugin: str) -> None:
    decoded = 0
    try:
        for _ in iter_pixels(path, raw=True, decoding_plugin=plugin):
            decoded += 1
    except Exception as exc:  # noqa: BLE001 - each decoder raises its own types for corrupt data
        raise Refused(CANNOT_UNDERSTAND, f"pixel data does not decode (frame {decoded + 1} of {frames}: "
                                         f"{one_line(exc)})") from exc
    if decoded != frames:
        raise Refused(CANNOT_UNDERSTAND, f"pixel data holds {decoded} frame(s), NumberOfFrames says {frames}")
