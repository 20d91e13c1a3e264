"""How should `ct-denoise adapt --noise-sd/--dose` train on recorrupted pairs?

For one held-out series, ``--slices`` contiguous slices get simulated low-dose
noise (as in ``benchmarks/adapt.py``, I0 1e5). Each variant (``--variants``,
``;``-separated, each a ``,``-separated list of ``key=value``: ``alpha``,
``lr``, ``schedule`` (``constant`` or ``cosine``), ``refresh``, ``batch``,
or ``kind=supervised`` for the ceiling trained on the clean FBP) trains the
bundled model for ``--minutes`` on
:class:`denoise.adaptation.RecorruptedPairs` with the fast noise model
(``denoise.noise.low_dose_noise`` at the simulated I0), and is scored by mean
PSNR against the clean FBP (window -1000..1000 HU), beside the bundled model.
The settings of ``pipelines.adapt`` (alpha 0.5, Adam peaking at 6e-4 with a
cosine decay over the budget, an eighth of the bank refreshed per epoch) come
from runs such as:

    python benchmarks/adapt_recorrupted.py lidc-chest \
        --variants "lr=3e-4,schedule=constant;lr=6e-4;lr=1e-3;alpha=0.7;kind=supervised"

Needs ../shared/data/ct. Measure with ``env -u OPENBLAS_CORETYPE``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

import adapt as bench  # noqa: E402  (benchmarks/adapt.py: the same simulation)

from denoise import metrics  # noqa: E402
from denoise.adaptation import ALPHA, PairConfig, RecorruptedPairs  # noqa: E402
from denoise.dicom import load_ct, scan  # noqa: E402
from denoise.inference import Denoiser  # noqa: E402
from denoise.noise import low_dose_noise  # noqa: E402
from pipelines import adapt  # noqa: E402

I0 = 1e5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("series", help="a folder of ../shared/data/ct")
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--variants", default="alpha=0.5,lr=3e-4;kind=supervised")
    args = ap.parse_args()
    files = scan(bench.SHARED / args.series).series[0].files
    start = max(0, (len(files) - args.slices) // 2)
    chosen = files[start:start + args.slices]
    n = len(chosen)
    spacing = float(np.mean(chosen[0].pixel_spacing))
    with tempfile.TemporaryDirectory() as tmp_name:
        noisy_dir = Path(tmp_name) / "noisy"
        with ProcessPoolExecutor(2) as pool:
            clean = list(pool.map(bench._simulate, [f.path for f in chosen],
                                  [noisy_dir / f"{k:04d}.dcm" for k in range(n)], [I0] * n, [0] * n, range(n)))
        noisy = [load_ct(p).hu[0] for p in sorted(noisy_dir.iterdir())]

    def noise(hu, rng):
        return low_dose_noise(hu, i0=I0, pixel_spacing_mm=spacing, rng=rng)

    def score(den) -> float:
        return round(float(np.mean([metrics.psnr(c, den(y), window=bench.WINDOW) for y, c in
                                    zip(noisy, clean, strict=True)])), 2)

    results = {"bundled": {"psnr_db": score(Denoiser.load(None))}}
    window = Denoiser.load(None).window
    for variant in args.variants.split(";"):
        kw = dict(item.split("=") for item in variant.split(",") if item)
        cfg = PairConfig(batch=int(kw.get("batch", 16)))
        rng = np.random.default_rng(0)
        if kw.get("kind") == "supervised":
            pairs = bench.SupervisedPairs(2 * n, lambda i: noisy[i] if i < n else clean[i - n], window,
                                          PairConfig(mask_hu=1e9, swap=False, batch=cfg.batch), rng)
        else:
            pairs = RecorruptedPairs(n, noisy.__getitem__, noise, window, cfg, rng,
                                     alpha=float(kw.get("alpha", ALPHA)),
                                     refresh=float(kw.get("refresh", adapt.REFRESH)))
        schedule = kw.get("schedule", adapt.SCHEDULES[adapt.RECORRUPTED])
        den, steps = bench.train_for(pairs, args.minutes * 60, float(kw.get("lr", adapt.LR_RECORRUPTED)), schedule)
        results[variant] = {"psnr_db": score(Denoiser(den.model, den.window, den.metadata, "variant")),
                            "steps": steps}
        print(variant, results[variant], flush=True)
    print(json.dumps({"series": args.series, "slices": n, "minutes": args.minutes, "results": results}))


if __name__ == "__main__":
    main()
