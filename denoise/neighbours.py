"""Which slices of a series a 2.5-D model may take as a slice's neighbours.

Neighbouring slices share a slice's anatomy but not its noise, so a model
that sees them tells the two apart better. That holds when the slices are
thin, evenly spaced and do not overlap: in an overlapping reconstruction
(spacing below the thickness, e.g. 0.625 mm at 1.25 mm) adjacent slices
share noise, so the neighbours are taken ``step`` slices away, far enough
that their slabs overlap by at most 20 % of the thickness; slices further
apart than :data:`MAX_DISTANCE_MM` no longer share enough anatomy (thick
slices), and uneven or unknown positions, multi-frame files and single
files give no neighbours: those are denoised slice by slice (2-D).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from denoise.dicom.scan import Series

MAX_DISTANCE_MM = 3.0
MAX_OVERLAP = 0.2  # of the thickness: neighbours' slabs may overlap this much
SPAN = 2  # neighbours listed on each side (a model takes up to this many)


@dataclass(frozen=True)
class Neighbourhood:
    """The neighbours of every slice of a series, or why it has none.

    ``paths[p]`` lists the slices ``step``, ``2 step`` ... away on each side
    of the slice at ``p``, in slice order (k-2s, k-s, k+s, k+2s for
    :data:`SPAN` 2), None beyond the ends of the series; empty when
    ``reason`` says why the series is denoised slice by slice.
    """

    paths: dict[Path, tuple[Path | None, ...]]
    step: int = 0
    distance_mm: float = 0.0
    reason: str = ""

    def of(self, path: Path, n: int) -> tuple[Path | None, ...]:
        """The ``n`` nearest neighbours on each side of ``path`` (empty: none)."""
        around = self.paths.get(path, ())
        return around[SPAN - n:SPAN + n] if around else ()


def neighbourhood(series: Series) -> Neighbourhood:
    """The neighbours a 2.5-D model may take in ``series`` (see the module docstring)."""
    files = series.files
    if len(files) < 2:
        return Neighbourhood({}, reason="a single slice")
    if any(f.n_frames > 1 for f in files):
        return Neighbourhood({}, reason="multi-frame files")
    if any(f.position is None for f in files):
        return Neighbourhood({}, reason="slice positions unknown")
    if len({(f.rows, f.columns) for f in files}) > 1:
        return Neighbourhood({}, reason="slices of different sizes")
    uneven = [w for w in series.warnings if "uneven" in w or "duplicate" in w]
    if uneven:
        return Neighbourhood({}, reason=uneven[0])
    spacing = series.slice_spacing or 0.0
    if spacing <= 0:
        return Neighbourhood({}, reason="slices at one position")
    thickness = series.slice_thickness or spacing
    # the nearest slice whose slab overlaps this one's by at most MAX_OVERLAP of the thickness
    step = max(1, math.ceil((1 - MAX_OVERLAP) * thickness / spacing - 1e-6))
    distance = step * spacing
    if distance > MAX_DISTANCE_MM + 1e-6:
        what = (f"slices {spacing:.3g} mm apart" if step == 1 else f"overlapping slices ({spacing:.3g} mm apart, "
                f"{thickness:.3g} mm thick): neighbours {distance:.3g} mm apart")
        return Neighbourhood({}, step, distance, f"{what}, more than {MAX_DISTANCE_MM:g} mm")
    n = len(files)
    offsets = [d * step for d in range(-SPAN, SPAN + 1) if d]
    paths = {f.path: tuple(files[k + d].path if 0 <= k + d < n else None for d in offsets)
             for k, f in enumerate(files)}
    return Neighbourhood(paths, step, distance)
