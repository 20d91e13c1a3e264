"""Pixel data <-> Hounsfield units, exactly invertible.

Reading uses pydicom's decoders and its rescale (``apply_rescale``); for
Enhanced CT the slope/intercept come per frame from the functional groups.
Writing inverts it: ``stored = round((HU - intercept) / slope)``, clipped to
the range that BitsStored/PixelRepresentation allow, in the original dtype,
so an unchanged image comes back bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_rescale, get_decoder
from pydicom.uid import JPEG2000TransferSyntaxes

from denoise.dicom.geometry import functional_group, is_enhanced
from denoise.dicom.identity import fill_uids
from denoise.dicom.padding import Padding, find_padding
from denoise.dicom.reading import leniently
from denoise.text import one_line


class PixelDataError(ValueError):
    """Pixel data cannot be decoded or converted to HU (one-line reason)."""


@dataclass
class CTImage:
    """A decoded CT file: its full dataset and its frames in HU."""

    dataset: Dataset
    hu: np.ndarray  # (frames, rows, cols) float32
    rescales: list[tuple[float, float]]  # per frame (slope, intercept)
    padding: Padding | None = None  # the pixels the header declares as padding


def frame_rescales(ds: Dataset) -> list[tuple[float, float]]:
    """(slope, intercept) per frame; raises ValueError when HU cannot be had."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    out = []
    for k in range(n):
        item = functional_group(ds, k, "PixelValueTransformationSequence") if is_enhanced(ds) else None
        src = item if item is not None and "RescaleSlope" in item else ds
        slope, intercept = src.get("RescaleSlope"), src.get("RescaleIntercept")
        if slope is None or intercept is None or slope == "" or intercept == "":
            raise ValueError("missing RescaleSlope/RescaleIntercept: cannot convert to HU")
        try:
            slope, intercept = float(slope), float(intercept)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid rescale values ({slope!r}, {intercept!r})") from exc
        if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
            raise ValueError(f"invalid rescale values (slope {slope}, intercept {intercept})")
        out.append((slope, intercept))
    return out


def rescale_dataset(slope: float, intercept: float) -> Dataset:
    """A minimal dataset carrying one frame's rescale, for ``apply_rescale``."""
    item = Dataset()
    item.RescaleSlope = slope
    item.RescaleIntercept = intercept
    return item


def decoder_problem(ds: Dataset) -> str | None:
    """Why this dataset's pixel data cannot be decoded here, or None."""
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None or not tsyntax.is_compressed:
        return None
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        return f"unsupported transfer syntax {tsyntax.name}"
    if decoder.is_available:
        return None
    options = "; ".join(decoder.missing_dependencies) or "a pydicom pixel-data plugin"
    return (f"no decoder for {tsyntax.name}: install one of: {options} "
            "(the permissive ones: pip install python-gdcm pylibjpeg pylibjpeg-openjpeg)")


def stored_range(bits_stored: int, pixel_representation: int) -> tuple[int, int]:
    """Inclusive range of stored values allowed by BitsStored/PixelRepresentation."""
    if pixel_representation == 1:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def stored_dtype(bits_allocated: int, pixel_representation: int) -> np.dtype:
    return np.dtype(("u" if pixel_representation == 0 else "i") + str(bits_allocated // 8))


@leniently
def preferred_plugin(tsyntax) -> str:
    """The pydicom decoding plugin to use for ``tsyntax`` ("": pydicom's order).

    JPEG 2000 goes to pylibjpeg when it is installed: GDCM, which pydicom tries
    first, aborts the whole process on some corrupt JPEG 2000 headers (an
    uncaught C++ exception) and its bundled openjpeg writes to stderr, while
    pylibjpeg-openjpeg raises an exception naming the problem."""
    if tsyntax in JPEG2000TransferSyntaxes:
        try:
            if "pylibjpeg" in get_decoder(tsyntax).available_plugins:
                return "pylibjpeg"
        except NotImplementedError:
            pass
    return ""


@leniently
def load_ct(path: str | Path) -> CTImage:
    """Read a CT file fully and convert every frame to HU (float32). Empty
    SOP UIDs of the main dataset are filled from the file meta (in memory).
    pydicom's complaints about the file's values are DEBUG records
    (:func:`denoise.dicom.reading.lenient`), whoever calls it."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # pydicom raises many types on corrupt files
        raise PixelDataError(f"unreadable DICOM ({one_line(exc)})") from exc
    fill_uids(ds)
    problem = decoder_problem(ds)
    if problem:
        raise PixelDataError(problem)
    try:
        syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
        ds.pixel_array_options(decoding_plugin=preferred_plugin(syntax))
        stored = ds.pixel_array
        n, rows, cols = int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns)
    except Exception as exc:  # decoders raise RuntimeError/ValueError/... on bad data
        raise PixelDataError(f"cannot decode pixel data ({one_line(exc, 130)})") from exc  # fits the 160 of a reason
    # Check the frame count against the decoded data before frame_rescales loops over it.
    if stored.ndim not in (2, 3) or stored.size != n * rows * cols:
        raise PixelDataError(f"pixel array shape {stored.shape} does not match "
                             f"{n} frame(s) of {rows}x{cols}")
    _check_stored_bits(ds, n * rows * cols)
    try:
        rescales = frame_rescales(ds)
    except ValueError as exc:
        raise PixelDataError(str(exc)) from exc
    stored = stored.reshape(n, rows, cols)
    hu = np.empty(stored.shape, dtype=np.float32)
    for k, (slope, intercept) in enumerate(rescales):
        hu[k] = apply_rescale(stored[k], rescale_dataset(slope, intercept))
    try:
        padding = find_padding(ds, stored)
    except (TypeError, ValueError) as exc:
        raise PixelDataError(f"invalid PixelPaddingValue/PixelPaddingRangeLimit ({one_line(exc)})") from exc
    return CTImage(dataset=ds, hu=hu, rescales=rescales, padding=padding)


def _check_stored_bits(ds: Dataset, count: int) -> None:
    """Refuse native pixel data whose values do not fit BitsStored: decoding
    masks the bits above HighBit, which would silently turn e.g. bone beyond
    the 12-bit range into air (and the output would not round-trip)."""
    bits_stored, bits_allocated = int(ds.BitsStored), int(ds.BitsAllocated)
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if bits_stored >= bits_allocated or (tsyntax is not None and tsyntax.is_encapsulated):
        return
    little = tsyntax is None or tsyntax.is_little_endian
    dtype = stored_dtype(bits_allocated, int(ds.PixelRepresentation)).newbyteorder("<" if little else ">")
    raw = np.frombuffer(ds.PixelData, dtype=dtype, count=count)
    lo, hi = stored_range(bits_stored, int(ds.PixelRepresentation))
    if raw.size and (raw.min() < lo or raw.max() > hi):
        raise PixelDataError(f"stored values {raw.min()}..{raw.max()} do not fit BitsStored {bits_stored} "
                             f"({lo}..{hi}): BitsStored is wrong or the pixel data is corrupt")


def hu_to_stored(hu: np.ndarray, ds: Dataset, rescales: list[tuple[float, float]]) -> np.ndarray:
    """Invert the rescale frame by frame: round, clip to the stored range,
    cast to the dataset's dtype. ``hu`` is (frames, rows, cols)."""
    lo, hi = stored_range(int(ds.BitsStored), int(ds.PixelRepresentation))
    dtype = stored_dtype(int(ds.BitsAllocated), int(ds.PixelRepresentation))
    out = np.empty(hu.shape, dtype=dtype)
    for k, (slope, intercept) in enumerate(rescales):
        values = np.rint((hu[k].astype(np.float64) - intercept) / slope)
        out[k] = np.clip(values, lo, hi)
    return out
