"""Denoising quality on CT the model never saw, per kernel and vendor group:
the model (defaults, given the true noise SD, and a 2.5-D candidate) against
classical denoisers given what they need to know (BM3D the true noise power
spectrum, NLM the true noise SD), with scan-matched low-dose noise.

Data (evaluation only, never training): the test split of
``data_manifests/real_noise.json`` (patients held out by folder: LIDC chest,
Philips D sharp; RIDER chest, GE STANDARD; ACRIN, GE SOFT; CPTAC chest,
Siemens B70f sharp), one group per vendor and kernel, ``--slices`` slices per
series evenly spread; and the CT slices that ship with pydicom / pydicom-data
(``denoise.samples``).

Conditions, fixed seeds (reference in brackets):

- ``gauss25``, ``gauss50``, ``gauss100``: white Gaussian noise of that SD in
  HU (the slice as acquired);
- ``lowdose1e5``: simulated low dose at I0 = 1e5 photons (the FBP of the
  noiseless sinogram);
- ``matched50``, ``matched25``: scan-matched low dose (the slice as
  acquired). The noise model of each held-out series is measured on the series
  itself (``denoise.scanner_noise.measure_series``: its 2-D NPS and SD map from
  the differences of neighbouring slices), and noise synthesized from it,
  scaled by sqrt(1/f - 1), is added: what a scan of that scanner at dose
  fraction f = 0.5 or 0.25 adds to its own noise. Not for pydicom's samples
  (single files: no series to measure);
- ``clean``: nothing added (the input is the reference).

Methods:

- ``model``: the bundled model (``--model``), 2-D, ``ct-denoise denoise``
  defaults (blind); ``model_sigma``: the same given the true noise SD
  (``--noise-sd``: the Gaussian sigma, else the RMS of the added noise inside
  the body; 0 for clean);
- ``--compare-model PATH`` (label ``model25d`` for a 2.5-D model, else the
  file's stem): blind, each slice with its neighbours where its series allows
  them (``denoise.neighbours``: the slices ``step`` away, none for thick
  slices), the neighbours carrying their own independent noise of the same
  condition; ``model25d_alone``: the same model given the slice alone;
- ``nlm``, ``tv``, ``wavelet``: blind, as ``evaluate --baselines`` runs them;
  ``nlm_sigma``: NLM given the true SD (skimage fast mode, h = 0.8 sigma,
  patch 5, distance 6);
- ``bm3d_sigma``: BM3D given the true SD (white-noise model);
  ``bm3d_psd``: BM3D given the true 2-D noise power spectrum (the ``bm3d``
  package's ``sigma_psd`` array, ``E|FFT2(noise)|^2`` unnormalized, checked at
  start against the scalar call on white noise): for the matched conditions
  the noise model's spectrum on the slice's grid, for low dose the smoothed
  periodogram of (noisy - reference), both scaled to the true SD's variance;
  for white noise it is ``bm3d_sigma``. ``--blind-bm3d`` adds blind BM3D.

Metrics: PSNR and SSIM in the window -1000..1000 HU mapped to [0, 1] (data
range 1), mean over slices; the model's worst slice PSNR gain over the noisy
input; texture, measured as ``ct-denoise qa`` measures it (``denoise.quality``:
the places found on the reference by ``plan``, every image measured there,
pooled over the group's slices): noise SD in uniform soft tissue and the NPS
mean frequency of each output against the reference's; the distance of each
model to the targets (beat BM3D given the true PSD, or sigma for white noise,
by >= 0.5 dB and NLM given sigma by >= 1 dB in mean PSNR, every condition of
every held-out group). On the clean slices, the ``qa`` measures of the model
at every strength level.

    env -u OPENBLAS_CORETYPE python benchmarks/quality.py \\
        --compare-model training/real_noise_ct/checkpoints/last \\
        --json benchmarks/results/quality.json --markdown benchmarks/results/quality.md \\
        --figure benchmarks/results/before_after.png
    python benchmarks/quality.py --slices 1 --no-bm3d     # quick look

BM3D takes 10-25 s per 512x512 call on 2 shared cores, up to 9 calls per
held-out slice. The same comparison for any folder through the CLI:
``ct-denoise noise CLEAN NOISY --sigma 50`` -> ``ct-denoise denoise NOISY DEN`` ->
``ct-denoise evaluate CLEAN DEN --noisy NOISY --baselines nlm,tv,wavelet,bm3d --label model``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage

from denoise import baselines, metrics, quality
from denoise.atomic import finite
from denoise.baselines import BaselineUnavailable, available_baselines, run_baseline
from denoise.body import body_mask
from denoise.conditioning import STRENGTHS
from denoise.inference import DEFAULT_ENSEMBLE, Denoiser
from denoise.manifest import load_manifest, split_files
from denoise.noise import add_gaussian, low_dose_pair
from denoise.samples import sample_ct_files
from denoise.training_data import load_slices

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "data_manifests" / "real_noise.json"
SAMPLES = "pydicom CT samples"
CONDITIONS = (("gauss25", 25.0), ("gauss50", 50.0), ("gauss100", 100.0), ("lowdose1e5", 1e5),
              ("matched50", 0.5), ("matched25", 0.25), ("clean", 0.0))
WINDOW = (-1000.0, 1000.0)
KERNEL_CLASS = {"L": "sharp", "D": "sharp", "LUNG": "sharp", "BONE": "sharp", "B70f": "sharp", "B": "soft",
                "SOFT": "soft", "B30s": "soft", "STANDARD": "standard", "STD+": "standard"}
NLM_SIGMA_H = 0.8  # h = 0.8 sigma with sigma given (skimage's recommendation for fast mode)
PSD_SMOOTH_BINS = 2.0  # Gaussian smoothing (frequency bins) of the low-dose noise periodogram
TARGET_BM3D_DB, TARGET_NLM_DB = 0.5, 1.0
TEXTURE = ("noisy", "model", "model_sigma", "COMPARE", "COMPARE_alone", "nlm_sigma", "bm3d_sigma", "bm3d_psd")


@dataclasses.dataclass
class Case:
    """One slice: HU, pixel spacing (mm) and its neighbours k-n..k-1, k+1..k+n (None: 2-D)."""

    label: str
    hu: np.ndarray
    spacing: float
    context: np.ndarray | None = None


@dataclasses.dataclass
class Group:
    """The slices of one vendor/kernel group, its series' noise model and what is known about it."""

    cases: list[Case]
    noise_model: object | None = None  # denoise.scanner_noise.NoiseModel
    about: dict = dataclasses.field(default_factory=dict)


def _group_name(path: Path) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    vendor = str(ds.get("Manufacturer", "") or "?").split()[0]
    vendor = vendor if len(vendor) <= 3 else vendor.title()
    kernel = ds.get("ConvolutionKernel", "") or "?"
    kernel = str(kernel[0] if isinstance(kernel, pydicom.multival.MultiValue) else kernel)
    part = str(ds.get("BodyPartExamined", "") or "CT").lower()
    return f"{vendor} {kernel} ({KERNEL_CLASS.get(kernel, 'kernel')}), {part}"


def _series(uid: str, folder: Path):
    """The scanned :class:`denoise.dicom.scan.Series` ``uid`` in ``folder``, or None."""
    from denoise.dicom.scan import scan

    return next((s for s in scan(folder).series if s.uid == uid), None)


def load_sets(n_slices: int, neighbours: int = 0, *, log=print) -> dict[str, Group]:
    """{group: Group}: the held-out patients by vendor and kernel (with their noise models and,
    for a 2.5-D model taking ``neighbours`` on each side, each slice's neighbours), then pydicom's samples."""
    from denoise.neighbours import neighbourhood
    from denoise.scanner_noise import measure_series

    sets = {}
    try:
        test = split_files(load_manifest(MANIFEST), "test")
    except Exception as exc:  # the shared data is not on every machine
        log(f"note: held-out patients skipped ({exc})")
        test = []
    by_series: dict[str, list] = {}
    for f in test:
        by_series.setdefault(f.series_uid, []).append(f)
    for uid, files in by_series.items():
        files.sort(key=lambda f: f.slice_index)
        pick = np.linspace(0, len(files) - 1, n_slices + 2).round().astype(int)[1:-1]
        slices = load_slices([files[i].path for i in pick], neighbours=neighbours)
        about = {"series_uid": uid, "folder": files[0].path.parent.name, "files": len(files)}
        series = _series(uid, files[0].path.parent)
        model = None
        if series is not None:
            hood = neighbourhood(series)
            about.update(slice_spacing_mm=series.slice_spacing, slice_thickness_mm=series.slice_thickness,
                         neighbour_step=hood.step if hood.paths else 0, neighbours_reason=hood.reason)
            try:
                model = measure_series(series)
                about["noise_model"] = {"noise_sd_hu": model.noise_sd_hu, "nps_peak_mm": model.peak_mm,
                                        "nps_mean_mm": model.mean_mm, "offset": model.offset, "rois": model.rois,
                                        "note": model.note}
            except ValueError as exc:
                about["noise_model"] = f"not measured: {exc}"
        sets[_group_name(files[0].path)] = Group(
            [Case(s.name, s.hu, s.pixel_spacing_mm or 0.7, s.context if neighbours else None) for s in slices],
            model, about)
    samples = load_slices(sample_ct_files())
    sets[SAMPLES] = Group([Case(s.name, s.hu, s.pixel_spacing_mm or 0.7) for s in samples],
                          about={"note": "single files: no neighbours, no noise model (matched conditions skipped)"})
    return dict(sorted(sets.items(), key=lambda kv: (kv[0] == SAMPLES, kv[0])))


def seed_of(k: int, condition: str, value: float) -> int:
    """The noise seed of slice ``k`` under a condition (the earlier conditions keep their seeds)."""
    if condition.startswith("matched"):
        return 1000 * k + 500 + round(100 * value)
    return 1000 * k + int(value) % 997


def make_pair(hu: np.ndarray, spacing: float, condition: str, value: float, seed: int, noise_model=None):
    """(noisy, reference) of one slice under a condition."""
    rng = np.random.default_rng(seed)
    if condition == "clean":
        return hu.copy(), hu
    if condition.startswith("gauss"):
        return add_gaussian(hu, sigma_hu=value, rng=rng), hu
    if condition.startswith("matched"):
        scale = np.float32(math.sqrt(1.0 / value - 1.0))
        return hu + scale * noise_model.synthesize(hu, rng, pixel_spacing=(spacing, spacing)), hu
    return low_dose_pair(hu, i0=value, pixel_spacing_mm=spacing, rng=rng)


def noisy_context(case: Case, condition: str, value: float, seed: int, noise_model=None):
    """The case's neighbours, each with its own independent noise of the condition (None: 2-D)."""
    if case.context is None:
        return None
    return [make_pair(c, case.spacing, condition, value, seed + 7919 * (j + 1), noise_model)[0]
            for j, c in enumerate(case.context)]


def true_sigma(noisy: np.ndarray, reference: np.ndarray, condition: str, value: float) -> float:
    """The SD of the noise actually added: sigma, or its RMS inside the body (low dose, matched)."""
    if condition == "clean":
        return 0.0
    if condition.startswith("gauss"):
        return value
    body = body_mask(reference)
    return float(np.sqrt(np.mean((noisy - reference)[body] ** 2)))


def full_plane(half: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A real image's spectrum on the rfft2 half-plane (H, W // 2 + 1) completed to (H, W): P(-f) = P(f)."""
    h, w = shape
    full = np.empty(shape, dtype=np.float64)
    full[:, : w // 2 + 1] = half
    cols = np.arange(w // 2 + 1, w)
    full[:, cols] = half[(-np.arange(h)) % h][:, w - cols]
    return full


def unit_psd(condition: str, noisy: np.ndarray, reference: np.ndarray, spacing: float, noise_model=None):
    """The added noise's 2-D power spectrum (H, W), unshifted, mean 1 (unit variance); None for white noise.

    Matched: the noise model's spectrum on the slice's grid (``amplitude ** 2``, what
    :meth:`NoiseModel.synthesize` filters with). Low dose: the periodogram of
    noisy - reference, Gaussian-smoothed over :data:`PSD_SMOOTH_BINS` bins (periodic).
    """
    if condition.startswith("matched"):
        amp = noise_model.amplitude(noisy.shape, (spacing, spacing)).astype(np.float64)
        return full_plane(amp ** 2, noisy.shape)
    if condition.startswith("lowdose"):
        d = np.asarray(noisy, np.float64) - reference
        p = np.abs(np.fft.fft2(d - d.mean())) ** 2
        p = ndimage.gaussian_filter(p, PSD_SMOOTH_BINS, mode="wrap")
        return p / p.mean()
    return None


def _bm3d():
    if not hasattr(np, "trapz"):  # bm3d's bundled bm4d still calls np.trapz (removed in NumPy 2.4)
        np.trapz = np.trapezoid
    return baselines._require("bm3d", "bm3d")


def bm3d_with_psd(noisy: np.ndarray, sigma: float, psd: np.ndarray) -> np.ndarray:
    """BM3D given the noise PSD: ``psd`` (mean 1) x the variance sigma^2, in the ``bm3d`` package's
    normalization (``E|FFT2(noise)|^2``, unnormalized: white noise of SD s is flat at H W s^2); the
    same window map, clipping and pass-through as ``bm3d_sigma`` (:func:`denoise.baselines.denoise_bm3d`)."""
    bm3d = _bm3d()

    def run(x, s):  # s: sigma in window units
        return bm3d.bm3d(x, sigma_psd=psd * (x.size * s * s), stage_arg=bm3d.BM3DStages.ALL_STAGES)
    return baselines._run(noisy, baselines.DEFAULT_WINDOW, sigma, run)


def check_bm3d_psd() -> None:
    """White noise of SD s given as the flat PSD must give what ``sigma_psd = s`` gives."""
    bm3d = _bm3d()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    z = 0.5 + 0.2 * np.sin(xx / 5.0) + 0.2 * ((xx - 32) ** 2 + (yy - 32) ** 2 < 15 ** 2) + 0.05 * rng.standard_normal(
        (64, 64))
    a = bm3d.bm3d(z, sigma_psd=0.05)
    b = bm3d.bm3d(z, sigma_psd=np.full(z.shape, z.size * 0.05 ** 2))
    if not np.allclose(a, b, atol=1e-6):
        raise SystemExit(f"bm3d: a flat PSD does not reproduce sigma_psd = s (max diff {np.abs(a - b).max():.2e}); "
                         "the PSD normalization of this bm3d version differs")


@dataclasses.dataclass
class Runner:
    """Runs every method on one noisy slice."""

    methods: list[str]
    model: Denoiser
    compare: Denoiser | None = None
    compare_label: str = ""

    def __call__(self, noisy, sigma: float, context, psd) -> dict[str, tuple[np.ndarray, float]]:
        outs: dict[str, tuple[np.ndarray, float]] = {}
        for m in self.methods:
            t0 = time.perf_counter()
            if m == "bm3d_psd" and psd is None:  # white noise (or none): the flat PSD is bm3d_sigma itself
                outs[m] = outs["bm3d_sigma"]
                continue
            if m == f"{self.compare_label}_alone" and context is None:
                outs[m] = outs[self.compare_label]
                continue
            out = self.run(m, noisy, sigma, context, psd)
            outs[m] = (out, time.perf_counter() - t0)
        return outs

    def run(self, m: str, noisy, sigma: float, context, psd) -> np.ndarray:
        if m == "model":
            return self.model(noisy)
        if m == "model_sigma":
            return dataclasses.replace(self.model, noise_sd_hu=sigma)(noisy)
        if m == self.compare_label:
            return self.compare(noisy, context)
        if m == f"{self.compare_label}_alone":
            return self.compare(noisy)
        if m == "nlm_sigma":
            return run_baseline("nlm", noisy, sigma_hu=sigma, h_factor=NLM_SIGMA_H)
        if m == "bm3d_sigma":
            return run_baseline("bm3d", noisy, sigma_hu=sigma, sigma_factor=1.0) if sigma > 0 else noisy.copy()
        if m == "bm3d_psd":
            return bm3d_with_psd(noisy, sigma, psd) if sigma > 0 else noisy.copy()
        return run_baseline(m, noisy)


def evaluate(sets: dict[str, Group], runner: Runner, texture: list[str], *, log=print) -> dict:
    """{results: {set: {condition: {method: {psnr, ssim, seconds_per_512[, min_gain_db]}}}},
    texture: {set: {condition: {reference|method: qa numbers}}}, examples}."""
    results, textures, examples = {}, {}, {}
    first = next(iter(sets), None)  # the figure's group: only its examples are kept
    methods = runner.methods
    for set_name, group in sets.items():
        results[set_name], textures[set_name] = {}, {}
        plans = {}
        for cond, value in CONDITIONS:
            if cond.startswith("matched") and group.noise_model is None:
                continue
            acc: dict[str, dict[str, list]] = {}
            parts: dict[str, list] = {}
            t_cond = time.perf_counter()
            for k, case in enumerate(group.cases):
                seed = seed_of(k, cond, value)
                noisy, ref = make_pair(case.hu, case.spacing, cond, value, seed, group.noise_model)
                sigma = true_sigma(noisy, ref, cond, value)
                context = (noisy_context(case, cond, value, seed, group.noise_model)
                           if runner.compare is not None and runner.compare.model.neighbours else None)
                psd = unit_psd(cond, noisy, ref, case.spacing, group.noise_model)
                outs = {"noisy": (noisy, 0.0), **runner(noisy, sigma, context, psd)}
                for m, (out, secs) in outs.items():
                    a = acc.setdefault(m, {"psnr": [], "ssim": [], "secs": []})
                    a["psnr"].append(metrics.psnr(ref, out, window=WINDOW))
                    a["ssim"].append(metrics.ssim(ref, out, window=WINDOW))
                    if case.hu.shape == (512, 512):
                        a["secs"].append(secs)
                # texture, as qa measures it: places found on the reference, every image measured there
                key = (k, cond == "lowdose1e5")
                if key not in plans:
                    plans[key] = quality.plan(ref, (case.spacing, case.spacing))
                layout = plans[key]
                parts.setdefault("reference", []).append(quality.Quality.pool([quality.measure(ref, layout)]))
                for m in texture:
                    parts.setdefault(m, []).append(quality.Quality.pool([quality.measure(outs[m][0], layout)]))
                if k == len(group.cases) // 2 and set_name == first and cond in ("matched25", "gauss50"):
                    examples[(set_name, cond)] = {"reference": ref, **{m: o for m, (o, _) in outs.items()}}
            row = {m: {"psnr": _mean(a["psnr"]), "ssim": _mean(a["ssim"]),
                       "seconds_per_512": float(np.mean(a["secs"])) if a["secs"] and m != "noisy" else None}
                   for m, a in acc.items()}
            if cond != "clean":  # on clean slices the noisy input is the reference itself (infinite PSNR)
                for m in methods:
                    row[m]["min_gain_db"] = float(np.min(np.subtract(acc[m]["psnr"], acc["noisy"]["psnr"])))
            results[set_name][cond] = row
            textures[set_name][cond] = _texture(parts)
            log(f"{set_name:32s} {cond:10s} {time.perf_counter() - t_cond:6.0f} s  "
                + "  ".join(f"{m} {r['psnr']:.2f}" for m, r in row.items()), flush=True)
    return {"results": results, "texture": textures, "examples": examples}


def _texture(parts: dict[str, list]) -> dict:
    """Pooled qa numbers per image kind; ``nps_mean_pct``: NPS mean frequency as % of the reference's."""
    out = {}
    for m, qs in parts.items():
        s = quality.Quality.pool(qs).summary()
        out[m] = {"noise_sd_hu": s["noise_sd_hu"], "nps_mean_freq_mm": s["nps_mean_freq_mm"],
                  "nps_peak_freq_mm": s["nps_peak_freq_mm"], "nps_rois": s["nps_rois"]}
    ref = out["reference"]
    for v in out.values():
        both = v["nps_mean_freq_mm"] is not None and ref["nps_mean_freq_mm"]
        v["nps_mean_pct"] = 100.0 * v["nps_mean_freq_mm"] / ref["nps_mean_freq_mm"] if both else None
        sd = v["noise_sd_hu"] is not None and ref["noise_sd_hu"]
        v["noise_sd_pct"] = 100.0 * v["noise_sd_hu"] / ref["noise_sd_hu"] if sd else None
    return out


def _mean(values) -> float:
    kept = [v for v in values if np.isfinite(v)]
    return float(np.mean(kept)) if kept else float("inf")


def targets(results: dict, models: list[str]) -> dict:
    """{set: {model: {vs_bm3d, vs_nlm_sigma: {worst condition, margin dB beyond the target}}}}.

    Margin = (model - anchor) - target over the mean PSNR of each noisy condition; the anchor is
    ``bm3d_psd`` (BM3D given the true PSD, which is ``bm3d_sigma`` for white noise) and ``nlm_sigma``.
    """
    out = {}
    for set_name, conds in results.items():
        out[set_name] = {}
        for m in models:
            entry = {}
            for anchor, need, key in (("bm3d_psd", TARGET_BM3D_DB, "vs_bm3d"),
                                      ("nlm_sigma", TARGET_NLM_DB, "vs_nlm_sigma")):
                gaps = {c: row[m]["psnr"] - row[anchor]["psnr"] for c, row in conds.items()
                        if c != "clean" and m in row and anchor in row}
                if gaps:
                    worst = min(gaps, key=gaps.get)
                    entry[key] = {"worst_condition": worst, "gap_db": gaps[worst], "margin_db": gaps[worst] - need,
                                  "met": gaps[worst] >= need, "gaps_db": gaps}
            out[set_name][m] = entry
    return out


# Radial frequency bands (cycles/mm) of the "noise kept" columns: where a denoiser's grain goes.
NOISE_BANDS = ((0.0, 0.15), (0.15, 0.3), (0.3, math.inf))


def band_kept(before: quality.Quality, after: quality.Quality) -> list[float | None]:
    """Share of the noise amplitude kept in each of :data:`NOISE_BANDS`: sqrt of the ratio of the
    pooled radial NPS after to before, summed over the band (None where either has no NPS)."""
    if before.nps is None or after.nps is None or before.nps.shape != after.nps.shape:
        return [None] * len(NOISE_BANDS)
    freq, b = quality.radial_nps(before.nps, before.pixel_spacing)
    a = quality.radial_nps(after.nps, after.pixel_spacing)[1]
    kept = []
    for low, high in NOISE_BANDS:
        ring = (freq >= low) & (freq < high) & (freq > 0)
        kept.append(float(np.sqrt(a[ring].sum() / b[ring].sum())) if ring.any() and b[ring].sum() > 0 else None)
    return kept


def clean_input_effects(sets: dict[str, Group], denoiser: Denoiser) -> dict:
    """{set: {strength: measures}} of the model on the slices with nothing added (the qa measures)."""
    out = {}
    for set_name, group in sets.items():
        out[set_name] = {}
        # the places measured and the input's measures are the same at every strength
        layouts = [quality.plan(case.hu, (case.spacing, case.spacing)) for case in group.cases]
        inputs = [quality.measure(case.hu, layout) for case, layout in zip(group.cases, layouts, strict=True)]
        for name, value in STRENGTHS.items():
            rows, outputs = [], []
            for case, layout, measured in zip(group.cases, layouts, inputs, strict=True):
                hu = case.hu
                den = dataclasses.replace(denoiser, strength=value)(hu)
                outputs.append(quality.measure(den, layout))
                before, after = measured.summary(), outputs[-1].summary()
                body = layout.body if layout.body.any() else np.ones(hu.shape, bool)
                rms = float(np.sqrt(np.mean((den - hu)[body] ** 2)))
                nps = before.get("nps_mean_freq_mm"), after.get("nps_mean_freq_mm")
                rows.append({"rms_change_hu": rms, "own_noise_sd_hu": before["noise_sd_hu"],
                             "nps_mean_change_pct": 100.0 * (nps[1] / nps[0] - 1.0) if None not in nps and nps[0] > 0
                             else None,
                             **quality.change(before, after), **quality.residual(hu, den, layout)})
            out[set_name][name] = quality.mean_measurement(rows)
            out[set_name][name]["noise_kept_by_band"] = band_kept(quality.Quality.pool(inputs),
                                                                  quality.Quality.pool(outputs))
            worst = max((r["rms_change_hu"] / r["own_noise_sd_hu"] for r in rows
                         if r["own_noise_sd_hu"] and r["own_noise_sd_hu"] >= 1.0),  # noise-free synthetic: no ratio
                        default=None)
            out[set_name][name]["worst_rms_over_noise"] = worst
            out[set_name][name]["worst_edge_change_pct"] = max(
                (abs(r["edge_width_change_pct"]) for r in rows if r["edge_width_change_pct"] is not None),
                default=None)
    return out


def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def psnr_table(conds: dict, methods: list[str]) -> list[str]:
    cols = ["noisy"] + methods
    lines = ["| condition | " + " | ".join(cols) + " | model: worst slice |", "|---|" + "---|" * (len(cols) + 1)]
    for cond, row in conds.items():
        if cond == "clean":
            continue
        best_p = max(row[m]["psnr"] for m in methods)
        best_s = max(row[m]["ssim"] for m in methods)
        cells = []
        for m in cols:
            p, s = row[m]["psnr"], row[m]["ssim"]
            cp = f"**{p:.2f}**" if m != "noisy" and p == best_p else f"{p:.2f}"
            cs = f"**{s:.3f}**" if m != "noisy" and s == best_s else f"{s:.3f}"
            cells.append(f"{cp} / {cs}")
        lines.append(f"| {cond} | " + " | ".join(cells) + f" | {row['model']['min_gain_db']:+.2f} dB |")
    noisy_conds = [c for c in conds if c != "clean"]
    means = {m: np.mean([conds[c][m]["psnr"] for c in noisy_conds]) for m in cols}
    lines.append("| mean PSNR | " + " | ".join(f"{means[m]:.2f}" for m in cols) + " | |")
    clean = conds.get("clean")
    if clean:
        lines.append("| clean input (PSNR vs itself) | " + " | ".join(
            "inf" if m == "noisy" else f"{clean[m]['psnr']:.2f} / {clean[m]['ssim']:.3f}" for m in cols) + " | |")
    return lines


def texture_table(tex: dict, texture: list[str]) -> list[str]:
    lines = ["| condition | reference: noise SD HU, NPS mean c/mm | " + " | ".join(texture) + " |",
             "|---|---|" + "---|" * len(texture)]
    for cond, row in tex.items():
        ref = row["reference"]
        cells = [f"{_fmt(row[m]['noise_sd_hu'], '.1f')} / {_fmt(row[m]['nps_mean_pct'], '.0f')} %" for m in texture]
        lines.append(f"| {cond} | {_fmt(ref['noise_sd_hu'], '.1f')}, {_fmt(ref['nps_mean_freq_mm'], '.3f')} | "
                     + " | ".join(cells) + " |")
    return lines


def targets_table(goals: dict, models: list[str]) -> list[str]:
    lines = []
    lines.append(f"\n**Targets**: mean PSNR of each noisy condition, the model minus BM3D given the true PSD "
                 f"(sigma for white noise; target >= +{TARGET_BM3D_DB} dB) and minus NLM given sigma (target >= "
                 f"+{TARGET_NLM_DB} dB): the worst condition of each group\n")
    lines.append("| group | " + " | ".join(f"{m} - bm3d_psd | {m} - nlm_sigma" for m in models) + " |")
    lines.append("|---|" + "---|---|" * len(models))
    for set_name, by_model in goals.items():
        cells = []
        for m in models:
            for key in ("vs_bm3d", "vs_nlm_sigma"):
                e = by_model[m].get(key)
                cells.append("-" if e is None else
                             f"{e['gap_db']:+.2f} dB ({e['worst_condition']}){'' if e['met'] else ' **missed**'}")
        held = "" if set_name != SAMPLES else " (not held out)"
        lines.append(f"| {set_name}{held} | " + " | ".join(cells) + " |")
    return lines


def markdown(out: dict, methods: list[str], texture: list[str], sets: dict[str, Group],
             header: str, goals: dict, models: list[str]) -> str:
    results, textures = out["results"], out["texture"]
    lines = [header]
    for set_name, conds in results.items():
        group = sets[set_name]
        nm = group.about.get("noise_model")
        extra = ""
        if isinstance(nm, dict):
            extra = (f"; its noise as measured: {nm['noise_sd_hu']:.1f} HU, NPS mean {nm['nps_mean_mm']:.2f} "
                     "cycles/mm")
        if "neighbours_reason" in group.about:
            step = group.about.get("neighbour_step")
            extra += ("; 2-D only: " + group.about["neighbours_reason"]) if not step else \
                f"; neighbours {step} slice(s) away"
        lines.append(f"\n**{set_name}** ({len(group.cases)} slices{extra}), PSNR dB / SSIM, window -1000..1000 "
                     "HU, data range 1; best in bold; last column: the model's worst slice gain over the noisy "
                     "input\n")
        lines += psnr_table(conds, methods)
        lines.append(f"\n*{set_name}, texture* (`qa` measures, pooled over the slices): noise SD HU / NPS mean "
                     "frequency as % of the reference's\n")
        lines += texture_table(textures[set_name], texture)
    if goals:
        lines += targets_table(goals, models)
    secs = {}
    for conds in results.values():
        for row in conds.values():
            for m in methods:
                if row[m]["seconds_per_512"] is not None:
                    secs.setdefault(m, []).append(row[m]["seconds_per_512"])
    lines.append("\nSeconds per 512x512 slice (2 cores): "
                 + ", ".join(f"{m} {np.mean(v):.2f}" for m, v in secs.items()))
    return "\n".join(lines)


def strength_table(effects: dict) -> list[str]:
    """The clean-input effect of each strength as Markdown rows, with the texture target of issue 30 (at
    least 40 % less noise, the NPS mean frequency within 10 % and the edge width within 2 %) checked."""
    lines = ["| group | strength | RMS change HU (own noise SD) | worst RMS / own noise | noise SD | NPS mean "
             "frequency | noise kept below 0.15 / 0.15-0.3 / above 0.3 c/mm | edge width (worst) | residual "
             "structure | texture target |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for set_name, by_strength in effects.items():
        for name, e in by_strength.items():
            pct = e.get("nps_mean_change_pct")
            kept = e.get("noise_kept_by_band") or [None] * len(NOISE_BANDS)
            parts = (e["noise_reduction_pct"], pct, e["worst_edge_change_pct"])
            met = "" if None in parts else (
                "met" if parts[0] >= 40 and abs(parts[1]) <= 10 and parts[2] <= 2 else "missed")
            lines.append(
                f"| {set_name} | {name} | {_fmt(e['rms_change_hu'], '.1f')} ({_fmt(e['own_noise_sd_hu'], '.1f')}) "
                f"| {_fmt(e['worst_rms_over_noise'], '.2f')} | -{_fmt(e['noise_reduction_pct'], '.0f')} % "
                f"| {_fmt(pct, '+.0f')} % ({_fmt(e['nps_mean_shift_mm'], '+.3f')} c/mm) "
                f"| {' / '.join(_fmt(None if k is None else 100 * k, '.0f') + ' %' for k in kept)} "
                f"| {_fmt(e['edge_width_change_pct'], '+.1f')} % ({_fmt(e['worst_edge_change_pct'], '.1f')} %) "
                f"| {_fmt(e['residual_structure'], '.2f')} | {met} |")
    return lines


def figure(example: dict, methods: list[str], path: Path, condition: str) -> None:
    from denoise.report import panel, pick_zoom_box, save_png

    # Crop every image to a 320x320 window on the body (keeps the PNG small).
    ref = example["reference"]
    rows, cols = np.nonzero(ref > -500)
    size = min(320, *ref.shape)
    r0 = int(np.clip((rows.min() + rows.max()) // 2 - size // 2, 0, ref.shape[0] - size))
    c0 = int(np.clip((cols.min() + cols.max()) // 2 - size // 2, 0, ref.shape[1] - size))
    example = {k: v[r0:r0 + size, c0:c0 + size] for k, v in example.items()}
    ref = example["reference"]
    box = pick_zoom_box(ref, 48)
    order = ["noisy", "model"] + [m for m in methods if m == "model25d"]
    order += ["bm3d_psd"] if "bm3d_psd" in methods else ["nlm_sigma"]
    tiles = [(m, example[m]) for m in order] + [("reference", ref)]
    header = "  ".join(f"{name} {metrics.psnr(ref, hu, window=WINDOW):.2f} dB" for name, hu in tiles[:-1])
    save_png(panel(tiles, window=(-160.0, 240.0), zoom_box=box, zoom=3, header=f"{condition}: {header}"
                   + "   (display -160..240 HU)"), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model path (default: the bundled model)")
    ap.add_argument("--compare-model", default=None, metavar="PATH",
                    help="a second model evaluated alongside (label model25d if it takes neighbour slices, else "
                         "the file's stem), e.g. training/real_noise_ct/checkpoints/last")
    ap.add_argument("--ensemble", type=int, default=DEFAULT_ENSEMBLE,
                    help="self-ensemble views of the models (as ct-denoise denoise --ensemble)")
    ap.add_argument("--slices", type=int, default=6, help="slices per held-out series, evenly spread")
    ap.add_argument("--no-bm3d", action="store_true", help="skip BM3D (10-25 s per call, up to 9 calls a slice)")
    ap.add_argument("--blind-bm3d", action="store_true", help="also run BM3D blind (its own noise estimate)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables as Markdown here")
    ap.add_argument("--figure", type=Path, default=None,
                    help="before/after PNG: noisy | model | model25d | BM3D given the PSD | reference at matched25, "
                         "first held-out group")
    args = ap.parse_args()
    started = time.perf_counter()

    denoiser = Denoiser.load(args.model, ensemble=args.ensemble)
    compare, label = None, ""
    if args.compare_model:
        compare = Denoiser.load(args.compare_model, ensemble=args.ensemble)
        label = "model25d" if compare.model.neighbours else Path(args.compare_model).stem
        if label in ("model", "model_sigma"):
            label = f"{label}_compare"
    methods = ["model"] + (["model_sigma"] if denoiser.model.conditioned else [])
    if compare is not None:
        methods += [label] + ([f"{label}_alone"] if compare.model.neighbours else [])
    have = available_baselines()
    methods += [m for m in ("nlm", "tv", "wavelet") if m in have] + ["nlm_sigma"]
    if "bm3d" in have and not args.no_bm3d:
        check_bm3d_psd()
        methods += ["bm3d_sigma", "bm3d_psd"] + (["bm3d"] if args.blind_bm3d else [])
    elif not args.no_bm3d:
        print("note: BM3D skipped: the optional bm3d package is not installed (pip install .[bm3d])")
    texture = [m for m in (t.replace("COMPARE", label) if label else t for t in TEXTURE)
               if m == "noisy" or m in methods]
    sets = load_sets(args.slices, compare.model.neighbours if compare is not None else 0)
    print(f"model {denoiser.model_id}, {args.ensemble}-view self-ensemble"
          + (f"; {label} {compare.model_id}" if compare else "") + f"; methods {', '.join(methods)}")
    runner = Runner(methods, denoiser, compare, label)
    try:
        out = evaluate(sets, runner, texture)
    except BaselineUnavailable as exc:
        raise SystemExit(str(exc)) from exc
    effects = clean_input_effects(sets, denoiser)
    models = [m for m in ("model", label) if m]
    goals = targets(out["results"], models)
    minutes = (time.perf_counter() - started) / 60
    n = {k: len(g.cases) for k, g in sets.items()}
    trained = ""
    if compare is not None and compare.metadata.get("epoch") is not None:
        total = (compare.metadata.get("config") or {}).get("training", {}).get("epochs")
        trained = f" (epoch {compare.metadata['epoch']}" + (f" of {total}" if total else "") + ")"
    header = (f"Model `{denoiser.model_id}`" + (f", {label} `{compare.model_id}`{trained}" if compare else "")
              + f", {args.ensemble}-view self-ensemble; {args.slices} slices per held-out series"
              + ("" if args.slices >= 6 else ", not the default 6, to keep the run near an hour (BM3D: up to 9 "
                 "calls of 10-25 s a slice)")
              + f"; the run took {minutes:.0f} min on 2 cores.")
    table = markdown(out, methods, texture, sets, header, goals, models)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
        # The clean-input table has its own file: the results and the strength pages include it.
        args.markdown.with_name(args.markdown.stem + "_strength.md").write_text("\n".join(strength_table(effects))
                                                                                + "\n")
    if args.json:
        args.json.write_text(json.dumps(finite({
            "model": denoiser.model_id, "compare_model": compare.model_id if compare else None,
            "compare_label": label or None,
            "compare_epoch": compare.metadata.get("epoch") if compare else None, "ensemble": args.ensemble,
            "window_hu": WINDOW, "data_range": 1.0,
            "slices": n, "slices_per_series": args.slices, "minutes": minutes, "methods": methods,
            "conditions": dict(CONDITIONS), "groups": {k: g.about for k, g in sets.items()},
            "results": out["results"], "texture": out["texture"], "targets": goals, "clean_input": effects}),
            indent=2, allow_nan=False))
    if args.figure:
        key = next(iter(sets)), "matched25"
        if key not in out["examples"]:
            key = next(iter(sets)), "gauss50"
        figure(out["examples"][key], methods, args.figure, key[1])
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
