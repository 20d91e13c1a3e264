"""Metrics against known answers."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from denoise import metrics


def test_constant_offset_has_known_mse_rmse_psnr():
    ref = np.zeros((32, 32))
    test = ref + 100.0  # 100 HU off inside the default 2000-HU window
    assert metrics.mse(ref, test) == pytest.approx((100 / 2000) ** 2)
    assert metrics.rmse_hu(ref, test) == pytest.approx(100.0)
    assert metrics.psnr(ref, test) == pytest.approx(20 * np.log10(2000 / 100))


def test_window_clips_before_comparing():
    ref = np.full((16, 16), 1500.0)
    test = np.full((16, 16), 3000.0)  # both above the window: identical after clipping
    assert metrics.mse(ref, test) == 0.0
    assert metrics.psnr(ref, test) == np.inf
    assert metrics.mse(ref, test, window=(-1000, 4000)) == pytest.approx((1500 / 5000) ** 2)


def test_ssim_matches_skimage_with_data_range_one():
    rng = np.random.default_rng(0)
    ref = rng.uniform(-1000, 1000, (64, 64))
    test = ref + rng.normal(0, 80, ref.shape)
    expected = structural_similarity((np.clip(ref, -1000, 1000) + 1000) / 2000,
                                     (np.clip(test, -1000, 1000) + 1000) / 2000, data_range=1.0)
    assert metrics.ssim(ref, test) == pytest.approx(expected)
    assert metrics.ssim(ref, ref) == pytest.approx(1.0)


def test_mask_restricts_metrics_to_the_body():
    ref = np.full((32, 32), -1000.0)
    ref[8:24, 8:24] = 40.0
    test = ref.copy()
    test[ref < -500] += 200.0  # error only in the air
    mask = metrics.body_mask(ref)
    assert mask.sum() == 16 * 16
    assert metrics.mse(ref, test, mask=mask) == 0.0
    assert metrics.mse(ref, test) > 0


def test_body_mask_fills_lungs():
    hu = np.full((40, 40), -1000.0)
    hu[5:35, 5:35] = 40.0
    hu[12:28, 12:28] = -850.0  # lung inside the body
    assert metrics.body_mask(hu)[20, 20]


def test_compare_reports_window_and_data_range():
    res = metrics.compare(np.zeros((16, 16)), np.ones((16, 16)), window=(-100, 100))
    assert res["window_hu"] == [-100.0, 100.0] and res["data_range"] == 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.mse(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="low < high"):
        metrics.psnr(np.zeros(4), np.zeros(4), window=(5, 5))
    with pytest.raises(ValueError, match="no pixels"):
        metrics.mse(np.zeros((4, 4)), np.zeros((4, 4)), mask=np.zeros((4, 4), bool))
