"""Which object a dataset is, and which object a derived one will be.

A source's SOP class and instance come from the main dataset or, where a PACS
export left those empty, from the file meta.

A derived object's UIDs are derived deterministically from everything that
determines it: the source UIDs, the operation and its settings (the
:class:`Derivation` key), a digest of the source's pixel data and rescale, a
digest of its other public attributes (a source re-sent with a corrected
patient name is another object), and any per-file input of the operation
(e.g. the noise stream). Re-running an interrupted batch adds files to the
*same* output series, and two different objects never share a SOP Instance
UID. :mod:`.write` writes the derived object with these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from denoise.dicom.reading import leniently

_PIXEL_DATA = 0x7FE00010
# Series Numbers of derived series: a number identifying the derivation, then
# the source's Series Number in the last four digits (IS holds up to 2**31 - 1).
_SERIES_SLOTS, _SERIES_BASE = 213_999, 10_000
_FALLBACKS = (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID"))


def _meta_value(ds: Dataset, keyword: str) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get(keyword, "") or "") if meta is not None else ""


def media_sop_class(ds: Dataset) -> str:
    """SOPClassUID, else the file meta's MediaStorageSOPClassUID, else ''."""
    return str(ds.get("SOPClassUID", "") or "") or _meta_value(ds, "MediaStorageSOPClassUID")


def sop_instance(ds: Dataset) -> str:
    """SOPInstanceUID, else the file meta's MediaStorageSOPInstanceUID, else ''."""
    return str(ds.get("SOPInstanceUID", "") or "") or _meta_value(ds, "MediaStorageSOPInstanceUID")


def fill_uids(ds: Dataset) -> Dataset:
    """Fill an empty SOPClassUID/SOPInstanceUID of the main dataset from the
    file meta, in place (the file itself is never changed); returns ``ds``."""
    for keyword, fallback in _FALLBACKS:
        if not str(ds.get(keyword, "") or "") and _meta_value(ds, fallback):
            setattr(ds, keyword, _meta_value(ds, fallback))
    return ds


@dataclass(frozen=True)
class Derivation:
    """What was done to the pixels, as recorded in the derived object.

    ``key`` identifies the operation and its settings (e.g. the model's hash
    or the noise parameters); it seeds the deterministic output UIDs and the
    Series Number. ``code`` is the closest Image Derivation code (CID 7203,
    a pydicom ``Code``); ``software_versions`` are recorded with our version
    in the Contributing Equipment item (e.g. the model id).
    """

    key: str
    description: str  # DerivationDescription (ST, at most 1024 characters)
    series_suffix: str  # appended to SeriesDescription as " [suffix]": says what differs
    code: object | None = None
    software_versions: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.key:
            raise ValueError("Derivation.key must be a non-empty string")
        if len(self.description) > 1024:
            raise ValueError("Derivation.description must be at most 1024 characters")


def derived_series_uid(source_series_uid: str, derivation: Derivation) -> str:
    """The output SeriesInstanceUID for one input series and operation."""
    return generate_uid(entropy_srcs=["series", source_series_uid, derivation.key])


def derived_sop_uid(source_sop_uid: str, derivation: Derivation, content: str = "") -> str:
    """The output SOPInstanceUID: a function of the source instance, the
    operation and ``content`` (:func:`pixel_digest` and per-file inputs)."""
    return generate_uid(entropy_srcs=["sop", source_sop_uid, derivation.key, content])


def derived_series_number(source_number, derivation: Derivation, source_series_uid: str = "") -> int:
    """A Series Number for the derived series, the same on every rerun:
    ``NNNNNNSSSS``, SSSS the source's number (mod 10000), NNNNNN from the
    derivation key and the source series, so distinct derived series get
    distinct numbers (two of them share one with probability 1 in 213999)."""
    try:
        base = int(source_number) if source_number not in (None, "") else 0
    except (TypeError, ValueError):
        base = 0
    digest = hashlib.sha256(f"{source_series_uid}\n{derivation.key}".encode()).digest()
    slot = 1 + int.from_bytes(digest[:8], "big") % _SERIES_SLOTS
    return slot * _SERIES_BASE + base % _SERIES_BASE


def pixel_digest(source: Dataset, rescales: list[tuple[float, float]]) -> str:
    """A digest of what the source's HU are made of: its pixel data as stored and its rescale."""
    digest = hashlib.sha256(bytes(source.PixelData))
    digest.update(repr([(float(s), float(i)) for s, i in rescales]).encode())
    return digest.hexdigest()[:32]


@leniently
def header_digest(source: Dataset) -> str:
    """A digest of the source's public attributes other than its pixel data,
    as values (the same whichever transfer syntax carried them). Private
    attributes are left out: their values read differently in implicit VR."""
    digest = hashlib.sha256()
    _feed(digest, source)
    return digest.hexdigest()[:32]


def _feed(digest, ds: Dataset) -> None:
    for elem in ds:
        if elem.tag == _PIXEL_DATA or elem.tag.is_private or elem.tag.element == 0:  # group lengths vary
            continue
        if elem.VR == "SQ":
            digest.update(f"{elem.tag}[".encode())
            for item in elem.value:
                _feed(digest, item)
                digest.update(b"|")
            digest.update(b"]")
        elif isinstance(elem.value, bytes):
            digest.update(f"{elem.tag}#".encode() + elem.value)
        else:
            digest.update(f"{elem.tag}={elem.value!s};".encode())


def expected_sop_uid(source: Dataset, rescales: list[tuple[float, float]], derivation: Derivation,
                     extra: str = "") -> str:
    """The SOP Instance UID :func:`denoise.dicom.write.derive_dataset` gives the derived object of ``source``."""
    sop = str(fill_uids(source).get("SOPInstanceUID", "") or "")
    return derived_sop_uid(sop, derivation, f"{pixel_digest(source, rescales)} {header_digest(source)} {extra}")
