"""Job: list the CT series under a path and the files skipped (``ct-denoise info``).

The summary names series by a shortened SeriesInstanceUID and describes them
by body part and series description; it never includes patient names or IDs.
"""

from __future__ import annotations

import os

from denoise.dicom.scan import ScanResult, Series, scan
from denoise.text import short_uid


def series_row(series: Series) -> dict:
    first = series.files[0]
    spacing = first.pixel_spacing
    return {
        "series": short_uid(series.uid),
        "slices": series.n_slices,
        "files": len(series.files),
        "size": ", ".join(f"{r}x{c}" for r, c in series.sizes),
        "pixel_spacing_mm": [round(v, 4) for v in spacing] if spacing else None,
        "slice_spacing_mm": round(series.slice_spacing, 4) if series.slice_spacing else None,
        "transfer_syntax": ", ".join(series.transfer_syntaxes),
        "description": series.description,
        "warnings": series.warnings,
    }


def summarize(result: ScanResult) -> dict:
    return {
        "series": [series_row(s) for s in result.series],
        "skipped": [{"file": str(s.relpath), "reason": s.reason, "bad": s.bad} for s in result.skipped],
    }


def run(path: str | os.PathLike) -> dict:
    """Scan ``path`` and return a JSON-able summary (series and skipped files)."""
    return summarize(scan(path))
