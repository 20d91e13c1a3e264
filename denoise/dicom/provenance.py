"""Who made a derived object, with what and when: the file meta of our own
implementation, a Contributing Equipment item for ct-denoise (PS3.3
C.7.5.1, purpose DCM 109103 "Modifying Equipment") and the creation and
content times, in the source's time zone when it states one.
"""

from __future__ import annotations

import datetime as _dt
import re

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from denoise import __version__

MANUFACTURER = "ct-denoise"
AE_TITLE = "CTDENOISE"
IMPLEMENTATION_VERSION = f"CTDENOISE_{__version__}"[:16]
# One UID per released version of this implementation (pydicom's root, derived from name and version).
IMPLEMENTATION_UID = generate_uid(entropy_srcs=["ct-denoise implementation class", __version__])
_OFFSET = re.compile(r"([+-])(\d\d)(\d\d)")


def code_item(code) -> Dataset:
    """A Code Sequence item from a pydicom ``Code``."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def file_meta(ds: Dataset) -> FileMetaDataset:
    """File meta for a derived object written by us: the source's SOP class
    and instance as the dataset has them, our implementation and AE title."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    meta.SourceApplicationEntityTitle = AE_TITLE
    return meta


def source_timezone(ds: Dataset) -> _dt.timezone | None:
    """The source's TimezoneOffsetFromUTC (``+HHMM``/``-HHMM``), or None."""
    match = _OFFSET.fullmatch(str(ds.get("TimezoneOffsetFromUTC", "") or "").strip())
    if not match:
        return None
    sign, hours, minutes = match.groups()
    delta = _dt.timedelta(hours=int(hours), minutes=int(minutes))
    return _dt.timezone(-delta if sign == "-" else delta)


def processing_time(ds: Dataset) -> _dt.datetime:
    """Now, in the source's time zone if it states one, else local time (aware)."""
    zone = source_timezone(ds)
    return _dt.datetime.now(zone) if zone is not None else _dt.datetime.now().astimezone()


def stamp(ds: Dataset, now: _dt.datetime, description: str, versions: tuple[str, ...]) -> None:
    """Set the creation and content times to ``now`` and add ct-denoise to
    the Contributing Equipment Sequence (kept items of earlier processing)."""
    ds.InstanceCreationDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = now.strftime("%H%M%S.%f")
    item = Dataset()
    item.Manufacturer = MANUFACTURER
    item.ManufacturerModelName = MANUFACTURER
    item.SoftwareVersions = [v[:64] for v in (__version__, *versions)]
    item.ContributionDateTime = now.strftime("%Y%m%d%H%M%S.%f%z")
    item.ContributionDescription = description[:1024]
    item.PurposeOfReferenceCodeSequence = Sequence([code_item(codes.DCM.ModifyingEquipment)])
    ds.ContributingEquipmentSequence = Sequence([*ds.get("ContributingEquipmentSequence", []), item])
