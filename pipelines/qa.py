"""Job: image quality without a clean reference (``ct-denoise qa``).

Measures noise SD (HU), the noise power spectrum's peak and mean frequency
(cycles/mm) and the 10-90 % edge width (mm, with an MTF50 estimate) of every
CT slice under BEFORE, per file, per series and on average. With AFTER (its
processed version, paired as ``evaluate`` pairs files) both are measured in
the same places, found on BEFORE, and the residual BEFORE - AFTER is scored
too. The library functions are in :mod:`denoise.quality`.

Per series, the NPS comes from the difference of neighbouring slices
(divided by sqrt 2: noise only, the anatomy cancels) when the slices are at
most :data:`NEIGHBOUR_GAP_MM` apart and that gives at least
:data:`MIN_NEIGHBOUR_ROIS` ROIs; otherwise from each slice's own uniform
ROIs. Series are read one slice at a time.

Only relative paths, shortened series UIDs and numbers are reported: no
patient identifiers.

A NIfTI BEFORE (and AFTER) is one volume (:func:`denoise.nifti.read_nifti`:
values are HU after the header's scaling): measured slice by slice with the
same code, as one file and one series, its slices ``spacing_mm[0]`` apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from denoise import quality
from denoise.atomic import finite, write_json
from denoise.batch import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL
from denoise.dicom.geometry import frame_geometry, slice_normal
from denoise.dicom.matching import MATCH_MODES, match_files
from denoise.dicom.pixels import CTImage, PixelDataError, load_ct
from denoise.dicom.scan import CTFile, ScanResult, Series, scan
from denoise.nifti import is_nifti_path
from denoise.quality.tally import Tally, compare_tallies
from denoise.tables import QA_FORMAT
from denoise.text import one_line, short_uid

VERSION = 1
NEIGHBOUR_GAP_MM = 3.0  # thicker spacing: anatomy differs too much between neighbours
MIN_NEIGHBOUR_ROIS = 8


@dataclass
class FileQA:
    file: str  # relative path under BEFORE
    series: str
    frames: int = 0
    after_file: str | None = None
    result: dict = field(default_factory=dict)  # before/after/residual/change
    notes: list[str] = field(default_factory=list)
    failed: str | None = None  # one-line reason when it could not be measured at all

    @property
    def status(self) -> str:
        return "failed" if self.failed else "measured"

    def to_dict(self) -> dict:
        out = {"file": self.file}
        if self.after_file is not None:
            out["after_file"] = self.after_file
        out.update(series=self.series, frames=self.frames, **self.result, notes=self.notes)
        if self.failed:
            out["failed"] = self.failed
        return out


@dataclass
class QAResult:
    paired: bool
    match: str
    rois: list | None
    files: list[FileQA] = field(default_factory=list)
    series: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "file: reason" of files that failed
    ignored: list[str] = field(default_factory=list)  # "file: reason" of files that are not CT images
    unmatched_before: list[str] = field(default_factory=list)
    unmatched_after: list[str] = field(default_factory=list)
    sources: dict = field(default_factory=dict)

    @property
    def measured(self) -> list[FileQA]:
        return [f for f in self.files if not f.failed]

    def mean(self) -> dict:
        """Mean of every number over the measured files."""
        rows = self.measured
        out: dict = {"files": len(rows)}
        sides = ("before", "after") if self.paired else ("before",)
        for side in sides:
            out[side] = quality.mean_measurement([f.result[side] for f in rows if side in f.result])
        if self.paired:
            for key in quality.RESIDUAL_KEYS:
                out[key] = quality.mean_measurement([f.result for f in rows], [key])[key]
            out["change"] = quality.change(out["before"], out["after"])
        return out

    @property
    def exit_code(self) -> int:
        if not self.files:
            return EXIT_NOTHING
        return EXIT_PARTIAL if self.problems else EXIT_OK

    def notes(self) -> list[str]:
        return [f"{f.file}: {n}" for f in self.files for n in f.notes]

    def to_dict(self) -> dict:
        return finite({
            "format": QA_FORMAT, "version": VERSION, "paired": self.paired, "match": self.match,
            "rois": self.rois,
            "settings": {"soft_tissue_hu": list(quality.SOFT_TISSUE_HU),
                         "noise_window_mm": quality.noise_level.WINDOW_MM, "nps_roi_mm": quality.nps.ROI_MM,
                         "nps_tissue_hu": list(quality.nps.NPS_TISSUE_HU), "neighbour_gap_mm": NEIGHBOUR_GAP_MM,
                         "edge_profile_mm": quality.edges.HALF_LENGTH_MM},
            "files": [f.to_dict() for f in self.files],
            "series": self.series,
            "mean": self.mean(),
            "problems": self.problems,
            "ignored": self.ignored,
            "unmatched_before": self.unmatched_before,
            "unmatched_after": self.unmatched_after,
            "notes": self.notes(),
            "sources": self.sources,
        })


def parse_roi(text: str) -> tuple[int, int, int, int]:
    """``"x,y,w,h"`` -> (x, y, w, h) pixels; ValueError naming the text."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--roi {text!r}: expected x,y,w,h (four integers, pixels)") from None
    if x < 0 or y < 0 or w < 2 or h < 2:
        raise ValueError(f"--roi {text!r}: x and y must be >= 0, w and h >= 2")
    return x, y, w, h


def _frame_positions(ct: CTImage) -> list[float | None]:
    """Each frame's position along the slice normal (mm), None where unknown."""
    geom = frame_geometry(ct.dataset)
    normal = slice_normal(geom.orientation) if geom.orientation is not None else None
    return [float(np.dot(p, normal)) if normal is not None and p is not None else None for p in geom.positions]


@dataclass
class _Previous:
    """The last slice measured in a series, for the neighbour difference."""

    position: float | None
    layout: quality.Layout
    before: np.ndarray
    after: np.ndarray | None


class _SeriesRun:
    """Measures one series slice by slice (only the previous slice is kept)."""

    def __init__(self, series: Series | None, rois, *, name: str = "", description: str | None = None):
        self.series, self.rois = series, rois
        self.name = short_uid(series.uid) if series is not None else name
        self.description = series.description if series is not None else description
        self.before, self.after = Tally(), Tally()
        self.previous: _Previous | None = None
        self.slices = self.files = 0

    def measure_file(self, entry: FileQA, ct: CTFile, after_path: Path | None) -> None:
        before = load_ct(ct.path)
        after = load_ct(after_path) if after_path is not None else None
        if after is not None and after.hu.shape != before.hu.shape:
            raise ValueError(f"after file {entry.after_file} has shape {tuple(after.hu.shape)}, "
                             f"before has {tuple(before.hu.shape)}")
        self.measure_slices(entry, _frame_positions(before), before.hu, after.hu if after is not None else None,
                            ct.pixel_spacing)

    def measure_slices(self, entry: FileQA, positions, before: np.ndarray, after: np.ndarray | None,
                       spacing) -> None:
        """Measure the slices of one file (or volume) in HU, at ``positions`` along the normal (mm)."""
        file_before, file_after = Tally(), Tally()
        notes: list[str] = []
        for k, (position, b) in enumerate(zip(positions, before, strict=True)):
            a = after[k] if after is not None else None
            layout = quality.plan(b, spacing, rois=self.rois)  # ValueError: a user ROI outside this image
            notes += [n for n in layout.notes if n not in notes]
            qb = quality.measure(b, layout)
            file_before.add(qb)
            self.before.add(qb)
            if a is not None:
                qa, res = quality.measure(a, layout), quality.residual(b, a, layout)
                file_after.add(qa, res)
                self.after.add(qa, res)
            self._neighbour(position, layout, b, a)
            self.slices += 1
        entry.frames = len(before)
        entry.result = compare_tallies(file_before, file_after if after is not None else None)
        for key in ("nps_curve", "esf_curve", "nps_method"):  # series-level only
            entry.result.pop(key, None)
        entry.notes = notes
        self.files += 1

    def _neighbour(self, position, layout, b, a) -> None:
        prev = self.previous
        if (prev is not None and prev.position is not None and position is not None
                and 0 < abs(position - prev.position) <= NEIGHBOUR_GAP_MM):
            corners = quality.neighbour_rois(prev.before, b, prev.layout, layout)
            self.before.add_neighbour(quality.neighbour_nps(prev.before, b, corners, layout))
            if a is not None and prev.after is not None:
                self.after.add_neighbour(quality.neighbour_nps(prev.after, a, corners, layout))
        self.previous = _Previous(position, layout, b, a)

    def summary(self, paired: bool) -> dict:
        out = {"series": self.name, "description": self.description,
               "files": self.files, "slices": self.slices}
        out.update(compare_tallies(self.before, self.after if paired else None,
                                   min_neighbour_rois=MIN_NEIGHBOUR_ROIS))
        return out


def _pairs(before: ScanResult, after: ScanResult | None, match: str, result: QAResult) -> dict[str, CTFile]:
    if after is None:
        return {}
    pairs, unmatched_before, unmatched_after = match_files(before, after, match)
    result.unmatched_before, result.unmatched_after = unmatched_before, unmatched_after
    return {str(b.relpath): a for b, a in pairs}


def run(before: str | os.PathLike, after: str | os.PathLike | None = None, *, match: str = "path",
        rois=None, json_out: str | os.PathLike | None = None, on_plan=None, on_file=None) -> QAResult:
    """Measure BEFORE (and AFTER) file by file; optionally write the JSON.

    ``rois`` is a list of (x, y, w, h) pixel ROIs that replace the automatic
    regions for noise SD and NPS. ``on_plan(n_files)`` and ``on_file(FileQA)``
    report progress. Raises ``FileNotFoundError`` for a missing path and
    ``ValueError`` for a bad ``match``.
    """
    if match not in MATCH_MODES:
        raise ValueError(f"--match must be one of {', '.join(MATCH_MODES)}, got {match!r}")
    rois = [tuple(int(v) for v in r) for r in rois] if rois else None
    if is_nifti_path(before) or (after is not None and is_nifti_path(after)):
        result = _run_volume(before, after, match=match, rois=rois, on_plan=on_plan, on_file=on_file)
        if json_out is not None:
            write_json(json_out, result.to_dict())
        return result
    before_scan = scan(before)
    after_scan = scan(after) if after is not None else None
    result = QAResult(paired=after is not None, match=match, rois=[list(r) for r in rois] if rois else None)
    result.sources = {k: str(Path(v).resolve()) for k, v in (("before", before), ("after", after)) if v is not None}
    for side, scanned in (("before", before_scan), ("after", after_scan)):
        prefix = f"{side} " if after_scan is not None else ""  # which folder, when there are two
        for s in scanned.skipped if scanned is not None else []:
            (result.problems if s.bad else result.ignored).append(f"{prefix}{s.relpath}: {s.reason}")
    partner = _pairs(before_scan, after_scan, match, result)
    todo = [(s, ct) for s in before_scan.series for ct in s.files
            if after_scan is None or str(ct.relpath) in partner]
    if on_plan is not None:
        on_plan(len(todo))
    for series in before_scan.series:
        files = [ct for s, ct in todo if s is series]
        if not files:
            continue
        runner = _SeriesRun(series, rois)
        for ct in files:
            other = partner.get(str(ct.relpath))
            entry = FileQA(file=str(ct.relpath), series=short_uid(series.uid),
                           after_file=str(other.relpath) if other is not None else None)
            try:
                runner.measure_file(entry, ct, other.path if other is not None else None)
            except (PixelDataError, ValueError) as exc:
                entry.failed = one_line(exc)
                result.problems.append(f"{entry.file}: {entry.failed}")
            result.files.append(entry)
            if on_file is not None:
                on_file(entry)
        if runner.slices:
            result.series.append(runner.summary(result.paired))
    if json_out is not None:
        write_json(json_out, result.to_dict())
    return result


def _run_volume(before, after, *, match: str, rois, on_plan, on_file) -> QAResult:
    """:func:`run` for NIfTI: BEFORE (and AFTER, on the same voxel grid) as one file and one series."""
    from denoise.api import read

    volumes = []
    for side, path in (("before", before), ("after", after)):
        if path is not None:
            if not is_nifti_path(path):
                raise ValueError(f"{side} {path}: BEFORE and AFTER are both NIfTI volumes, or both DICOM")
            volumes.append(read(path))  # FileNotFoundError, ValueError (not CT in HU): one line
    b = volumes[0]
    a = volumes[1] if len(volumes) > 1 else None
    if a is not None and a.shape != b.shape:
        raise ValueError(f"after {after} has shape {a.shape}, before {b.shape}: not the same volume")
    if a is not None and not np.allclose(a.affine, b.affine, atol=1e-3):
        raise ValueError(f"after {after} lies on another voxel grid than before (their affines differ)")
    result = QAResult(paired=a is not None, match=match, rois=[list(r) for r in rois] if rois else None)
    result.sources = {k: str(Path(v).resolve()) for k, v in (("before", before), ("after", after)) if v is not None}
    name = Path(before).name
    entry = FileQA(file=name, series=name, after_file=Path(after).name if after is not None else None)
    if on_plan is not None:
        on_plan(1)
    runner = _SeriesRun(None, rois, name=name, description=b.source.get("description"))
    positions = [z * b.spacing_mm[0] for z in range(b.shape[0])]
    try:
        runner.measure_slices(entry, positions, b.hu, a.hu if a is not None else None, b.spacing_mm[1:])
    except ValueError as exc:  # a --roi outside the image
        raise ValueError(one_line(exc)) from None
    result.files.append(entry)
    if on_file is not None:
        on_file(entry)
    result.series.append(runner.summary(result.paired))
    return result
