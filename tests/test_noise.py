"""Gaussian and low-dose (Poisson sinogram + FBP) noise."""

import numpy as np
import pytest

from denoise.noise import add_gaussian, low_dose_pair
from tests.factory import phantom_hu


def test_gaussian_has_the_requested_sigma_and_is_seeded():
    hu = np.zeros((256, 256), np.float32)
    a = add_gaussian(hu, sigma_hu=50, rng=np.random.default_rng(1))
    b = add_gaussian(hu, sigma_hu=50, rng=np.random.default_rng(1))
    c = add_gaussian(hu, sigma_hu=50, rng=np.random.default_rng(2))
    assert a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(a.std() - 50) < 1.0 and abs(a.mean()) < 0.5


def test_gaussian_rejects_bad_arguments():
    with pytest.raises(ValueError):
        add_gaussian(np.zeros(4), sigma_hu=-1, rng=np.random.default_rng())
    with pytest.raises(TypeError, match="Generator"):
        add_gaussian(np.zeros(4), sigma_hu=1, rng=0)


def _pair(i0, seed=0, n=64):
    hu = phantom_hu(n, n).astype(np.float32)
    noisy, clean = low_dose_pair(hu, i0=i0, pixel_spacing_mm=5.0, rng=np.random.default_rng(seed),
                                 n_views=96)
    return hu, noisy, clean


def test_low_dose_noise_scales_like_poisson():
    hu, noisy_hi, clean = _pair(1e6)
    _, noisy_lo, clean2 = _pair(1e4)
    assert np.array_equal(clean, clean2)  # the reference does not depend on dose or seed
    inner = np.hypot(*np.mgrid[-32:32, -32:32]) < 20
    s_hi = np.std((noisy_hi - clean)[inner])
    s_lo = np.std((noisy_lo - clean)[inner])
    # 100x fewer photons -> ~10x the noise (sqrt of the count ratio)
    assert 6 < s_lo / s_hi < 14
    assert abs(np.mean((noisy_lo - clean)[inner])) < 0.2 * s_lo


def test_low_dose_reference_is_close_to_the_input_and_keeps_padding():
    hu, noisy, clean = _pair(1e5)
    assert noisy.shape == clean.shape == hu.shape and noisy.dtype == np.float32
    inner = np.hypot(*np.mgrid[-32:32, -32:32]) < 20
    assert np.median(np.abs(clean - hu)[inner]) < 60  # FBP blurs edges, keeps values
    corner = (0, 0)
    assert clean[corner] == noisy[corner] == hu[corner] == -3024  # outside the FOV


def test_low_dose_is_seeded_and_handles_non_square():
    hu = phantom_hu(40, 56).astype(np.float32)
    a = low_dose_pair(hu, i0=1e5, pixel_spacing_mm=1.0, rng=np.random.default_rng(3), n_views=60)
    b = low_dose_pair(hu, i0=1e5, pixel_spacing_mm=1.0, rng=np.random.default_rng(3), n_views=60)
    assert a[0].shape == (40, 56)
    assert np.array_equal(a[0], b[0])


@pytest.mark.parametrize("kw", [{"i0": 0}, {"pixel_spacing_mm": -1}, {"n_views": 1}])
def test_low_dose_rejects_bad_arguments(kw):
    args = {"i0": 1e5, "pixel_spacing_mm": 1.0, "n_views": 30} | kw
    with pytest.raises(ValueError):
        low_dose_pair(np.zeros((8, 8)), rng=np.random.default_rng(), **args)


@pytest.mark.parametrize(("m", "n"), [(128, 512), (75, 300), (33, 130), (2, 7)])
def test_linear_upsampling_is_scipy_zoom_of_order_1(m, n):
    """The fast noise's variance map is upsampled by two matrix products; they must be exactly the
    linear ``ndimage.zoom`` (end points on end points) they replaced."""
    from scipy import ndimage

    from denoise.noise import _linear_upsampling

    x = np.random.default_rng(m).random((m, m))
    grow = _linear_upsampling(m, n)
    np.testing.assert_allclose(grow @ x @ grow.T, ndimage.zoom(x, n / m, order=1)[:n, :n], atol=1e-12)
    np.testing.assert_allclose(grow.sum(axis=1), 1.0)  # each output sample is a weighted mean


def test_noise_matched_adds_what_a_lower_dose_of_the_same_scanner_would(tmp_path):
    """``ct-denoise noise --matched F``: the series' own noise, measured on it, scaled to a dose
    fraction F (added SD = sqrt(1/F - 1) x the scan's); refused with another noise option."""
    import pydicom
    from typer.testing import CliRunner

    import cli
    from tests.factory import SIGMA, write_noisy_series

    write_noisy_series(tmp_path / "in", 8, image=np.full((96, 96), 40.0))
    runner = CliRunner()
    res = runner.invoke(cli.app, ["noise", str(tmp_path / "in"), str(tmp_path / "out"), "--matched", "0.2"])
    assert res.exit_code == 0 and "8 written" in res.output, res.output
    before = [pydicom.dcmread(p).pixel_array.astype(float) for p in sorted((tmp_path / "in").iterdir())]
    out = [pydicom.dcmread(p) for p in sorted((tmp_path / "out").iterdir())]
    added = np.stack([o.pixel_array.astype(float) for o in out]) - np.stack(before)
    assert added[:, 16:-16, 16:-16].std() == pytest.approx(2.0 * SIGMA, rel=0.15)  # sqrt(1/0.2 - 1) = 2
    assert "Scan-matched noise" in out[0].DerivationDescription
    bad = runner.invoke(cli.app, ["noise", str(tmp_path / "in"), str(tmp_path / "o2"), "--matched", "0.2",
                                  "--sigma", "5"])
    assert bad.exit_code == 2 and "exactly one of" in bad.output
    bad = runner.invoke(cli.app, ["noise", str(tmp_path / "in"), str(tmp_path / "o3"), "--matched", "1.5"])
    assert bad.exit_code == 2 and "dose fraction" in bad.output
