"""Job: compare test CT against reference CT (``ct-denoise evaluate``).

Files are paired by relative path (default), by SOP reference (a derived
file's SourceImageSequence points at its reference, or the SOP UIDs are
equal) or by slice position (same frame of reference and position along the
normal). Metrics per file and their mean, in a stated HU window with
data_range 1; nothing patient-identifying is reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from denoise import metrics
from denoise.atomic import write_json
from denoise.dicom.pixels import load_ct
from denoise.dicom.scan import CTFile, ScanResult, scan

MATCH_MODES = ("path", "sop", "position")
METRIC_KEYS = ("psnr", "ssim", "rmse_hu", "mse")


@dataclass
class FileScore:
    reference: str  # relative path under the reference root
    test: str
    scores: dict


@dataclass
class Evaluation:
    window_hu: tuple[float, float]
    masked: bool
    match: str
    files: list[FileScore] = field(default_factory=list)
    unmatched_reference: list[str] = field(default_factory=list)
    unmatched_test: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per file that failed

    def mean(self) -> dict:
        if not self.files:
            return {}
        return {k: float(np.mean([f.scores[k] for f in self.files])) for k in METRIC_KEYS}

    def to_dict(self) -> dict:
        return {
            "window_hu": list(self.window_hu),
            "data_range": metrics.DATA_RANGE,
            "body_mask": self.masked,
            "match": self.match,
            "n_matched": len(self.files),
            "mean": self.mean(),
            "files": [{"reference": f.reference, "test": f.test, **f.scores} for f in self.files],
            "unmatched_reference": self.unmatched_reference,
            "unmatched_test": self.unmatched_test,
            "problems": self.problems,
        }


def _position_key(ct: CTFile) -> tuple | None:
    if ct.position is None:
        return None
    return (ct.frame_of_reference_uid, round(ct.position, 2), ct.rows, ct.columns, ct.n_frames)


def _key(ct: CTFile, how: str, *, as_test: bool):
    if how == "path":
        return str(ct.relpath)
    if how == "sop":
        return (ct.source_sop_uid or ct.sop_uid) if as_test else ct.sop_uid
    return _position_key(ct)


def match_files(ref: ScanResult, test: ScanResult,
                how: str) -> tuple[list[tuple[CTFile, CTFile]], list[str], list[str]]:
    """Pairs (reference, test) plus the relative paths left unmatched."""
    if how not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {how!r}")
    ref_files, test_files = ref.files, test.files
    if ref.root.is_file() and test.root.is_file() and len(ref_files) == len(test_files) == 1:
        return [(ref_files[0], test_files[0])], [], []
    index: dict = {}
    ambiguous = set()
    for ct in ref_files:
        key = _key(ct, how, as_test=False)
        if key is None:
            continue
        if key in index:
            ambiguous.add(key)
        index[key] = ct
    pairs, used, unmatched_test = [], set(), []
    for ct in test_files:
        key = _key(ct, how, as_test=True)
        if key is None or key in ambiguous or key not in index or key in used:
            unmatched_test.append(str(ct.relpath))
            continue
        used.add(key)
        pairs.append((index[key], ct))
    matched_ref = {id(r) for r, _ in pairs}
    unmatched_ref = [str(ct.relpath) for ct in ref_files if id(ct) not in matched_ref]
    return pairs, unmatched_ref, unmatched_test


def score_pair(ref: CTFile, test: CTFile, *, window, use_mask: bool) -> dict:
    ref_hu, test_hu = load_ct(ref.path).hu, load_ct(test.path).hu
    mask = metrics.body_mask(ref_hu) if use_mask else None
    return {k: v for k, v in metrics.compare(ref_hu, test_hu, window=window, mask=mask).items()
            if k in METRIC_KEYS}


def run(reference: str | os.PathLike, test: str | os.PathLike, *, match: str = "path",
        window: tuple[float, float] = metrics.DEFAULT_WINDOW, mask: bool = False,
        json_out: str | os.PathLike | None = None, on_pair=None) -> Evaluation:
    """Score every matched (reference, test) file pair; optionally write JSON."""
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ValueError(f"--window needs low < high, got {low}..{high}")
    ref_scan, test_scan = scan(reference), scan(test)
    pairs, unmatched_ref, unmatched_test = match_files(ref_scan, test_scan, match)
    result = Evaluation(window_hu=(low, high), masked=mask, match=match,
                        unmatched_reference=unmatched_ref, unmatched_test=unmatched_test)
    for ref_ct, test_ct in pairs:
        try:
            scores = score_pair(ref_ct, test_ct, window=(low, high), use_mask=mask)
        except ValueError as exc:  # unreadable pixels or mismatched shapes
            result.problems.append(f"{test_ct.relpath}: {exc}")
            continue
        result.files.append(FileScore(str(ref_ct.relpath), str(test_ct.relpath), scores))
        if on_pair is not None:
            on_pair(result.files[-1])
    if json_out is not None:
        write_json(json_out, result.to_dict())
    return result

