"""Job: list the CT series under a path and the files skipped (``ct-denoise info``).

Each series gets its number in the listing (``index``, 1-based, in the order
listed: what ``ct-denoise adapt --series`` takes, as it takes the full
SeriesInstanceUID) and is described by what CT users look for: DICOM series
number, geometry (size, pixel spacing, slice thickness and the spacing of
the slice positions), kernel, kVp, exposure, CTDIvol, scanner, ORIGINAL or
DERIVED, body part and series description. The summary never includes
patient names or IDs.
"""

from __future__ import annotations

import os

from denoise.dicom.scan import ScanResult, Series, scan
from denoise.text import short_uid


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


def run(path: str | os.PathLike) -> dict:
    """Scan ``path`` and return a JSON-able summary (series and skipped files)."""
    return summarize(scan(path))
