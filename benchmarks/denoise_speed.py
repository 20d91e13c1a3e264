"""Seconds per 512x512 slice of `denoise` with the bundled model, per
self-ensemble size (median of ``--repeats`` after one warm-up pass).

    env -u OPENBLAS_CORETYPE python benchmarks/denoise_speed.py

Uses pydicom-data's 693_UNCI.dcm (a 512x512 head CT). The target for the
defaults (2 views) is under 0.6 s on 2 cores.
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
    args = ap.parse_args()
    path = sample_path("693_UNCI.dcm")
    if path is None:
        sys.exit("pydicom-data's 693_UNCI.dcm is not installed")
    hu = load_ct(path).hu[0]
    for views in map(int, args.views.split(",")):
        den = Denoiser.load(None, ensemble=views)
        den(hu)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            den(hu)
            times.append(time.perf_counter() - t0)
        mark = "  (default)" if views == DEFAULT_ENSEMBLE else ""
        print(f"{views} view(s), {hu.shape[0]}x{hu.shape[1]}: {np.median(times):.3f} s median of {args.repeats}{mark}")


if __name__ == "__main__":
    main()
