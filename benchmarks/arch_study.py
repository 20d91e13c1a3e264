"""Architecture study: denoising quality per FLOP for candidate ConvAutoencoder configs.

Trains each candidate for the same number of Adam steps on 64x64 patches of
real CT (``ricord-chest/dicom``, the training split; the recorded run used
``rider-chest``) with Gaussian noise of sigma ~ U(5, 120) HU added on the fly,
then reports PSNR on held-out slices of another patient (``ge-head``)
at sigma 25/50/100 HU (window [-1000, 1000] HU -> [0, 1], clipped, data_range
1), GFLOP per 512x512 slice and measured inference seconds.

    python benchmarks/arch_study.py            # ~15-25 min on 2 cores
    python benchmarks/arch_study.py --quick    # ~1 min smoke run
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from denoise import metrics
from denoise.dicom import load_ct, scan
from denoise.nn import Adam, ConvAutoencoder, clip_grad_norm, mse_loss

CANDIDATES = {
    "plain AE (original)": {"skip": "none", "residual": False},
    "U-Net add": {"skip": "add", "residual": False},
    "U-Net add + residual": {"skip": "add", "residual": True},
    "U-Net concat + residual": {"skip": "concat", "residual": True},
    "U-Net add + res, strided/transposed": {"skip": "add", "residual": True,
                                            "down": "strided_conv", "up": "transposed_conv"},
    "U-Net concat + res, strided/transposed": {"skip": "concat", "residual": True,
                                               "down": "strided_conv", "up": "transposed_conv"},
    "U-Net add + res, strided/transposed, 24/48/96": {
        "skip": "add", "residual": True, "down": "strided_conv", "up": "transposed_conv",
        "channels": [24, 48, 96]},
}
HU_LOW, HU_HIGH = -1000.0, 1000.0
VAL_SIGMAS_HU = (25, 50, 100)


def load_hu(folder: Path) -> np.ndarray:
    """Every CT slice under a folder as (S, H, W) float32 Hounsfield units (the package's loader)."""
    return np.concatenate([load_ct(f.path).hu for series in scan(folder).series for f in series.files])


def to_model_space(hu):
    return (hu - HU_LOW) / (HU_HIGH - HU_LOW)


def sample_patches(hu: np.ndarray, rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """n random size x size patches (model space), skipping mostly-air ones (<30% above -900 HU)."""
    out = np.empty((n, size, size, 1), np.float32)
    filled = 0
    while filled < n:
        s = rng.integers(hu.shape[0])
        y, x = rng.integers(0, hu.shape[1] - size + 1), rng.integers(0, hu.shape[2] - size + 1)
        patch = hu[s, y : y + size, x : x + size]
        if (patch > -900).mean() >= 0.3:
            out[filled, ..., 0] = to_model_space(patch)
            filled += 1
    return out


def add_noise(clean: np.ndarray, rng: np.random.Generator, sigma_hu) -> np.ndarray:
    """Gaussian noise; ``sigma_hu`` a number or one value per image (HU)."""
    sigma = np.asarray(sigma_hu, np.float32).reshape(-1, 1, 1, 1) / (HU_HIGH - HU_LOW)
    return (clean + sigma * rng.standard_normal(clean.shape, dtype=np.float32)).astype(np.float32)


def psnr(clean: np.ndarray, test: np.ndarray) -> float:
    """The package's PSNR (window -1000..1000 HU, data_range 1) of two model-space images."""
    def hu(x):
        return np.asarray(x) * (HU_HIGH - HU_LOW) + HU_LOW
    return metrics.psnr(hu(clean), hu(test), window=(HU_LOW, HU_HIGH))


def train(config: dict, hu: np.ndarray, *, steps: int, batch: int, size: int, seed: int):
    """Adam (lr 2e-3, cosine decay), MSE, grad-norm clip 1.0; returns (model, seconds/step)."""
    rng = np.random.default_rng(seed)
    model = ConvAutoencoder(config, np.random.default_rng(seed))
    opt = Adam(model.parameters(), lr=2e-3)
    t0 = time.perf_counter()
    for step in range(steps):
        clean = sample_patches(hu, rng, batch, size)
        noisy = add_noise(clean, rng, rng.uniform(5, 120, batch))
        opt.lr = 1e-5 + 0.5 * (2e-3 - 1e-5) * (1 + math.cos(math.pi * step / steps))
        model.zero_grad()
        _, dy = mse_loss(model.forward(noisy), clean)
        model.backward(dy)
        clip_grad_norm(model.gradients(), 1.0)
        opt.step(model.gradients())
    return model, (time.perf_counter() - t0) / steps


def evaluate(model, val_clean: np.ndarray, seed: int) -> dict:
    """Mean PSNR over validation slices per sigma (same noise for every model)."""
    out = {}
    for sigma in VAL_SIGMAS_HU:
        noisy = add_noise(val_clean, np.random.default_rng(seed + sigma), sigma)
        den = model.predict(noisy) if model is not None else noisy
        out[sigma] = float(np.mean([psnr(c, d) for c, d in zip(val_clean, den, strict=True)]))
    return out


def inference_seconds(model, repeats: int = 3) -> float:
    x = np.random.default_rng(0).random((1, 512, 512, 1), dtype=np.float32)
    model.predict(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/ct"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 15 steps, 2 validation slices")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--val-slices", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0, help="initialization and patch sampling")
    ap.add_argument("--only", action="append", choices=list(CANDIDATES), metavar="NAME",
                    help="run only this candidate (repeatable; default all)")
    ap.add_argument("--train", default="ricord-chest/dicom",
                    help="training series under --data (the committed manifests' training split)")
    ap.add_argument("--timing-only", action="store_true", help="no training: GFLOP and inference s")
    args = ap.parse_args()
    chosen = {k: v for k, v in CANDIDATES.items() if not args.only or k in args.only}
    if args.timing_only:
        for name, overrides in chosen.items():
            model = ConvAutoencoder(overrides, np.random.default_rng(0))
            print(f"| {name} | {model.flops(512, 512) / 1e9:.1f} | {inference_seconds(model):.3f} |")
        return
    steps, n_val = (15, 2) if args.quick else (args.steps, args.val_slices)

    hu_train = load_hu(args.data / args.train)
    hu_val = load_hu(args.data / "ge-head")
    pick = np.linspace(0, len(hu_val) - 1, n_val + 2).round().astype(int)[1:-1]  # skip end slices
    val_clean = to_model_space(hu_val[pick])[..., None]
    print(f"train: {len(hu_train)} {args.train} slices; validate: ge-head slices {pick.tolist()}; "
          f"{steps} steps x batch {args.batch} x {args.patch}^2 per candidate")

    rows = [("noisy input", None, evaluate(None, val_clean, 1), 0.0, 0.0, 0.0)]
    for name, overrides in chosen.items():
        model, step_s = train(overrides, hu_train, steps=steps, batch=args.batch, size=args.patch,
                              seed=args.seed)
        rows.append((name, overrides, evaluate(model, val_clean, 1), model.flops(512, 512) / 1e9,
                     inference_seconds(model), step_s))
        print(f"  done {name}: {rows[-1][2]}  ({step_s * 1e3:.0f} ms/step)", flush=True)

    print("\n| candidate | PSNR s25 | PSNR s50 | PSNR s100 | GFLOP/512^2 | infer s | train ms/step |")
    print("|---|---|---|---|---|---|---|")
    for name, _, p, gflop, inf_s, step_s in rows:
        print(f"| {name} | {p[25]:.2f} | {p[50]:.2f} | {p[100]:.2f} | {gflop:.1f} | {inf_s:.2f} | "
              f"{step_s * 1e3:.0f} |")


if __name__ == "__main__":
    main()
