"""Which neighbour slices should `ct-denoise adapt` train on?

For one held-out series, ``--slices`` contiguous slices get simulated low-dose
noise (as in ``benchmarks/adapt.py``); the model is adapted for ``--minutes``
with each neighbour set (``--sets``, e.g. ``"+-1;+-1,2"``), and every model,
with the bundled one, is scored by mean PSNR against the clean FBP (window
-1000..1000 HU). The 1.6 mm rule of ``denoise.adaptation.NEIGHBOUR_MM`` comes
from:

    python benchmarks/adapt_neighbours.py lidc-chest --sets "+-1;+-1,2"     # 1.0 mm spacing
    python benchmarks/adapt_neighbours.py rider-chest --sets "+-1,2;+-2,3"  # 0.8 mm spacing

Needs ../shared/data/ct. Measure with ``env -u OPENBLAS_CORETYPE``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

import adapt as bench  # noqa: E402  (benchmarks/adapt.py: the same simulation)

from denoise import metrics  # noqa: E402
from denoise.adaptation import PairConfig  # noqa: E402
from denoise.dicom import load_ct, scan  # noqa: E402
from denoise.inference import Denoiser  # noqa: E402
from pipelines import adapt  # noqa: E402

SETS = {"+-1": (-1, 1), "+-1,2": (-2, -1, 1, 2), "+-2,3": (-3, -2, 2, 3), "+-1,2,3": (-3, -2, -1, 1, 2, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("series", help="a folder of ../shared/data/ct")
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--sets", default="+-1;+-1,2", help=f"';'-separated, of {list(SETS)}")
    args = ap.parse_args()
    files = scan(bench.SHARED / args.series).series[0].files
    start = max(0, (len(files) - args.slices) // 2)
    chosen = files[start:start + args.slices]
    n = len(chosen)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        noisy_dir = tmp / "noisy"
        t0 = time.perf_counter()
        with ProcessPoolExecutor(2) as pool:
            clean = list(pool.map(bench._simulate, [f.path for f in chosen],
                                  [noisy_dir / f"{k:04d}.dcm" for k in range(n)], [1e5] * n, [0] * n, range(n)))
        print(f"{n} slices of low-dose noise in {time.perf_counter() - t0:.0f} s", flush=True)
        models = {}
        for label in args.sets.split(";"):
            result = adapt.run(noisy_dir, tmp / f"model{len(models)}", minutes=args.minutes, seed=0,
                               show_progress=False, pair_config=PairConfig(offsets=SETS[label]))
            models[label] = Denoiser.load(result.model_path)
        models["bundled"] = Denoiser.load(None)
        scores = {m: [] for m in ["noisy", *models]}
        for path, ref in zip(sorted(noisy_dir.iterdir()), clean, strict=True):
            hu = load_ct(path).hu[0]
            scores["noisy"].append(metrics.psnr(ref, hu, window=bench.WINDOW))
            for m, den in models.items():
                scores[m].append(metrics.psnr(ref, den(hu), window=bench.WINDOW))
    print(json.dumps({"series": args.series, "slice_spacing_mm": scan(bench.SHARED / args.series).series[0]
                      .slice_spacing, "psnr_db": {m: round(float(np.mean(v)), 2) for m, v in scores.items()}}))


if __name__ == "__main__":
    main()
