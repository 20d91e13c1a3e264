"""Denoising quality on CT the model never saw, per kernel and vendor group:
the model (defaults, and given the true noise SD) vs classical baselines,
whether it ever harms a slice, and what it does to a scan with nothing added.

Data (evaluation only, never training): the test split of
``data_manifests/kernels.json`` (patients held out by folder: the
Lung-PET-CT-Dx patient with Philips kernels L and B, the RIDER chest with GE
STANDARD and the ACRIN abdomen/pelvis with GE SOFT), one group per vendor and
kernel, slices evenly spread; and the CT slices that ship with pydicom /
pydicom-data (``denoise.samples``).

Conditions, fixed seeds: Gaussian noise of 25, 50 and 100 HU (reference: the
original slice), simulated low dose at I0 = 1e5 (reference: the FBP of the
noiseless sinogram) and ``clean`` (nothing added; the input is the
reference). Metrics: PSNR and SSIM in the window -1000..1000 HU mapped to
[0, 1] (data_range 1), mean over slices, and for the model the worst slice's
PSNR gain over the noisy input.

Methods: ``model`` (``ct-denoise denoise`` defaults), ``model_sigma`` (given
the true noise SD, ``--noise-sd``: the Gaussian sigma, or the RMS of the
low-dose noise inside the body; 0 for clean), NLM, TV, wavelet and BM3D
(blind, as ``evaluate --baselines`` runs them) and ``bm3d_sigma`` (BM3D given
the same true sigma, sigma_psd = sigma).

On the clean slices it also reports, with ``denoise.quality`` (the ``qa``
measures), for every strength level: RMS change inside the body against the
slice's own noise SD, noise SD reduction, NPS mean frequency shift, edge-width
change and residual structure.

    python benchmarks/quality.py --json benchmarks/results/quality.json \\
        --markdown benchmarks/results/quality.md --figure benchmarks/results/before_after.png
    python benchmarks/quality.py --slices 2 --no-bm3d     # quick look

The same comparison for any folder through the CLI:
``ct-denoise noise CLEAN NOISY --sigma 50`` -> ``ct-denoise denoise NOISY DEN`` ->
``ct-denoise evaluate CLEAN DEN --noisy NOISY --baselines nlm,tv,wavelet,bm3d --label model``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]

from denoise import metrics, quality  # noqa: E402
from denoise.atomic import finite  # noqa: E402
from denoise.baselines import BaselineUnavailable, available_baselines, run_baseline  # noqa: E402
from denoise.body import body_mask  # noqa: E402
from denoise.conditioning import STRENGTHS  # noqa: E402
from denoise.inference import DEFAULT_ENSEMBLE, Denoiser  # noqa: E402
from denoise.manifest import load_manifest, split_files  # noqa: E402
from denoise.noise import add_gaussian, low_dose_pair  # noqa: E402
from denoise.samples import sample_ct_files  # noqa: E402
from denoise.training_data import load_slices  # noqa: E402

CONDITIONS = (("gauss25", 25.0), ("gauss50", 50.0), ("gauss100", 100.0), ("lowdose1e5", 1e5), ("clean", 0.0))
WINDOW = (-1000.0, 1000.0)
KERNEL_CLASS = {"L": "sharp", "D": "sharp", "LUNG": "sharp", "BONE": "sharp", "B": "soft", "SOFT": "soft",
                "B30s": "soft", "STANDARD": "standard", "STD+": "standard"}


def _group_name(path: Path) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    vendor = str(ds.get("Manufacturer", "") or "?").split()[0]
    vendor = vendor if len(vendor) <= 3 else vendor.title()
    kernel = str(ds.get("ConvolutionKernel", "") or "?")
    part = str(ds.get("BodyPartExamined", "") or "CT").lower()
    return f"{vendor} {kernel} ({KERNEL_CLASS.get(kernel, 'kernel')}), {part}"


def load_sets(n_slices: int) -> dict[str, list[tuple[str, np.ndarray, float]]]:
    """{group: [(label, HU slice, pixel spacing mm)]}: the held-out patients by kernel, then pydicom's samples."""
    sets = {}
    try:
        test = split_files(load_manifest(ROOT / "data_manifests" / "kernels.json"), "test")
    except Exception as exc:  # the shared data is not on every machine
        print(f"note: held-out patients skipped ({exc})")
        test = []
    by_series: dict[str, list] = {}
    for f in test:
        by_series.setdefault(f.series_uid, []).append(f)
    for files in by_series.values():
        files.sort(key=lambda f: f.slice_index)
        pick = np.linspace(0, len(files) - 1, n_slices + 2).round().astype(int)[1:-1]
        sets[_group_name(files[0].path)] = _as_rows(load_slices([files[i].path for i in pick]))
    sets["pydicom CT samples"] = _as_rows(load_slices(sample_ct_files()))
    return dict(sorted(sets.items(), key=lambda kv: (kv[0] == "pydicom CT samples", kv[0])))


def _as_rows(slices) -> list[tuple[str, np.ndarray, float]]:
    """(label, HU, pixel spacing mm; 0.7 where a file has none) per frame."""
    return [(s.name, s.hu, s.pixel_spacing_mm or 0.7) for s in slices]


def make_pair(hu: np.ndarray, spacing: float, condition: str, value: float, seed: int):
    rng = np.random.default_rng(seed)
    if condition == "clean":
        return hu.copy(), hu
    if condition.startswith("gauss"):
        return add_gaussian(hu, sigma_hu=value, rng=rng), hu
    return low_dose_pair(hu, i0=value, pixel_spacing_mm=spacing, rng=rng)


def true_sigma(noisy: np.ndarray, clean: np.ndarray, condition: str, value: float) -> float:
    """The SD of the noise actually added: sigma, or the low-dose noise's RMS inside the body."""
    if condition == "clean":
        return 0.0
    if condition.startswith("gauss"):
        return value
    body = body_mask(clean)
    return float(np.sqrt(np.mean((noisy - clean)[body] ** 2)))


def run_method(m: str, noisy, sigma: float, denoisers: dict):
    if m in denoisers:
        return denoisers[m](noisy)
    if m == "model_sigma":
        return dataclasses.replace(denoisers["model"], noise_sd_hu=sigma)(noisy)
    if m == "bm3d_sigma":
        return run_baseline("bm3d", noisy, sigma_hu=sigma, sigma_factor=1.0) if sigma > 0 else noisy.copy()
    return run_baseline(m, noisy)


def evaluate(sets, methods, denoisers: dict, *, log=print) -> dict:
    """{set: {condition: {method: {psnr, ssim, seconds_per_512[, min_gain_db]}}}} plus kept examples."""
    results, examples = {}, {}
    for set_name, slices in sets.items():
        results[set_name] = {}
        for cond, value in CONDITIONS:
            acc: dict[str, dict[str, list]] = {}
            for k, (_label, hu, spacing) in enumerate(slices):
                noisy, clean = make_pair(hu, spacing, cond, value, seed=1000 * k + int(value) % 997)
                sigma = true_sigma(noisy, clean, cond, value)
                outs = {"noisy": (noisy, 0.0)}
                for m in methods:
                    t0 = time.perf_counter()
                    out = run_method(m, noisy, sigma, denoisers)
                    outs[m] = (out, time.perf_counter() - t0)
                for m, (out, secs) in outs.items():
                    a = acc.setdefault(m, {"psnr": [], "ssim": [], "secs": []})
                    a["psnr"].append(metrics.psnr(clean, out, window=WINDOW))
                    a["ssim"].append(metrics.ssim(clean, out, window=WINDOW))
                    if hu.shape == (512, 512):
                        a["secs"].append(secs)
                if k == len(slices) // 2:
                    examples[(set_name, cond)] = {"clean": clean, **{m: o for m, (o, _) in outs.items()}}
            row = {m: {"psnr": _mean(a["psnr"]), "ssim": _mean(a["ssim"]),
                       "seconds_per_512": float(np.mean(a["secs"])) if a["secs"] and m != "noisy" else None}
                   for m, a in acc.items()}
            if cond != "clean":  # on clean slices the noisy input is the reference itself (infinite PSNR)
                for m in methods:
                    row[m]["min_gain_db"] = float(np.min(np.subtract(acc[m]["psnr"], acc["noisy"]["psnr"])))
            results[set_name][cond] = row
            log(f"{set_name:40s} {cond:11s} " + "  ".join(f"{m} {r['psnr']:.2f}/{r['ssim']:.3f}"
                                                         for m, r in row.items()))
    return {"results": results, "examples": examples}


def _mean(values) -> float:
    kept = [v for v in values if np.isfinite(v)]
    return float(np.mean(kept)) if kept else float("inf")


def clean_input_effects(sets, denoiser: Denoiser) -> dict:
    """{set: {strength: measures}} of the model on the slices with nothing added (the qa measures)."""
    out = {}
    for set_name, slices in sets.items():
        out[set_name] = {}
        for name, value in STRENGTHS.items():
            rows = []
            for _label, hu, spacing in slices:
                den = dataclasses.replace(denoiser, strength=value)(hu)
                layout = quality.plan(hu, (spacing, spacing))
                before, after = quality.measure(hu, layout).summary(), quality.measure(den, layout).summary()
                body = layout.body if layout.body.any() else np.ones(hu.shape, bool)
                rms = float(np.sqrt(np.mean((den - hu)[body] ** 2)))
                rows.append({"rms_change_hu": rms, "own_noise_sd_hu": before["noise_sd_hu"],
                             **quality.change(before, after), **quality.residual(hu, den, layout)})
            out[set_name][name] = quality.mean_measurement(rows)
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


def markdown(results: dict, effects: dict, methods: list[str], n_slices: dict) -> str:
    cols = ["noisy"] + methods
    lines = []
    for set_name, conds in results.items():
        lines.append(f"\n**{set_name}** ({n_slices[set_name]} slices), PSNR dB / SSIM, window -1000..1000 HU, "
                     "data range 1; best in bold; last column: the model's worst slice gain over the noisy "
                     "input\n")
        lines.append("| condition | " + " | ".join(cols) + " | model: worst slice |")
        lines.append("|---|" + "---|" * (len(cols) + 1))
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
    lines.append("\n**Clean input** (nothing added): the model at each strength, `qa` measures against the "
                 "original slice (mean over slices; worst slice in brackets)\n")
    lines.append("| group | strength | RMS change HU (own noise SD) | worst RMS / own noise | noise SD | NPS mean "
                 "shift cycles/mm | edge width (worst) | residual structure |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for set_name, by_strength in effects.items():
        for name, e in by_strength.items():
            lines.append(
                f"| {set_name} | {name} | {_fmt(e['rms_change_hu'], '.1f')} ({_fmt(e['own_noise_sd_hu'], '.1f')}) "
                f"| {_fmt(e['worst_rms_over_noise'], '.2f')} | -{_fmt(e['noise_reduction_pct'], '.0f')} % "
                f"| {_fmt(e['nps_mean_shift_mm'], '+.3f')} | {_fmt(e['edge_width_change_pct'], '+.1f')} % "
                f"({_fmt(e['worst_edge_change_pct'], '.1f')} %) | {_fmt(e['residual_structure'], '.2f')} |")
    secs = {}
    for conds in results.values():
        for row in conds.values():
            for m in methods:
                if row[m]["seconds_per_512"] is not None:
                    secs.setdefault(m, []).append(row[m]["seconds_per_512"])
    lines.append("\nSeconds per 512x512 slice (2 cores): "
                 + ", ".join(f"{m} {np.mean(v):.2f}" for m, v in secs.items()))
    return "\n".join(lines)


def figure(example: dict, methods: list[str], path: Path) -> None:
    from denoise.report import panel, pick_zoom_box, save_png

    # Crop every image to a 320x320 window on the body (keeps the PNG small).
    rows, cols = np.nonzero(example["clean"] > -500)
    size = min(320, *example["clean"].shape)
    r0 = int(np.clip((rows.min() + rows.max()) // 2 - size // 2, 0, example["clean"].shape[0] - size))
    c0 = int(np.clip((cols.min() + cols.max()) // 2 - size // 2, 0, example["clean"].shape[1] - size))
    example = {k: v[r0:r0 + size, c0:c0 + size] for k, v in example.items()}
    clean = example["clean"]
    box = pick_zoom_box(clean, 48)
    classical = [m for m in methods if not m.startswith("model")]
    order = ["noisy", "model"] + (["bm3d"] if "bm3d" in methods else classical[:1])
    tiles = [(m, example[m]) for m in order] + [("clean", clean)]
    header = "  ".join(f"{name} {metrics.psnr(clean, hu, window=WINDOW):.2f} dB" for name, hu in tiles[:-1])
    save_png(panel(tiles, window=(-160.0, 240.0), zoom_box=box, zoom=3, header=header
                   + "   (display -160..240 HU)"), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model path (default: the bundled model)")
    ap.add_argument("--ensemble", type=int, default=DEFAULT_ENSEMBLE,
                    help="self-ensemble views of 'model' (as ct-denoise denoise --ensemble)")
    ap.add_argument("--slices", type=int, default=6, help="slices per held-out series, evenly spread")
    ap.add_argument("--no-bm3d", action="store_true", help="skip BM3D (about 5 s per slice, twice)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables as Markdown here")
    ap.add_argument("--figure", type=Path, default=None,
                    help="before/after PNG: noisy | model | BM3D | clean at sigma 50, first held-out group")
    args = ap.parse_args()

    denoiser = Denoiser.load(args.model, ensemble=args.ensemble)
    denoisers = {"model": denoiser}
    methods = ["model"] + (["model_sigma"] if denoiser.model.conditioned else [])
    methods += [m for m in ("nlm", "tv", "wavelet", "bm3d") if m in available_baselines()
                and not (m == "bm3d" and args.no_bm3d)]
    if "bm3d" in methods:
        methods.append("bm3d_sigma")
    elif not args.no_bm3d:
        print("note: BM3D skipped: the optional bm3d package is not installed (pip install .[bm3d])")
    sets = load_sets(args.slices)
    print(f"model {denoiser.model_id}, {args.ensemble}-view self-ensemble; methods {', '.join(methods)}")
    try:
        out = evaluate(sets, methods, denoisers)
    except BaselineUnavailable as exc:
        raise SystemExit(str(exc)) from exc
    effects = clean_input_effects(sets, denoiser)
    n = {k: len(v) for k, v in sets.items()}
    table = markdown(out["results"], effects, methods, n)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(finite({"model": denoiser.model_id, "ensemble": args.ensemble,
                                                 "window_hu": WINDOW, "data_range": 1.0, "slices": n,
                                                 "results": out["results"], "clean_input": effects}),
                                        indent=2, allow_nan=False))
    if args.figure:
        key = next(iter(sets)), "gauss50"
        figure(out["examples"][key], methods, args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
