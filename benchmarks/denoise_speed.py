"""Seconds per 512x512 slice of `denoise` with the bundled model (or
``--model``), per self-ensemble size (median of ``--repeats`` after one
warm-up pass).

    env -u OPENBLAS_CORETYPE python benchmarks/denoise_speed.py
    env -u OPENBLAS_CORETYPE python benchmarks/denoise_speed.py --model training/real_noise_ct/checkpoints/last

Uses pydicom-data's 693_UNCI.dcm (a 512x512 head CT). A 2.5-D model is given
the slice's neighbours (the same slice, shifted by a pixel, stands in for
them: the work is the same). The target for the defaults (2 views) is under
0.6 s on 2 cores, neighbours included.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from denoise.dicom import load_ct  # noqa: E402
from denoise.inference import DEFAULT_ENSEMBLE, Denoiser  # noqa: E402
from denoise.samples import sample_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--views", default="1,2,4")
    ap.add_argument("--model", default=None, help="model path (default: the bundled model)")
    args = ap.parse_args()
    path = sample_path("693_UNCI.dcm")
    if path is None:
        sys.exit("pydicom-data's 693_UNCI.dcm is not installed")
    hu = load_ct(path).hu[0]
    for views in map(int, args.views.split(",")):
        den = Denoiser.load(args.model, ensemble=views)
        n = den.model.neighbours
        neighbours = [np.roll(hu, k + 1, axis=1) for k in range(2 * n)] if n else None
        den(hu, neighbours)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            den(hu, neighbours)
            times.append(time.perf_counter() - t0)
        mark = "  (default)" if views == DEFAULT_ENSEMBLE else ""
        given = f", {2 * n} neighbour slices" if n else ""
        print(f"{views} view(s), {hu.shape[0]}x{hu.shape[1]}{given}: {np.median(times):.3f} s median of "
              f"{args.repeats}{mark}")


if __name__ == "__main__":
    main()
