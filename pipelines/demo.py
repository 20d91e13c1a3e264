"""Job: the quick-start demo on CT that ships with the dependencies.

Copies pydicom's and pydicom-data's sample CT slices into ``out/input``,
adds Gaussian noise (``out/noisy``) and scores it against the originals.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from denoise.samples import sample_ct_files
from pipelines import evaluate, noise


def run(out_dir: str | os.PathLike, *, sigma_hu: float = 50.0, seed: int = 0) -> dict:
    out = Path(out_dir)
    inputs = out / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    for src in sample_ct_files():
        target = inputs / src.name
        if not target.exists():
            shutil.copyfile(src, target)
    noisy = noise.run(inputs, out / "noisy", sigma_hu=sigma_hu, seed=seed)
    scores = evaluate.run(inputs, out / "noisy", json_out=out / "metrics_noisy.json")
    return {"inputs": inputs, "noise": noisy, "noisy_vs_clean": scores}
