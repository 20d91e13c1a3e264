"""Denoising quality on CT the model never saw: model vs classical baselines.

Data (evaluation only, never training): the test-split patient of
``data_manifests/shared_ct.json`` (RIDER chest; evenly spread slices) and the
CT slices that ship with pydicom / pydicom-data (``denoise.samples``).
Conditions, with fixed seeds: Gaussian noise of 25, 50 and 100 HU (reference:
the original slice) and simulated low dose at I0 = 1e5 (reference: the FBP of
the noiseless sinogram). Metrics: PSNR and SSIM in the window -1000..1000 HU
mapped to [0, 1] (data_range 1, ``denoise.metrics``), mean over slices, plus
seconds per 512x512 slice for each method.

    python benchmarks/quality.py                          # bundled model, ~15 min on 2 cores
    python benchmarks/quality.py --slices 4 --no-bm3d     # quick look
    python benchmarks/quality.py --figure out.png         # also the README before/after image

The same comparison for any folder through the CLI:
``ct-denoise noise CLEAN NOISY --sigma 50`` -> ``ct-denoise denoise NOISY DEN`` ->
``ct-denoise evaluate CLEAN DEN --noisy NOISY --baselines nlm,tv,wavelet,bm3d --label model``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from denoise import metrics  # noqa: E402
from denoise.baselines import BaselineUnavailable, available_baselines, run_baseline  # noqa: E402
from denoise.inference import DEFAULT_ENSEMBLE, Denoiser  # noqa: E402
from denoise.manifest import load_manifest, split_files  # noqa: E402
from denoise.noise import add_gaussian, low_dose_pair  # noqa: E402
from denoise.samples import sample_ct_files  # noqa: E402
from denoise.training_data import load_slices  # noqa: E402

CONDITIONS = (("gauss25", 25.0), ("gauss50", 50.0), ("gauss100", 100.0), ("lowdose1e5", 1e5))
WINDOW = (-1000.0, 1000.0)


def load_sets(n_test_slices: int) -> dict[str, list[tuple[str, np.ndarray, float]]]:
    """{set name: [(label, HU slice, pixel spacing mm)]}."""
    sets = {}
    manifest = ROOT / "data_manifests" / "shared_ct.json"
    try:
        test = sorted(split_files(load_manifest(manifest), "test"), key=lambda f: f.slice_index)
    except Exception as exc:  # the shared data is not on every machine
        print(f"note: test patient skipped ({exc})")
        test = []
    if test:
        pick = np.linspace(0, len(test) - 1, n_test_slices + 2).round().astype(int)[1:-1]
        sets["test patient (RIDER chest)"] = _as_rows(load_slices([test[i].path for i in pick]))
    sets["pydicom CT samples"] = _as_rows(load_slices(sample_ct_files()))
    return sets


def _as_rows(slices) -> list[tuple[str, np.ndarray, float]]:
    """(label, HU, pixel spacing mm; 0.7 where a file has none) per frame."""
    return [(s.name, s.hu, s.pixel_spacing_mm or 0.7) for s in slices]


def make_pair(hu: np.ndarray, spacing: float, condition: str, value: float, seed: int):
    rng = np.random.default_rng(seed)
    if condition.startswith("gauss"):
        return add_gaussian(hu, sigma_hu=value, rng=rng), hu
    return low_dose_pair(hu, i0=value, pixel_spacing_mm=spacing, rng=rng)


def evaluate(sets, methods, denoisers: dict, *, log=print) -> dict:
    """{set: {condition: {method: {psnr, ssim, seconds_per_512}}}} plus kept examples.

    ``denoisers``: {method name: Denoiser}; other methods are classical baselines.
    """
    results, examples = {}, {}
    for set_name, slices in sets.items():
        results[set_name] = {}
        for cond, value in CONDITIONS:
            acc: dict[str, dict[str, list]] = {}
            for k, (_label, hu, spacing) in enumerate(slices):
                noisy, clean = make_pair(hu, spacing, cond, value, seed=1000 * k + int(value) % 997)
                outs = {"noisy": (noisy, 0.0)}
                for m in methods:
                    t0 = time.perf_counter()
                    out = denoisers[m](noisy) if m in denoisers else run_baseline(m, noisy)
                    outs[m] = (out, time.perf_counter() - t0)
                for m, (out, secs) in outs.items():
                    a = acc.setdefault(m, {"psnr": [], "ssim": [], "secs": []})
                    a["psnr"].append(metrics.psnr(clean, out, window=WINDOW))
                    a["ssim"].append(metrics.ssim(clean, out, window=WINDOW))
                    if hu.shape == (512, 512):
                        a["secs"].append(secs)
                if k == len(slices) // 2:
                    examples[(set_name, cond)] = {"clean": clean, **{m: o for m, (o, _) in outs.items()}}
            results[set_name][cond] = {
                m: {"psnr": float(np.mean(a["psnr"])), "ssim": float(np.mean(a["ssim"])),
                    "seconds_per_512": float(np.mean(a["secs"])) if a["secs"] and m != "noisy" else None}
                for m, a in acc.items()}
            row = results[set_name][cond]
            log(f"{set_name:28s} {cond:11s} " + "  ".join(f"{m} {r['psnr']:.2f}/{r['ssim']:.3f}"
                                                         for m, r in row.items()))
    return {"results": results, "examples": examples}


def markdown(results: dict, methods: list[str], n_slices: dict) -> str:
    cols = ["noisy"] + methods
    lines = []
    for set_name, conds in results.items():
        lines.append(f"\n**{set_name}** ({n_slices[set_name]} slices), PSNR dB / SSIM, window -1000..1000 HU, "
                     "data range 1; best in bold\n")
        lines.append("| condition | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for cond, row in conds.items():
            best_p = max(row[m]["psnr"] for m in methods)
            best_s = max(row[m]["ssim"] for m in methods)
            cells = []
            for m in cols:
                p, s = row[m]["psnr"], row[m]["ssim"]
                cp = f"**{p:.2f}**" if m != "noisy" and p == best_p else f"{p:.2f}"
                cs = f"**{s:.3f}**" if m != "noisy" and s == best_s else f"{s:.3f}"
                cells.append(f"{cp} / {cs}")
            lines.append(f"| {cond} | " + " | ".join(cells) + " |")
        means = {m: np.mean([conds[c][m]["psnr"] for c in conds]) for m in cols}
        lines.append("| mean PSNR | " + " | ".join(f"{means[m]:.2f}" for m in cols) + " |")
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
    tiles = [(name, hu) for name, hu in tiles]
    header = "  ".join(f"{name} {metrics.psnr(clean, hu, window=WINDOW):.2f} dB" for name, hu in tiles[:-1])
    save_png(panel(tiles, window=(-160.0, 240.0), zoom_box=box, zoom=3, header=header
                   + "   (display -160..240 HU)"), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model path (default: the bundled model)")
    ap.add_argument("--ensemble", type=int, default=DEFAULT_ENSEMBLE,
                    help="self-ensemble views of 'model' (as ct-denoise denoise --ensemble); "
                         "the column 'model_1view' is the single pass")
    ap.add_argument("--slices", type=int, default=12, help="test-patient slices, evenly spread")
    ap.add_argument("--no-bm3d", action="store_true", help="skip BM3D (about 10 s per slice)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables as Markdown here")
    ap.add_argument("--figure", type=Path, default=None,
                    help="before/after PNG: noisy | model | BM3D | clean at sigma 50 on the test patient")
    args = ap.parse_args()

    denoiser = Denoiser.load(args.model, ensemble=args.ensemble)
    denoisers = {"model": denoiser}
    if args.ensemble > 1:
        denoisers["model_1view"] = dataclasses.replace(denoiser, ensemble=1)
    methods = list(denoisers) + [m for m in ("nlm", "tv", "wavelet", "bm3d")
                           if m in available_baselines() and not (m == "bm3d" and args.no_bm3d)]
    if "bm3d" not in methods and not args.no_bm3d:
        print("note: BM3D skipped: the optional bm3d package is not installed (pip install .[bm3d])")
    sets = load_sets(args.slices)
    print(f"model {denoiser.model_id}, {args.ensemble}-view self-ensemble; methods {', '.join(methods)}")
    try:
        out = evaluate(sets, methods, denoisers)
    except BaselineUnavailable as exc:
        raise SystemExit(str(exc)) from exc
    n = {k: len(v) for k, v in sets.items()}
    table = markdown(out["results"], methods, n)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps({"model": denoiser.model_id, "ensemble": args.ensemble,
                                         "window_hu": WINDOW, "data_range": 1.0,
                                         "slices": n, "results": out["results"]}, indent=2))
    if args.figure:
        key = next(iter(sets)), "gauss50"
        figure(out["examples"][key], methods, args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
