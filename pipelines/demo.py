"""Job: the quick-start demo on CT that ships with the dependencies.

Copies pydicom's and pydicom-data's sample CT slices into ``out/input``, adds
Gaussian noise (``out/noisy``), denoises it with the bundled model
(``out/denoised``), scores model, noisy input and classical baselines against
the originals (``out/evaluation.json``), measures noise, texture and
sharpness of the noisy input against the denoised output without a
reference (``out/qa.json``, as ``ct-denoise qa`` does) and writes the HTML
report (``out/report/index.html``). Each step is the same job the CLI runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from denoise.baselines import available_baselines
from denoise.samples import sample_ct_files
from pipelines import denoise_folder, evaluate, noise, qa, report

DEMO_BASELINES = ("nlm", "tv", "wavelet")  # BM3D (~10 s per slice) only in benchmarks/quality.py


def run(out_dir: str | os.PathLike, *, sigma_hu: float = 50.0, seed: int = 0, model_path=None,
        on_step=None) -> dict:
    out = Path(out_dir)
    inputs = out / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    for src in sample_ct_files():
        target = inputs / src.name
        if not target.exists():
            shutil.copyfile(src, target)

    def step(text):
        if on_step is not None:
            on_step(text)

    step(f"adding Gaussian noise (sigma {sigma_hu:g} HU)")
    noisy = noise.run(inputs, out / "noisy", sigma_hu=sigma_hu, seed=seed)
    step("denoising with the model")
    denoised = denoise_folder.run(out / "noisy", out / "denoised", model_path=model_path)
    step("evaluating against the originals and the classical baselines")
    names = [b for b in DEMO_BASELINES if b in available_baselines()]
    scores = evaluate.run(inputs, out / "denoised", noisy=out / "noisy", baselines=names, test_label="model",
                          json_out=out / "evaluation.json")
    step("measuring noise, texture and sharpness before and after (no reference)")
    measured = qa.run(out / "noisy", out / "denoised", json_out=out / "qa.json")
    step("writing the report")
    html = report.run(out, out / "report", force=True)  # the demo's own folder: a rerun rewrites it
    return {"inputs": inputs, "noise": noisy, "denoise": denoised, "evaluation": scores, "qa": measured,
            "report": html}
