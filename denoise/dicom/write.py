"""Write processed CT as correct *derived* DICOM objects, atomically.

A derived object keeps the study, frame of reference and geometry of its
source, gets a new SOP Instance UID and (shared by all files of one output
series) a new Series Instance UID and Series Number, and says what was done:

* single-frame CT: ImageType ``DERIVED\\SECONDARY``, DerivationDescription,
  DerivationCodeSequence and SourceImageSequence at the top level;
* Enhanced CT: ImageType and FrameType ``DERIVED\\PRIMARY`` (the only value 2
  the IOD allows, PS3.3 C.8.16.1) and, per frame, a Derivation Image
  functional group (DerivationImageSequence: description, code, the source
  frame);
* a Contributing Equipment item for ct-denoise, our own file meta, and the
  creation and content times of the processing (:mod:`.provenance`);
* the input's pixel padding, pixel for pixel (:mod:`.padding`).

It is always written as uncompressed Explicit VR Little Endian.

UIDs are derived deterministically from everything that determines the
output object: the source UIDs, the operation and its settings (the
derivation key), a digest of the source's pixel data and rescale, a digest
of its other public attributes (a source re-sent with a corrected patient
name is another object), and any per-file input of the operation (e.g. the
noise stream). Re-running an interrupted batch adds files to the *same*
output series, and two different objects never share a SOP Instance UID.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage, generate_uid

from denoise.atomic import atomic_path
from denoise.dicom.geometry import is_enhanced
from denoise.dicom.identity import fill_uids
from denoise.dicom.padding import Padding, find_padding, keep_padding
from denoise.dicom.pixels import hu_to_stored, stored_range
from denoise.dicom.provenance import code_item, file_meta, processing_time, stamp
from denoise.dicom.reading import lenient, leniently

_PIXEL_DATA = 0x7FE00010

_INVALIDATED = ("SmallestImagePixelValue", "LargestImagePixelValue",
                "SmallestPixelValueInSeries", "LargestPixelValueInSeries")
ENHANCED_CT_CLASSES = (EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage)
# Series Numbers of derived series: a number identifying the derivation, then
# the source's Series Number in the last four digits (IS holds up to 2**31 - 1).
_SERIES_SLOTS, _SERIES_BASE = 213_999, 10_000


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
    """The SOP Instance UID :func:`derive_dataset` gives the derived object of ``source``."""
    sop = str(fill_uids(source).get("SOPInstanceUID", "") or "")
    return derived_sop_uid(sop, derivation, f"{pixel_digest(source, rescales)} {header_digest(source)} {extra}")


@leniently
def derive_dataset(source: Dataset, hu: np.ndarray, rescales: list[tuple[float, float]],
                   derivation: Derivation, *, padding: Padding | None = None, extra: str = "") -> Dataset:
    """A new dataset holding ``hu`` (frames, rows, cols) as a derived image of
    ``source``: stored values invert the source's rescale exactly, and the
    source's padding pixels keep their stored values (``padding``, else found
    in ``source`` when its header declares padding). ``extra`` names per-file
    inputs of the operation besides the pixels, for the SOP Instance UID."""
    n_frames = len(rescales)
    if hu.shape != (n_frames, int(source.Rows), int(source.Columns)):
        raise ValueError(f"HU array shape {hu.shape} does not match the source "
                         f"({n_frames}, {source.Rows}, {source.Columns})")
    sop_uid = expected_sop_uid(source, rescales, derivation, extra)
    stored = hu_to_stored(hu, source, rescales)
    if padding is None and "PixelPaddingValue" in source:
        padding = find_padding(source, source.pixel_array.reshape(stored.shape))
    keep_padding(stored, padding, *stored_range(int(source.BitsStored), int(source.PixelRepresentation)))
    ds = copy.deepcopy(source)
    ds.file_meta = file_meta(ds)  # uncompressed from here on
    had_frames = "NumberOfFrames" in ds
    ds.set_pixel_data(stored if n_frames > 1 else stored[0],
                      photometric_interpretation=str(source.PhotometricInterpretation),
                      bits_stored=int(source.BitsStored), generate_instance_uid=False)
    if had_frames and "NumberOfFrames" not in ds:
        ds.NumberOfFrames = n_frames  # required by Enhanced CT even for one frame
    for keyword in _INVALIDATED:
        if keyword in ds:
            delattr(ds, keyword)
    _mark_derived(ds, source, derivation, sop_uid)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _source_reference(source: Dataset, frame: int | None = None) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if frame is not None:
        ref.ReferencedFrameNumber = frame
    ref.PurposeOfReferenceCodeSequence = Sequence([code_item(codes.DCM.SourceImageForImageProcessingOperation)])
    return ref


def _evidence(source: Dataset) -> Dataset:
    """The source as a Hierarchical SOP Instance Reference (study, series, instance)."""
    instance = Dataset()
    instance.ReferencedSOPClassUID = source.SOPClassUID
    instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source.get("SeriesInstanceUID", "")
    series.ReferencedSOPSequence = Sequence([instance])
    study = Dataset()
    study.StudyInstanceUID = source.get("StudyInstanceUID", "")
    study.ReferencedSeriesSequence = Sequence([series])
    return study


def is_enhanced_ct(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) in ENHANCED_CT_CLASSES or is_enhanced(ds)


def _mark_derived(ds: Dataset, source: Dataset, derivation: Derivation, sop_uid: str) -> None:
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = derived_series_uid(str(source.get("SeriesInstanceUID", "")), derivation)
    enhanced = is_enhanced_ct(ds)
    value2 = "PRIMARY" if enhanced else "SECONDARY"  # Enhanced CT allows only PRIMARY (PS3.3 C.8.16.1)
    ds.ImageType = ["DERIVED", value2, *list(source.get("ImageType", []))[2:]]
    for group in (*ds.get("PerFrameFunctionalGroupsSequence", []), *ds.get("SharedFunctionalGroupsSequence", [])):
        for ftype in group.get("CTImageFrameTypeSequence", []):
            if "FrameType" in ftype:
                ftype.FrameType = ["DERIVED", value2, *list(ftype.FrameType)[2:]]
    code = code_item(derivation.code) if derivation.code is not None else None
    if enhanced:
        _derivation_groups(ds, source, derivation, code)
    else:
        ds.DerivationDescription = derivation.description
        ds.SourceImageSequence = Sequence([_source_reference(source)])
        if code is not None:
            ds.DerivationCodeSequence = Sequence([code])
        elif "DerivationCodeSequence" in ds:
            del ds.DerivationCodeSequence
    ds.SeriesNumber = derived_series_number(source.get("SeriesNumber"), derivation,
                                            str(source.get("SeriesInstanceUID", "")))
    desc = str(source.get("SeriesDescription", "") or "").strip()
    suffix = f"[{derivation.series_suffix}]"
    ds.SeriesDescription = (f"{desc[: 64 - len(suffix) - 1]} {suffix}" if desc else suffix)[:64]
    stamp(ds, processing_time(source), derivation.description, derivation.software_versions)


def _derivation_groups(ds: Dataset, source: Dataset, derivation: Derivation, code: Dataset | None) -> None:
    """Enhanced CT: the derivation lives in a Derivation Image functional group per frame
    (DerivationCodeSequence is required there: generic image processing when no code fits)."""
    for keyword in ("DerivationDescription", "SourceImageSequence", "DerivationCodeSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    code = code if code is not None else code_item(codes.DCM.ImageProcessing)

    def group(frame: int | None) -> Sequence:
        item = Dataset()
        item.DerivationDescription = derivation.description
        item.DerivationCodeSequence = Sequence([copy.deepcopy(code)])
        item.SourceImageSequence = Sequence([_source_reference(source, frame)])
        return Sequence([item])

    ds.SourceImageEvidenceSequence = Sequence([_evidence(source)])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        for k, frame_group in enumerate(per_frame):
            frame_group.DerivationImageSequence = group(k + 1)
        for shared in ds.get("SharedFunctionalGroupsSequence", []):
            if "DerivationImageSequence" in shared:
                del shared.DerivationImageSequence
    else:
        shared = ds.get("SharedFunctionalGroupsSequence") or Sequence([Dataset()])
        shared[0].DerivationImageSequence = group(None)
        ds.SharedFunctionalGroupsSequence = shared


class UnsafeOutputPath(ValueError):
    """An output path would fall outside the output folder."""


def output_path(out_root: Path, relpath: PurePosixPath) -> Path:
    """``out_root / relpath``, refusing anything that could escape ``out_root``
    (absolute paths, ``..`` parts). Names come only from input paths."""
    parts = relpath.parts
    if not parts or relpath.is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise UnsafeOutputPath(f"{relpath}: unsafe relative path for an output file")
    target = out_root.joinpath(*parts)
    root = out_root.resolve()
    if root not in target.resolve().parents:
        raise UnsafeOutputPath(f"{relpath}: output would fall outside {out_root}")
    return target


def write_atomic(ds: Dataset, path: Path) -> None:
    """Save ``ds`` to ``path`` via a temporary file in the same folder and an
    atomic rename: a killed process never leaves a half-written ``path``."""
    # pydicom warns about invalid values copied from the source (e.g. non-conformant
    # UIDs); the derived object must keep them as they are: logged, not printed.
    with atomic_path(path) as tmp, lenient(path):
        ds.save_as(tmp, enforce_file_format=True)
