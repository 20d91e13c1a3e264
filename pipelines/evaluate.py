"""Job: compare test CT against reference CT (``ct-denoise evaluate``).

Files are paired by relative path (default), by SOP reference (a derived
file's SourceImageSequence points at its reference, or the SOP UIDs are
equal) or by slice position (same frame of reference and position along the
normal). Metrics per file and their mean, in a stated HU window with
data_range 1; nothing patient-identifying is reported.

Beside the reference metrics, every image kind (reference, test, noisy input,
each baseline) gets the no-reference measures of ``ct-denoise qa`` (noise SD,
NPS peak and mean frequency, edge width, MTF50), all measured where the
reference has uniform tissue and edges; with ``--noisy``, the residual
(noisy - output) of the test and of each baseline too.

When REFERENCE, TEST or NOISY is a NIfTI volume (``.nii``/``.nii.gz``), each
is read as one volume (:func:`denoise.api.read`: NIfTI values are HU after
the header's scaling); they must have one shape and one affine, and are
scored slice by slice with the same code, a slice standing for a file (so a
NIfTI made from a series scores as the series does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from denoise import metrics, quality
from denoise.atomic import write_json
from denoise.batch import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL
from denoise.dicom.matching import MATCH_MODES, match_files
from denoise.dicom.pixels import load_ct
from denoise.dicom.scan import CTFile, ScanResult, scan
from denoise.nifti import is_nifti_path
from denoise.quality.tally import Tally
from denoise.tables import NOISY_LABEL

TEST_LABEL = "test"
REFERENCE_LABEL = "reference"

METRIC_KEYS = ("psnr", "ssim", "rmse_hu", "mse")
__all__ = ["MATCH_MODES", "Evaluation", "FileScore", "match_files", "run"]


@dataclass
class FileScore:
    reference: str  # relative path under the reference root
    test: str
    scores: dict
    quality: dict = field(default_factory=dict)  # label -> no-reference measures of this file


@dataclass
class Evaluation:
    window_hu: tuple[float, float]
    masked: bool
    match: str
    files: list[FileScore] = field(default_factory=list)
    unmatched_reference: list[str] = field(default_factory=list)
    unmatched_test: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per file that failed
    methods: dict = field(default_factory=dict)  # method -> mean scores (+ seconds_per_slice), with --baselines
    test_label: str = TEST_LABEL
    sources: dict = field(default_factory=dict)  # reference/test/noisy roots, for the report
    notes: list[str] = field(default_factory=list)
    tallies: dict[str, Tally] = field(default_factory=dict)  # label -> slices measured, for `quality`

    def tally(self, label: str) -> Tally:
        return self.tallies.setdefault(label, Tally())

    @property
    def quality(self) -> dict:
        """label -> pooled no-reference measures (+ residual vs the noisy input, + 1-D NPS curve)."""
        out = {}
        for label, tally in self.tallies.items():
            pooled, _ = tally.pooled()
            out[label] = {**pooled.summary(), **(tally.residual_mean() if tally.residuals else {}),
                          "nps_curve": pooled.nps_curve(), "esf_curve": pooled.esf_curve()}
        return out

    def mean(self) -> dict:
        if not self.files:
            return {}
        return {k: float(np.mean([f.scores[k] for f in self.files])) for k in METRIC_KEYS}

    @property
    def exit_code(self) -> int:
        if not self.files:
            return EXIT_NOTHING
        return EXIT_PARTIAL if self.problems else EXIT_OK

    def to_dict(self) -> dict:
        return {
            "window_hu": list(self.window_hu),
            "data_range": metrics.DATA_RANGE,
            "body_mask": self.masked,
            "match": self.match,
            "n_matched": len(self.files),
            "mean": self.mean(),
            "files": [{"reference": f.reference, "test": f.test, **f.scores, "quality": f.quality}
                      for f in self.files],
            "unmatched_reference": self.unmatched_reference,
            "unmatched_test": self.unmatched_test,
            "problems": self.problems,
            "test_label": self.test_label,
            "methods": self.methods,
            "sources": self.sources,
            "notes": self.notes,
            "quality": self.quality,
        }


def score_pair(ref: CTFile, test: CTFile, *, window, use_mask: bool) -> tuple[dict, np.ndarray, np.ndarray]:
    """Reference metrics of one pair, and both images in HU."""
    ref_hu, test_hu = load_ct(ref.path).hu, load_ct(test.path).hu
    return score_arrays(ref_hu, test_hu, window=window, use_mask=use_mask), ref_hu, test_hu


def score_arrays(ref_hu: np.ndarray, test_hu: np.ndarray, *, window, use_mask: bool) -> dict:
    """Reference metrics of one pair of images in HU (frames, H, W)."""
    mask = metrics.body_mask(ref_hu) if use_mask else None
    return {k: v for k, v in metrics.compare(ref_hu, test_hu, window=window, mask=mask).items() if k in METRIC_KEYS}


def measure_quality(ref_hu: np.ndarray, spacing, images: dict[str, np.ndarray], tallies: dict[str, Tally], *,
                    noisy: np.ndarray | None = None) -> dict:
    """No-reference measures of each image (frames, H, W) where the reference
    has uniform tissue and edges, frame by frame, into ``tallies`` (and, with
    ``noisy``, each image's residual noisy - image); returns label -> this
    file's measures."""
    per_file = {label: Tally() for label in images}
    for k, ref in enumerate(ref_hu):
        layout = quality.plan(ref, spacing)
        for label, image in images.items():
            res = quality.residual(noisy[k], image[k], layout) if noisy is not None and image is not noisy else None
            per_file[label].add(quality.measure(image[k], layout), res)
    for label, tally in per_file.items():
        tallies.setdefault(label, Tally()).extend(tally)
    return {label: tally.pooled()[0].summary() for label, tally in per_file.items()}


def _measure_outputs(result: Evaluation, spacing, ref_hu, noisy_hu, outputs: dict, test_hu) -> None:
    """No-reference measures of the noisy input and the baseline outputs, and
    the residuals noisy - output of the baselines and of the test image (None: none)."""
    images = dict(outputs)
    if test_hu is not None and test_hu.shape == noisy_hu.shape:
        images[result.test_label] = test_hu
    fresh: dict[str, Tally] = {}
    measure_quality(ref_hu, spacing, images, fresh, noisy=noisy_hu)
    for label, tally in fresh.items():
        if label == result.test_label:  # its measures are in already: only its residuals are new
            result.tally(label).residuals += tally.residuals
        else:
            result.tally(label).extend(tally)


def parse_baselines(text: str | None) -> list[str]:
    """``"nlm,tv"`` -> ["nlm", "tv"]; unknown names are a ValueError listing the valid ones."""
    from denoise.baselines import BASELINES

    names = [n.strip().lower() for n in (text or "").split(",") if n.strip()]
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise ValueError(f"unknown baseline(s) {', '.join(bad)}; valid: {', '.join(BASELINES)}")
    return list(dict.fromkeys(names))


def compare_baselines(result: Evaluation, ref_scan: ScanResult, noisy_scan: ScanResult, names: list[str], *,
                      match: str, use_mask: bool, on_step=None, tested: dict | None = None) -> None:
    """Score the noisy input and each classical baseline run on it against the
    reference (same pairs, window and mask); fills ``result.methods``. Each
    output's no-reference measures and its residual (noisy - output) go into
    ``result.tallies``; so does the residual of the test file that ``tested``
    pairs with the same reference."""
    pairs, _, _ = match_files(ref_scan, noisy_scan, match)
    tested = tested or {}

    def item(ref_ct: CTFile, noisy_ct: CTFile) -> _NoisyItem:
        test_ct = tested.get(ref_ct.relpath)
        return _NoisyItem(str(noisy_ct.relpath), ref_ct.pixel_spacing,
                          lambda: (load_ct(ref_ct.path).hu, load_ct(noisy_ct.path).hu),
                          None if test_ct is None else lambda: load_ct(test_ct.path).hu)

    _baselines(result, [item(r, n) for r, n in pairs], names, use_mask=use_mask, on_step=on_step)


@dataclass
class _NoisyItem:
    """One noisy image to score and denoise with the baselines: a file, or a slice of a volume."""

    name: str
    spacing: tuple[float, float] | None
    load: Callable[[], tuple[np.ndarray, np.ndarray]]  # reference and noisy HU (frames, H, W)
    load_test: Callable[[], np.ndarray] | None  # the test image made from it, where there is one


def _baselines(result: Evaluation, items: list[_NoisyItem], names: list[str], *, use_mask: bool,
               on_step=None) -> None:
    from denoise.baselines import BaselineUnavailable, run_baseline

    if not items:
        result.notes.append("no noisy file matched the reference: no baselines run")
        return
    window = result.window_hu
    sums: dict[str, list[dict]] = {NOISY_LABEL: []}
    seconds: dict[str, float] = {}
    unavailable: set[str] = set()
    n_slices = 0
    for it in items:
        try:
            ref_hu, noisy_hu = it.load()
            mask = metrics.body_mask(ref_hu) if use_mask else None
            score = metrics.compare(ref_hu, noisy_hu, window=window, mask=mask)
        except ValueError as exc:
            result.problems.append(f"{it.name}: {exc}")
            continue
        sums[NOISY_LABEL].append(score)
        n_slices += len(noisy_hu)
        outputs = {NOISY_LABEL: noisy_hu}
        for name in names:
            if name in unavailable:
                continue
            t0 = time.perf_counter()
            try:
                out = np.stack([run_baseline(name, frame, window=window) for frame in noisy_hu])
            except BaselineUnavailable as exc:
                unavailable.add(name)
                result.notes.append(f"{name} skipped: {exc}")
                continue
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
            sums.setdefault(name, []).append(metrics.compare(ref_hu, out, window=window, mask=mask))
            outputs[name] = out
            if on_step is not None:
                on_step(name, it.name)
        _measure_outputs(result, it.spacing, ref_hu, noisy_hu, outputs,
                         it.load_test() if it.load_test is not None else None)
    for name, scores in sums.items():
        if scores:
            row = {k: float(np.mean([s[k] for s in scores])) for k in METRIC_KEYS}
            if name in seconds:
                row["seconds_per_slice"] = seconds[name] / max(n_slices, 1)
            result.methods[name] = row


def run(reference: str | os.PathLike, test: str | os.PathLike, *, match: str = "path",
        window: tuple[float, float] = metrics.DEFAULT_WINDOW, mask: bool = False,
        json_out: str | os.PathLike | None = None, on_pair=None, noisy: str | os.PathLike | None = None,
        baselines: list[str] | None = None, test_label: str = TEST_LABEL, on_step=None,
        on_plan=None) -> Evaluation:
    """Score every matched (reference, test) file pair; optionally write JSON.
    ``on_plan(n)`` is told the number of steps: one per pair, plus one per
    noisy file and baseline; ``on_pair`` and ``on_step`` are called at each."""
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ValueError(f"--window needs low < high, got {low}..{high}")
    if baselines and noisy is None:
        raise ValueError("--baselines needs --noisy: the noisy inputs the baselines denoise")
    if any(is_nifti_path(p) for p in (reference, test, noisy) if p is not None):
        return _run_volumes(reference, test, window=(low, high), mask=mask, json_out=json_out, on_pair=on_pair,
                            noisy=noisy, baselines=baselines, test_label=test_label, on_step=on_step,
                            on_plan=on_plan, match=match)
    ref_scan, test_scan = scan(reference), scan(test)
    pairs, unmatched_ref, unmatched_test = match_files(ref_scan, test_scan, match)
    result = Evaluation(window_hu=(low, high), masked=mask, match=match,
                        unmatched_reference=unmatched_ref, unmatched_test=unmatched_test, test_label=test_label)
    result.sources = {k: str(Path(v).resolve()) for k, v in
                      (("reference", reference), ("test", test), ("noisy", noisy)) if v is not None}
    noisy_scan = scan(noisy) if noisy is not None else None
    if on_plan is not None:
        n_noisy = len(match_files(ref_scan, noisy_scan, match)[0]) if noisy_scan is not None else 0
        on_plan(len(pairs) + n_noisy * len(baselines or []))
    for ref_ct, test_ct in pairs:
        try:
            scores, ref_hu, test_hu = score_pair(ref_ct, test_ct, window=(low, high), use_mask=mask)
        except ValueError as exc:  # unreadable pixels or mismatched shapes
            result.problems.append(f"{test_ct.relpath}: {exc}")
            continue
        measured = measure_quality(ref_hu, ref_ct.pixel_spacing, {REFERENCE_LABEL: ref_hu, test_label: test_hu},
                                   result.tallies)
        result.files.append(FileScore(str(ref_ct.relpath), str(test_ct.relpath), scores, measured))
        if on_pair is not None:
            on_pair(result.files[-1])
    if result.files:
        result.methods[test_label] = result.mean()
    if noisy is not None:
        tested = {r.relpath: t for r, t in pairs}
        compare_baselines(result, ref_scan, noisy_scan, list(baselines or []), match=match, use_mask=mask,
                          on_step=on_step, tested=tested)
    if json_out is not None:
        write_json(json_out, result.to_dict())
    return result



def _run_volumes(reference, test, *, window, mask: bool, json_out, on_pair, noisy, baselines, test_label: str,
                 on_step, on_plan, match: str) -> Evaluation:
    """:func:`run` for volumes (one of them NIfTI): slice z of each stands for a file."""
    from denoise.api import read

    named = {"reference": reference, "test": test, **({"noisy": noisy} if noisy is not None else {})}
    volumes = {}
    for side, path in named.items():
        try:
            volumes[side] = read(path)
        except ValueError as exc:
            raise ValueError(f"{side}: {exc}") from None
    ref = volumes["reference"]
    for side, vol in volumes.items():
        if vol.shape != ref.shape:
            raise ValueError(f"{side} {named[side]} has shape {vol.shape}, the reference {ref.shape}: "
                             "not the same volume")
        if not np.allclose(vol.affine, ref.affine, atol=1e-3):
            raise ValueError(f"{side} {named[side]} lies on another voxel grid than the reference "
                             "(their affines differ)")
    result = Evaluation(window_hu=window, masked=mask, match="volume", test_label=test_label)
    result.sources = {k: str(Path(v).resolve()) for k, v in named.items()}
    spacing = ref.spacing_mm[1:]
    slices = range(ref.shape[0])

    def label(path, z: int) -> str:
        return f"{Path(path).name} z={z}"

    if on_plan is not None:
        on_plan(len(slices) * (1 + (len(baselines or []) if noisy is not None else 0)))
    test_vol = volumes["test"]
    for z in slices:
        ref_hu, test_hu = ref.hu[z:z + 1], test_vol.hu[z:z + 1]
        scores = score_arrays(ref_hu, test_hu, window=window, use_mask=mask)
        measured = measure_quality(ref_hu, spacing, {REFERENCE_LABEL: ref_hu, test_label: test_hu}, result.tallies)
        result.files.append(FileScore(label(reference, z), label(test, z), scores, measured))
        if on_pair is not None:
            on_pair(result.files[-1])
    if result.files:
        result.methods[test_label] = result.mean()
    if noisy is not None:
        vol = volumes["noisy"]
        items = [_NoisyItem(label(noisy, z), spacing, lambda z=z: (ref.hu[z:z + 1], vol.hu[z:z + 1]),
                            lambda z=z: test_vol.hu[z:z + 1]) for z in slices]
        _baselines(result, items, list(baselines or []), use_mask=mask, on_step=on_step)
    if json_out is not None:
        write_json(json_out, result.to_dict())
    return result
