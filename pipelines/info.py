"""Job: list the CT series under a path and the files skipped (``ct-denoise info``).

Each series gets its number in the listing (``index``, 1-based, in the order
listed: what ``ct-denoise adapt --series`` takes, as it takes the full
SeriesInstanceUID) and is described by what CT users look for: DICOM series
number, geometry (size, pixel spacing, slice thickness and the spacing of
the slice positions), kernel, kVp, exposure, CTDIvol, scanner, ORIGINAL or
DERIVED, body part and series description. The summary never includes
patient names or IDs.

A ``.nii``/``.nii.gz`` PATH is one volume (:func:`denoise.nifti.read_nifti`:
values are HU after the header's scaling; a range that is not CT is refused):
one row with its geometry, how it is stored (axes, data type, scaling) and
what a JSON sidecar states (kernel, thickness, series).
"""

from __future__ import annotations

import os

from denoise.dicom.scan import ScanResult, Series, scan
from denoise.nifti import is_nifti_path, read_nifti
from denoise.text import short_uid
from denoise.volume import Volume


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def series_row(series: Series, index: int = 1) -> dict:
    first = series.files[0]
    spacing = first.pixel_spacing
    return {
        "index": index,  # what `ct-denoise adapt --series` takes (1-based, in the order listed)
        "series": short_uid(series.uid),  # as the table shows it
        "series_uid": series.uid,
        "series_number": series.number,
        "slices": series.n_slices,
        "files": len(series.files),
        "size": ", ".join(f"{r}x{c}" for r, c in series.sizes),
        "pixel_spacing_mm": [round(v, 4) for v in spacing] if spacing else None,
        "slice_thickness_mm": _round(series.slice_thickness),
        "slice_spacing_mm": round(series.slice_spacing, 4) if series.slice_spacing else None,
        "kernel": series.kernel,
        "kvp": _round(series.kvp, 1),
        "exposure_mas": _round(series.exposure_mas, 1),
        "tube_current_ma": _round(series.tube_current_ma, 1),
        "exposure_time_ms": _round(series.exposure_time_ms, 1),
        "ctdi_vol_mgy": _round(series.ctdi_vol_mgy, 2),
        "manufacturer": series.manufacturer,
        "model": series.model_name,
        "image_type": series.image_type,
        "transfer_syntax": ", ".join(series.transfer_syntaxes),
        "description": series.description,
        "warnings": series.warnings,
    }


def summarize(result: ScanResult) -> dict:
    return {
        "series": [series_row(s, k) for k, s in enumerate(result.series, 1)],
        "skipped": [{"file": str(s.relpath), "reason": s.reason, "bad": s.bad} for s in result.skipped],
    }


def nifti_row(volume: Volume, index: int = 1) -> dict:
    """The row of a NIfTI volume: the keys of :func:`series_row` (what the file does not state: None)
    and how it is stored (``axes_on_disk``, ``dtype``, ``scl_slope``, ``scl_inter``)."""
    src = volume.source
    z, y, x = volume.shape
    uid = src.get("series_uid")
    return {
        "index": index,
        "kind": "nifti",
        "file": src["file"],
        "series": os.path.basename(src["file"]),  # as the table shows it: the file's name
        "series_uid": uid,
        "series_number": src.get("series_number"),
        "slices": z,
        "files": 1,
        "size": f"{y}x{x}",
        "pixel_spacing_mm": [round(v, 4) for v in volume.spacing_mm[1:]],
        "slice_thickness_mm": _round(src.get("slice_thickness_mm")),
        "slice_spacing_mm": round(volume.spacing_mm[0], 4),
        "kernel": src.get("kernel"),
        "kvp": None, "exposure_mas": None, "tube_current_ma": None, "exposure_time_ms": None, "ctdi_vol_mgy": None,
        "manufacturer": None, "model": None, "image_type": None,
        "transfer_syntax": f"NIfTI {src['dtype']}, {src['axes_on_disk']}",
        "axes_on_disk": src["axes_on_disk"],
        "dtype": src["dtype"],
        "scl_slope": src["scl_slope"],
        "scl_inter": src["scl_inter"],
        "description": None,
        "warnings": [],
    }


def run(path: str | os.PathLike) -> dict:
    """Scan ``path`` and return a JSON-able summary (series and skipped files); a NIfTI file is read
    as one volume (FileNotFoundError, or ValueError with a one-line reason)."""
    if is_nifti_path(path):
        return {"series": [nifti_row(read_nifti(path))], "skipped": []}
    return summarize(scan(path))
