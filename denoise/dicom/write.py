"""Write processed CT as correct *derived* DICOM objects, atomically.

A derived object keeps the study, frame of reference and geometry of its
source, gets a new SOP Instance UID and (shared by all files of one output
series) a new Series Instance UID, says what was done (ImageType
``DERIVED\\SECONDARY``, DerivationDescription, SourceImageSequence) and is
always written as uncompressed Explicit VR Little Endian.

UIDs are derived deterministically from the source UID and the operation, so
re-running an interrupted batch adds files to the *same* output series.
"""

from __future__ import annotations

import copy
import datetime as _dt
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from denoise import __version__
from denoise.atomic import atomic_path
from denoise.dicom.pixels import hu_to_stored

_SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
_INVALIDATED = ("SmallestImagePixelValue", "LargestImagePixelValue",
                "PixelPaddingRangeLimit", "SmallestPixelValueInSeries", "LargestPixelValueInSeries")


@dataclass(frozen=True)
class Derivation:
    """What was done to the pixels, as recorded in the derived object.

    ``key`` identifies the operation and its settings (e.g. the model's hash
    or the noise parameters); it seeds the deterministic output UIDs.
    """

    key: str
    description: str  # DerivationDescription (ST, at most 1024 characters)
    series_suffix: str  # appended to SeriesDescription as " [suffix]"
    series_number_offset: int = 1000

    def __post_init__(self):
        if not self.key:
            raise ValueError("Derivation.key must be a non-empty string")
        if len(self.description) > 1024:
            raise ValueError("Derivation.description must be at most 1024 characters")


def derived_series_uid(source_series_uid: str, derivation: Derivation) -> str:
    """The output SeriesInstanceUID for one input series and operation."""
    return generate_uid(entropy_srcs=["series", source_series_uid, derivation.key])


def derived_sop_uid(source_sop_uid: str, derivation: Derivation) -> str:
    return generate_uid(entropy_srcs=["sop", source_sop_uid, derivation.key])


def derive_dataset(source: Dataset, hu: np.ndarray, rescales: list[tuple[float, float]],
                   derivation: Derivation) -> Dataset:
    """A new dataset holding ``hu`` (frames, rows, cols) as a derived image of
    ``source``: stored values invert the source's rescale exactly."""
    n_frames = len(rescales)
    if hu.shape != (n_frames, int(source.Rows), int(source.Columns)):
        raise ValueError(f"HU array shape {hu.shape} does not match the source "
                         f"({n_frames}, {source.Rows}, {source.Columns})")
    stored = hu_to_stored(hu, source, rescales)
    ds = copy.deepcopy(source)
    had_frames = "NumberOfFrames" in ds
    ds.file_meta = _file_meta(ds)
    ds.set_pixel_data(stored if n_frames > 1 else stored[0],
                      photometric_interpretation=str(source.PhotometricInterpretation),
                      bits_stored=int(source.BitsStored), generate_instance_uid=False)
    if had_frames and "NumberOfFrames" not in ds:
        ds.NumberOfFrames = n_frames  # required by Enhanced CT even for one frame
    for keyword in _INVALIDATED:
        if keyword in ds:
            delattr(ds, keyword)
    _mark_derived(ds, source, derivation)
    return ds


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    old = getattr(ds, "file_meta", None)
    if old is not None:
        for elem in old:
            if elem.keyword not in ("FileMetaInformationGroupLength", "TransferSyntaxUID"):
                meta.add(copy.deepcopy(elem))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _mark_derived(ds: Dataset, source: Dataset, derivation: Derivation) -> None:
    src_series = str(source.get("SeriesInstanceUID", ""))
    src_sop = str(source.get("SOPInstanceUID", ""))
    ds.SOPInstanceUID = derived_sop_uid(src_sop, derivation)
    ds.SeriesInstanceUID = derived_series_uid(src_series, derivation)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.ImplementationVersionName = f"CTDENOISE_{__version__}"[:16]
    rest = list(source.get("ImageType", []))[2:]
    ds.ImageType = ["DERIVED", "SECONDARY", *rest]
    groups = [*ds.get("PerFrameFunctionalGroupsSequence", []), *ds.get("SharedFunctionalGroupsSequence", [])]
    for item in groups:
        for ftype in item.get("CTImageFrameTypeSequence", []):
            if "FrameType" in ftype:
                ftype.FrameType = ["DERIVED", "SECONDARY", *list(ftype.FrameType)[2:]]
    ds.DerivationDescription = derivation.description
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = src_sop
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = _SOURCE_PURPOSE
    ref.PurposeOfReferenceCodeSequence = Sequence([purpose])
    ds.SourceImageSequence = Sequence([ref])
    number = source.get("SeriesNumber")
    try:
        base = int(number) if number not in (None, "") else 0
    except (TypeError, ValueError):
        base = 0
    ds.SeriesNumber = min(base + derivation.series_number_offset, 2**31 - 1)
    desc = str(source.get("SeriesDescription", "") or "").strip()
    suffix = f"[{derivation.series_suffix}]"
    ds.SeriesDescription = (f"{desc[: 64 - len(suffix) - 1]} {suffix}" if desc else suffix)[:64]
    now = _dt.datetime.now()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")


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
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # pydicom warns about invalid values copied from the source (e.g.
        # non-conformant UIDs); the derived object must keep them as they are.
        warnings.simplefilter("ignore", UserWarning)
        ds.save_as(tmp, enforce_file_format=True)
