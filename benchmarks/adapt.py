"""Does `ct-denoise adapt` help on a scanner the bundled model does not know?

For each held-out patient of ``data_manifests/kernels.json`` (LIDC: Philips D,
sharp; RIDER: GE STANDARD, soft), ``--slices`` contiguous slices are given
simulated low-dose noise (``ct-denoise noise --dose``: Poisson noise on a
parallel-beam sinogram, FBP), slice by slice with independent noise. The
adapted models see only that noisy series (``pipelines.adapt.run``, as the
CLI runs it, for ``--minutes``); the clean FBP of the same sinogram is used
only for scoring, and for the supervised ceiling: the same start model,
trained for the same time on (noisy, clean) pairs of the same slices
(Adam 6e-4, cosine decay).

Three adaptations (``--methods``): ``neighbours`` (``adapt --method
neighbours``, Noise2Sim-style, told nothing), ``measured`` (``adapt --method
recorrupted``, told nothing: recorrupted pairs of the noise model that
``denoise.scanner_noise`` measures on the noisy series itself) and
``recorrupted`` (``adapt --dose I0``: told the noise model the benchmark
simulated, the photon count, never the clean images; its training noise is
``denoise.noise.low_dose_noise``, the fast image-domain stand-in, not the
sinogram simulation that made the series).

Reported per series: mean PSNR/SSIM (window -1000..1000 HU) over all slices
of the noisy input, NLM, the bundled model, each adapted model and the
supervised ceiling, and each adaptation's wall time.

    python benchmarks/adapt.py --json benchmarks/results/adapt.json --markdown benchmarks/results/adapt.md

Needs ../shared/data/ct. Measure with OpenBLAS's own kernel choice
(``env -u OPENBLAS_CORETYPE`` where the environment sets it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from denoise import metrics  # noqa: E402
from denoise.adaptation import NeighbourPairs, PairConfig  # noqa: E402
from denoise.baselines import run_baseline  # noqa: E402
from denoise.dicom import derive_dataset, load_ct, scan, write_atomic  # noqa: E402
from denoise.inference import Denoiser  # noqa: E402
from denoise.nn import Adam  # noqa: E402
from denoise.noise import low_dose_pair  # noqa: E402
from denoise.training import LoopState  # noqa: E402
from pipelines import adapt, noise  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ct"
WINDOW = (-1000.0, 1000.0)
ADAPT_METHODS = ("neighbours", "measured", "recorrupted")
SERIES = {"lidc-chest": "Philips D (sharp), LIDC chest", "rider-chest": "GE STANDARD (soft), RIDER chest"}
# The ceiling trains as well as we know how: Adam peaking at 6e-4 with a cosine decay over the budget
# (40 LIDC slices, 3 minutes: 44.76 dB, against 44.41 at a constant 1e-4, the previous ceiling's rate).
CEILING_LR, CEILING_SCHEDULE = 6e-4, "cosine"


class SupervisedPairs(NeighbourPairs):
    """(noisy k, clean k) pairs of the same series: indices 0..n-1 read the noisy
    slices, n..2n-1 the clean ones; no mask, no swap."""

    def pair_indices(self, count: int) -> list[tuple[int, int]]:
        half = self.n // 2
        return [(int(k), half + int(k)) for k in self.rng.integers(0, half, size=count)]


def _simulate(source: Path, out: Path, i0: float, seed: int, stream: int) -> np.ndarray:
    """Write the low-dose noisy copy of ``source`` to ``out`` as ``ct-denoise noise --dose`` would
    (derived DICOM of the same series); return the clean FBP of the same sinogram (HU)."""
    image = load_ct(source)
    spacing = float(np.mean(scan(source).files[0].pixel_spacing))
    rng = np.random.default_rng([seed, stream])
    noisy, clean = low_dose_pair(image.hu[0], i0=i0, pixel_spacing_mm=spacing, rng=rng)
    job = noise.NoiseJob(i0=i0, seed=seed)  # one derivation: one derived series
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(derive_dataset(image.dataset, noisy[None], image.rescales, job.derivation, padding=image.padding,
                                extra=f"stream {stream}"), out)
    return clean


def train_for(pairs, seconds: float, lr: float, schedule: str = "constant") -> tuple[Denoiser, int]:
    """The bundled model trained on ``pairs`` for ``seconds`` of wall time, as ``adapt`` trains (its
    engine: steps, epochs and learning-rate schedule); the model and the number of steps."""
    den = Denoiser.load(None, ensemble=1)
    optimizer = Adam(den.model.parameters(), lr=lr)
    state = adapt.adapt_engine(den.model, optimizer, pairs, seconds, schedule, lr).run(LoopState())
    return den, state.step


def supervised(noisy: list[Path], clean: list[np.ndarray], seconds: float, seed: int) -> Denoiser:
    n = len(noisy)
    pairs = SupervisedPairs(2 * n, lambda i: load_ct(noisy[i]).hu[0] if i < n else clean[i - n],
                            Denoiser.load(None).window, PairConfig(mask_hu=1e9, swap=False),
                            np.random.default_rng(seed))
    return train_for(pairs, seconds, CEILING_LR, CEILING_SCHEDULE)[0]


def _mean(values) -> float:
    return float(np.mean(values))


def bench_series(name: str, n_slices: int, minutes: float, i0: float, seed: int, work: Path, log,
                 adapt_methods=ADAPT_METHODS) -> dict:
    files = scan(SHARED / name).series[0].files
    start = max(0, (len(files) - n_slices) // 2)
    chosen = files[start:start + n_slices]
    t0 = time.perf_counter()
    noisy_dir = work / name / "noisy"
    with ProcessPoolExecutor(2) as pool:  # noisy and clean from one sinogram per slice
        clean_hu = list(pool.map(_simulate, [f.path for f in chosen], [noisy_dir / f"{k:04d}.dcm" for k in
                                                                        range(len(chosen))],
                                 [i0] * len(chosen), [seed] * len(chosen), range(len(chosen))))
    log(f"{name}: {len(chosen)} slices of low-dose noise (I0 {i0:g}) in {time.perf_counter() - t0:.0f} s")
    noisy_paths = sorted(noisy_dir.iterdir())

    methods = {"bundled": Denoiser.load(None)}
    timing = {}
    for method in adapt_methods:
        t0 = time.perf_counter()
        result = adapt.run(work / name / "noisy", work / name / method, minutes=minutes, seed=seed,
                           show_progress=False, dose_i0=i0 if method == "recorrupted" else None,
                           method="neighbours" if method == "neighbours" else "recorrupted")
        timing[method] = {"seconds": time.perf_counter() - t0, "epochs": result.epochs}
        log(f"{name}: adapted ({method}) in {timing[method]['seconds']:.0f} s ({result.epochs} epochs)")
        methods[f"adapted-{method}"] = Denoiser.load(result.model_path)
    t0 = time.perf_counter()
    ceiling = supervised(noisy_paths, clean_hu, minutes * 60.0, seed)
    log(f"{name}: supervised ceiling trained in {time.perf_counter() - t0:.0f} s")
    methods["supervised"] = Denoiser(ceiling.model, ceiling.window, ceiling.metadata, "supervised")
    scores: dict[str, dict[str, list[float]]] = {m: {"psnr": [], "ssim": []}
                                                 for m in ("noisy", "nlm", *methods)}
    for noisy_path, clean in zip(noisy_paths, clean_hu, strict=True):
        noisy_hu = load_ct(noisy_path).hu[0]
        outputs = {"noisy": noisy_hu, "nlm": run_baseline("nlm", noisy_hu),
                   **{m: d(noisy_hu) for m, d in methods.items()}}
        for m, image in outputs.items():
            scores[m]["psnr"].append(metrics.psnr(clean, image, window=WINDOW))
            scores[m]["ssim"].append(metrics.ssim(clean, image, window=WINDOW))
    summary = {m: {"psnr": _mean(v["psnr"]), "ssim": _mean(v["ssim"])} for m, v in scores.items()}
    log(f"{name}: " + "  ".join(f"{m} {v['psnr']:.2f}/{v['ssim']:.3f}" for m, v in summary.items()))
    spacing = scan(noisy_dir).series[0].slice_spacing
    return {"label": SERIES.get(name, name), "slices": len(chosen), "slice_spacing_mm": spacing,
            "i0": i0, "adapt": timing, "minutes": minutes, "methods": summary}


def _source(path: Path) -> str:
    """``path``, with the commit that last changed it when git knows it (a kept file is often the
    committed results file that this run replaces)."""
    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%h", "--", path.name], cwd=path.resolve().parent,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{path} as of commit {commit}" if commit else str(path)


def keep(result: dict, old: dict, source: str, minutes: float) -> None:
    """Carry the adaptations measured in ``old`` (the same series, slices, dose and seed, a budget of
    ``minutes``) and not in ``result`` over into it, listed under ``result["kept"]``."""
    kept = [m for m in old["methods"] if m.startswith("adapted-") and m not in result["methods"]]
    for m in kept:
        result["methods"][m] = old["methods"][m]
        result["adapt"][m.removeprefix("adapted-")] = old["adapt"][m.removeprefix("adapted-")]
    if kept:
        result["methods"]["supervised"] = result["methods"].pop("supervised")  # the ceiling stays last
        result["kept"] = {"methods": kept, "from": source, "minutes": minutes}
        if set(kept) <= set(old.get("kept", {}).get("methods", ())):  # kept there too: name where they came from
            result["kept"].update({"from": old["kept"]["from"], "minutes": old["kept"].get("minutes", minutes)})


def carry_series(results: dict, old: dict, source: str) -> None:
    """Carry the series of ``old`` that this run did not measure over into ``results``, whole, marked
    as kept from ``source`` (a run of one series then rewrites the file with the other as it was)."""
    for name, series in old["series"].items():
        if name not in results["series"]:
            methods = [m for m in series["methods"] if m.startswith("adapted-")]
            was = series.get("kept")
            origin = source + (f" (which kept {', '.join(was['methods'])} from {was['from']})" if was else "")
            results["series"][name] = {**series, "kept": {"methods": methods, "from": origin,
                                                          "minutes": old["minutes"]}}


def markdown(results: dict) -> str:
    """One table per series: each method's PSNR / SSIM, its difference to the bundled model, and
    for an adaptation its wall time."""
    lines = []
    for r in results["series"].values():
        m = r["methods"]
        lines += [f"**{r['label']}**, {r['slices']} slices every {r['slice_spacing_mm']:.2g} mm, I0 {r['i0']:g}:", "",
                  "| method | PSNR dB / SSIM | vs bundled | adapt time |", "|---|---|---|---|"]
        for k, v in m.items():
            timing = r["adapt"].get(k.removeprefix("adapted-"))
            when = f"{timing['seconds'] / 60:.1f} min ({timing['epochs']} epochs)" if timing else ""
            mark = " (kept)" if k in r.get("kept", {}).get("methods", ()) else ""
            lines.append(f"| {k}{mark} | {v['psnr']:.2f} / {v['ssim']:.3f} | {v['psnr'] - m['bundled']['psnr']:+.2f} | "
                         f"{when} |")
        if "kept" in r:
            lines += ["", f"(kept): measured by an earlier run of the same series, slices, dose and seed with "
                          f"--minutes {r['kept'].get('minutes', r['minutes']):g}, {r['kept']['from']}."]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=9.0, help="adaptation (and supervised) time budget")
    ap.add_argument("--i0", type=float, default=1e5, help="low-dose photons per bin and view")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--series", default=",".join(SERIES), help="comma-separated shared folders")
    ap.add_argument("--methods", default=",".join(ADAPT_METHODS), help=f"comma-separated, of {ADAPT_METHODS}")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--keep", type=Path, help="a previous --json of the same slices, dose and seed: the "
                                              "adaptations and series not run now are carried over from it, "
                                              "marked as such with the budget they had")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED}: the shared CT data is needed")
    results = {"slices": args.slices, "minutes": args.minutes, "i0": args.i0, "seed": args.seed, "series": {}}
    previous = json.loads(args.keep.read_text()) if args.keep else None
    if previous and any(previous.get(k, 0) != results[k] for k in ("slices", "i0", "seed")):
        sys.exit(f"{args.keep}: measured with other --slices/--i0/--seed; nothing to keep")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.series.split(","):
            results["series"][name] = bench_series(name, args.slices, args.minutes, args.i0, args.seed, Path(tmp),
                                                   lambda s: print(s, flush=True), tuple(args.methods.split(",")))
            if previous and name in previous["series"]:
                keep(results["series"][name], previous["series"][name], _source(args.keep), previous["minutes"])
            if args.json:  # after each series: a long run keeps what it measured
                args.json.write_text(json.dumps(results, indent=2))
    if previous:
        carry_series(results, previous, _source(args.keep))
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(results))


if __name__ == "__main__":
    main()
