"""Classical baselines: each one denoises, keeps the contract (float32 HU,
same shape, out-of-window pixels in place) and reports bad names and missing
optional packages clearly."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from denoise import baselines
from denoise.baselines import (
    BASELINES,
    BaselineUnavailable,
    available_baselines,
    estimate_noise_hu,
    run_baseline,
)
from denoise.metrics import mse
from denoise.noise import add_gaussian


def phantom(n: int = 128) -> np.ndarray:
    """Piecewise-constant slice: padding corners, water body, lung, soft
    tissue, and a dense bone above the window."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    r = np.hypot(yy, xx)
    img = np.full((n, n), -3024.0, dtype=np.float32)      # scanner padding
    img[r < 0.5 * n] = -1000.0                             # air inside the field of view
    img[r < 0.42 * n] = 0.0                                # body (water)
    img[(np.abs(yy + 0.12 * n) < 0.12 * n) & (np.abs(xx + 0.15 * n) < 0.1 * n)] = -800.0  # lung
    img[(np.abs(yy + 0.12 * n) < 0.12 * n) & (np.abs(xx - 0.15 * n) < 0.1 * n)] = 60.0    # tissue
    img[np.hypot(yy - 0.2 * n, xx) < 0.09 * n] = 3000.0   # dense bone
    return img


@pytest.fixture(scope="module")
def noisy_pair():
    clean = phantom()
    noisy = add_gaussian(clean, sigma_hu=50.0, rng=np.random.default_rng(7))
    return noisy, clean


@pytest.fixture(scope="module", params=available_baselines())
def denoised(request, noisy_pair):
    noisy, _ = noisy_pair
    return request.param, run_baseline(request.param, noisy)


def test_every_baseline_is_registered_and_the_cheap_ones_always_available():
    assert set(BASELINES) == {"nlm", "tv", "wavelet", "bm3d"}
    assert {"nlm", "tv"} <= set(available_baselines())


def test_baseline_reduces_error(denoised, noisy_pair):
    name, out = denoised
    noisy, clean = noisy_pair
    assert mse(clean, out) < 0.5 * mse(clean, noisy), name


def test_baseline_returns_float32_of_same_shape(denoised, noisy_pair):
    name, out = denoised
    assert out.dtype == np.float32 and out.shape == noisy_pair[0].shape, name


def test_values_far_outside_the_window_stay_in_place(denoised, noisy_pair):
    name, out = denoised
    _, clean = noisy_pair
    assert out[clean == -3024.0].max() < -1000.0, name
    assert out[clean == 3000.0].min() > 1000.0, name


def test_blind_estimate_matches_the_added_noise(noisy_pair):
    noisy, clean = noisy_pair
    assert estimate_noise_hu(clean) == 0.0
    assert estimate_noise_hu(noisy) == pytest.approx(50.0, rel=0.1)


def test_noiseless_slice_comes_back_unchanged():
    clean = phantom(64)
    np.testing.assert_array_equal(run_baseline("tv", clean), clean)


def test_given_sigma_is_used_instead_of_the_estimate(noisy_pair):
    noisy, _ = noisy_pair
    gentle = run_baseline("tv", noisy, sigma_hu=5.0)
    strong = run_baseline("tv", noisy, sigma_hu=200.0)
    assert np.std(np.diff(strong, axis=1)[40:80, 40:80]) < np.std(np.diff(gentle, axis=1)[40:80, 40:80])


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="nlm, tv, wavelet, bm3d"):
        run_baseline("median", phantom(32))


def test_rejects_a_volume():
    with pytest.raises(ValueError, match="2-D"):
        run_baseline("tv", np.zeros((2, 32, 32), np.float32))


def test_missing_bm3d_raises_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # makes `import bm3d` fail
    assert "bm3d" not in available_baselines()
    with pytest.raises(BaselineUnavailable, match=r"pip install \.\[bm3d\]"):
        baselines.denoise_bm3d(phantom(32))
    with pytest.raises(ImportError):  # callers may catch the standard error too
        run_baseline("bm3d", phantom(32))
