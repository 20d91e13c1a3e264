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

Its SOP Instance UID, Series Instance UID and Series Number follow the rule
of :mod:`.identity` (deterministic: re-running an interrupted batch adds
files to the *same* output series).
"""

from __future__ import annotations

import copy
from pathlib import Path, PurePosixPath

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage

from denoise.atomic import atomic_path
from denoise.dicom.geometry import is_enhanced
from denoise.dicom.identity import Derivation, derived_series_number, derived_series_uid, expected_sop_uid
from denoise.dicom.padding import Padding, find_padding, keep_padding
from denoise.dicom.pixels import hu_to_stored, stored_range
from denoise.dicom.provenance import code_item, file_meta, processing_time, stamp
from denoise.dicom.reading import lenient, leniently

_INVALIDATED = ("SmallestImagePixelValue", "LargestImagePixelValue",
                "SmallestPixelValueInSeries", "LargestPixelValueInSeries")
ENHANCED_CT_CLASSES = (EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage)


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
