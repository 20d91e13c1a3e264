"""Tune the classical baselines of ``denoise.baselines`` fairly.

Grid-searches each method's multiplier(s) relative to the blind noise
estimate for the best mean PSNR (window -1000..1000 HU -> [0, 1], data range
1, ``denoise.metrics.psnr``) over four noise conditions: Gaussian noise of
25, 50 and 100 HU and simulated low dose (``denoise.noise.low_dose_pair``,
i0 = 1e5, whose clean reference is the FBP of the noiseless sinogram). One
rule per method must serve every condition (a blind method cannot know
which one it faces), so the score is the mean over conditions of the mean
PSNR over slices. The search runs on centre crops (4 slices, 192x192 by
default, about 15 min on one core); the chosen settings are then verified,
and timed, on the full slices.

The tuning slices come from a training-split patient
(``../shared/data/ct/ricord-chest/dicom`` next to the repository: the
248-slice axial "ROUTINE CHEST NON-CON" series that ``data_manifests/chest.json``
puts in the train split), never from validation or test data
(``rider-chest`` is the test patient).

    python benchmarks/tune_baselines.py --jobs 1 --out /tmp/tune_baselines.json
    python benchmarks/tune_baselines.py --verify-only   # the constants now in denoise/baselines.py
"""

from __future__ import annotations

import argparse
import itertools
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pydicom

from denoise import baselines  # noqa: E402
from denoise.atomic import write_json  # noqa: E402
from denoise.dicom import load_ct  # noqa: E402
from denoise.metrics import psnr  # noqa: E402
from denoise.noise import add_gaussian, low_dose_pair  # noqa: E402

# Training-split patient (data_manifests/chest.json); relative to the repository root.
DEFAULT_DATA = (Path(__file__).resolve().parents[1] / "../shared/data/ct/ricord-chest/dicom").resolve()
WINDOW = (-1000.0, 1000.0)
CONDITIONS = ("gauss25", "gauss50", "gauss100", "lowdose1e5")

# Coarse grids: every combination is scored; then the multiplier is refined.
GRIDS = {
    "nlm": {"patch_size": [5, 7], "patch_distance": [6, 11],
            "h_factor": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2]},
    "tv": {"weight_factor": [0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0]},
    "wavelet": [
        {"method": ["BayesShrink"], "wavelet": ["db1", "db2", "sym4", "sym8"], "mode": ["soft", "hard"],
         "sigma_factor": [0.5, 0.7, 1.0, 1.4, 2.0], "shifts": [0]},
        {"method": ["VisuShrink"], "wavelet": ["db1", "db2", "sym4", "sym8"], "mode": ["soft", "hard"],
         "sigma_factor": [0.09, 0.125, 0.18, 0.25, 0.35, 0.5, 0.7, 1.0], "shifts": [0]},
    ],
    "bm3d": {"sigma_factor": [0.7, 1.0, 1.4]},  # ~3 s per crop: few values
}
FACTOR = {"nlm": "h_factor", "tv": "weight_factor", "wavelet": "sigma_factor", "bm3d": "sigma_factor"}
# Ratios tried around the coarse best multiplier (about half a grid step; wider
# for the wavelet, whose best threshold moves once cycle spinning is added).
REFINE = {"nlm": (0.94, 1.06), "tv": (2 ** -0.25, 2 ** 0.25),
          "wavelet": (2 ** -0.5, 2 ** -0.25, 2 ** 0.25, 2 ** 0.5), "bm3d": (0.85, 1.18)}
# Extra choices tried together with the refined multiplier (costly ones only here).
REFINE_EXTRA = {"wavelet": {"shifts": [0, 1, 2, 3]}}


def current_settings() -> dict[str, dict]:
    """The constants hard-coded in denoise/baselines.py."""
    b = baselines
    return {
        "nlm": {"patch_size": b.NLM_PATCH_SIZE, "patch_distance": b.NLM_PATCH_DISTANCE,
                "h_factor": b.NLM_H_FACTOR},
        "tv": {"weight_factor": b.TV_WEIGHT_FACTOR},
        "wavelet": {"method": b.WAVELET_METHOD, "wavelet": b.WAVELET_NAME, "mode": b.WAVELET_MODE,
                    "sigma_factor": b.WAVELET_SIGMA_FACTOR, "shifts": b.WAVELET_SHIFTS},
        "bm3d": {"sigma_factor": b.BM3D_SIGMA_FACTOR},
    }


def expand(grid) -> list[dict]:
    if isinstance(grid, list):
        return [p for g in grid for p in expand(g)]
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def tuning_files(folder: Path, count: int) -> list[Path]:
    """``count`` slices spread evenly through the series (ends excluded)."""
    files = sorted(folder.glob("*.dcm"),
                   key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))
    if len(files) < count:
        raise SystemExit(f"{folder}: need {count} slices, found {len(files)}")
    picks = np.linspace(0, len(files) - 1, count + 2)[1:-1].round().astype(int)
    return [files[i] for i in picks]


def make_pairs(files: list[Path], seed: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """{condition: [(noisy, clean) full slices in HU]}."""
    pairs = {c: [] for c in CONDITIONS}
    for k, path in enumerate(files):
        hu = load_ct(path).hu[0]
        spacing = float(pydicom.dcmread(path, stop_before_pixels=True).PixelSpacing[0])
        for c, sigma in zip(CONDITIONS[:3], (25.0, 50.0, 100.0), strict=True):
            rng = np.random.default_rng([seed, k, int(sigma)])
            pairs[c].append((add_gaussian(hu, sigma_hu=sigma, rng=rng), hu))
        rng = np.random.default_rng([seed, k, 100_000])
        pairs["lowdose1e5"].append(low_dose_pair(hu, i0=1e5, pixel_spacing_mm=spacing, rng=rng))
    return pairs


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    r, c = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[r:r + size, c:c + size]


_PAIRS: dict = {}


def _init(pairs):
    global _PAIRS
    _PAIRS = pairs


def score(task) -> tuple[str, dict, dict, float]:
    """(method, params, {condition: mean PSNR}, seconds per call) on the worker's pairs."""
    method, params = task
    per_cond, seconds = {}, []
    for cond, items in _PAIRS.items():
        values = []
        for noisy, clean in items:
            t0 = time.perf_counter()
            out = baselines.run_baseline(method, noisy, window=WINDOW, **params)
            seconds.append(time.perf_counter() - t0)
            values.append(psnr(clean, out, window=WINDOW))
        per_cond[cond] = float(np.mean(values))
    return method, params, per_cond, float(np.median(seconds))


def run_tasks(tasks, pairs, jobs):
    if jobs <= 1:
        _init(pairs)
        return [score(t) for t in tasks]
    with ProcessPoolExecutor(jobs, initializer=_init, initargs=(pairs,)) as pool:
        return list(pool.map(score, tasks))


def mean_psnr(per_cond: dict) -> float:
    return float(np.mean(list(per_cond.values())))


def tune(method: str, crops, jobs: int) -> list[tuple]:
    results = run_tasks([(method, p) for p in expand(GRIDS[method])], crops, jobs)
    best = max(results, key=lambda r: mean_psnr(r[2]))[1]
    factor = FACTOR[method]
    refine = {k: [best[k]] for k in best}
    refine[factor] = sorted({round(best[factor] * r, 4) for r in (1.0, *REFINE[method])})
    refine.update(REFINE_EXTRA.get(method, {}))
    seen = [r[1] for r in results]
    extra = [p for p in expand(refine) if p not in seen]
    results += run_tasks([(method, p) for p in extra], crops, jobs)
    return sorted(results, key=lambda r: -mean_psnr(r[2]))


def table(rows, noisy_row=None) -> str:
    head = "| method | settings | " + " | ".join(CONDITIONS) + " | mean | s/call |"
    lines = [head, "|" + "---|" * (len(CONDITIONS) + 4)]
    if noisy_row is not None:
        lines.append("| noisy | - | " + " | ".join(f"{noisy_row[c]:.2f}" for c in CONDITIONS)
                     + f" | {mean_psnr(noisy_row):.2f} | - |")
    for method, params, per_cond, sec in rows:
        settings = ", ".join(f"{k}={v}" for k, v in params.items())
        lines.append(f"| {method} | {settings} | " + " | ".join(f"{per_cond[c]:.2f}" for c in CONDITIONS)
                     + f" | {mean_psnr(per_cond):.2f} | {sec:.2f} |")
    return "\n".join(lines)


def noisy_psnr(pairs) -> dict:
    return {c: float(np.mean([psnr(clean, noisy, window=WINDOW) for noisy, clean in items]))
            for c, items in pairs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="tuning series (training-split patient)")
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--crop", type=int, default=192, help="centre crop side for the grid search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(baselines.BASELINES))
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--verify-only", action="store_true",
                    help="skip the search; verify the constants in denoise/baselines.py")
    ap.add_argument("--out", type=Path, help="write all results as JSON here")
    args = ap.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(baselines.BASELINES)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; valid: {', '.join(baselines.BASELINES)}")
    methods = [m for m in methods if m in baselines.available_baselines()]

    t_start = time.perf_counter()
    files = tuning_files(args.data, args.slices)
    print(f"tuning slices: {', '.join(p.name for p in files)}", flush=True)
    pairs = make_pairs(files, args.seed)
    crops = {c: [(centre_crop(n, args.crop), centre_crop(k, args.crop)) for n, k in items]
             for c, items in pairs.items()}
    report = {"slices": [p.name for p in files], "crop": args.crop, "seed": args.seed,
              "window_hu": list(WINDOW), "conditions": list(CONDITIONS), "search": {}, "chosen": {}}

    chosen = current_settings()
    if not args.verify_only:
        print(f"\n## grid search on {args.crop}x{args.crop} centre crops "
              f"(noisy input: {mean_psnr(noisy_psnr(crops)):.2f} dB mean)", flush=True)
        for method in methods:
            t0 = time.perf_counter()
            results = tune(method, crops, args.jobs)
            chosen[method] = results[0][1]
            best_each = {c: max(r[2][c] for r in results) for c in CONDITIONS}
            report["search"][method] = {
                "results": [{"params": p, "psnr": pc, "seconds": s} for _, p, pc, s in results],
                "best_per_condition": best_each,
            }
            print(f"\n### {method}: {len(results)} settings in {time.perf_counter() - t0:.0f} s; top 5")
            print(table(results[:5]))
            print("best per condition in the grid: "
                  + ", ".join(f"{c} {v:.2f}" for c, v in best_each.items()), flush=True)

    # One process, so the seconds per slice are not inflated by a sibling worker.
    print(f"\n## verification on full {pairs[CONDITIONS[0]][0][0].shape} slices", flush=True)
    rows = run_tasks([(m, chosen[m]) for m in methods], pairs, jobs=1)
    report["chosen"] = {m: p for m, p, _, _ in rows}
    report["verification"] = {m: {"psnr": pc, "mean": mean_psnr(pc), "seconds_per_slice": s}
                              for m, _, pc, s in rows}
    report["noisy"] = noisy_psnr(pairs)
    print(table(rows, report["noisy"]))
    report["total_seconds"] = time.perf_counter() - t_start
    print(f"\ntotal {report['total_seconds']:.0f} s; s/call: median seconds per slice, "
          f"verification run in one process (search: {args.jobs})")
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
