"""No-reference quality measures against phantoms with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, special

from denoise import quality

GAUSS_10_90 = 2 * 1.2815516  # 10-90 % width of a Gaussian-blurred edge, in SDs
GAUSS_MTF50 = math.sqrt(math.log(2) / 2) / math.pi  # MTF50 x SD of a Gaussian blur


def disk(n: int = 256, *, radius_px: float = 110, inside: float = 40.0, outside: float = -1000.0) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return np.where(np.hypot(yy - n / 2, xx - n / 2) < radius_px, inside, outside)


def band_noise(n: int, spacing: float, f0: float, rng, *, width: float = 0.05, sd: float = 30.0) -> np.ndarray:
    """Stationary noise whose power is a Gaussian ring of radius ``f0`` cycles/mm."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n, spacing), np.fft.fftfreq(n, spacing), indexing="ij"))
    out = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * np.exp(-((f - f0) ** 2) / (2 * width ** 2))))
    return out * (sd / out.std())


def smooth_noise(shape, sd: float, rng, *, blur_px: float = 0.7) -> np.ndarray:
    """Correlated, band-limited noise like CT's: white noise through a Gaussian of ``blur_px``, SD exactly ``sd``."""
    noise = ndimage.gaussian_filter(rng.normal(size=shape), blur_px, mode="wrap")
    return noise * (sd / noise.std())


def blurred_disk(n: int, spacing: float, blur_mm: float, *, radius_mm: float) -> np.ndarray:
    """Air around a 40 HU disk whose edge is an ideal step blurred by a Gaussian of SD ``blur_mm``."""
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot((yy - n / 2 + 0.31) * spacing, (xx - n / 2 + 0.17) * spacing)  # off-grid centre
    return -1000.0 + 1040.0 * special.ndtr((radius_mm - r) / blur_mm)


@pytest.mark.parametrize("sigma", [10.0, 30.0, 60.0])
def test_white_noise_disk_sd_flat_nps_and_integral(sigma):
    rng = np.random.default_rng(int(sigma))
    spacing = (0.7, 0.7)
    image = disk() + rng.normal(0.0, sigma, (256, 256))
    layout = quality.plan(image, spacing)
    q = quality.measure(image, layout)

    assert abs(q.noise_sd_hu / sigma - 1) < 0.03
    assert q.nps_count >= 20
    assert abs(quality.nps_variance(q.nps, spacing) / sigma ** 2 - 1) < 0.05
    freq, values = quality.radial_nps(q.nps, spacing)
    level = sigma ** 2 * spacing[0] * spacing[1]  # white noise: NPS = sigma^2 dx dy everywhere
    ring = values[2:]  # the lowest rings hold the detrended-away power and few samples
    assert abs(ring.mean() / level - 1) < 0.05
    low, high = ring[: ring.size // 2].mean(), ring[ring.size // 2:].mean()
    assert abs(high / low - 1) < 0.1  # flat


def test_noise_sd_sees_only_soft_tissue():
    """Noise in fat and in air is not soft tissue: only the disk's own noise counts."""
    rng = np.random.default_rng(1)
    image = disk(inside=-100.0) + rng.normal(0, 40, (256, 256))  # fat: outside 0..100 HU
    with pytest.raises(quality.NoUniformRegion, match="no uniform soft-tissue region"):
        quality.noise_sd(image, (0.7, 0.7))
    image = disk() + rng.normal(0, 5, (256, 256))
    image[disk() < 0] += rng.normal(0, 80, int((disk() < 0).sum()))  # noisy air
    assert abs(quality.noise_sd(image, (0.7, 0.7)) / 5 - 1) < 0.03


@pytest.mark.parametrize("water_hu", [0.0, 10.0, -5.0])
def test_water_phantom_noise_does_not_depend_on_its_hu(water_hu):
    """Physicists measure noise in a water phantom first. Its windows are judged by their mean, so the
    water's own noise is not clipped: the same noise measures the same at 0, 10 or -5 HU as at 40 HU
    (19.1 HU; a per-pixel 0..100 HU test gave 18.2 at 0 HU, 18.8 at 10 HU and nothing at -5 HU)."""
    noise = smooth_noise((256, 256), 20.0, np.random.default_rng(28))
    sd = quality.noise_sd(water_hu + noise, (0.7, 0.7))
    assert sd == pytest.approx(quality.noise_sd(40.0 + noise, (0.7, 0.7)), rel=1e-3)
    assert abs(sd / 20.0 - 1) < 0.06  # the 6 mm window itself loses about 4 % of this correlated noise


@pytest.mark.parametrize("spacing", [0.5, 0.8])
@pytest.mark.parametrize("f0", [0.2, 0.35])
def test_band_limited_noise_peaks_at_f0(spacing, f0):
    rng = np.random.default_rng(7)
    image = disk(256, radius_px=120) + band_noise(256, spacing, f0, rng)
    q = quality.measure(image, quality.plan(image, (spacing, spacing)))
    peak, mean = quality.nps_frequencies(*quality.radial_nps(q.nps, (spacing, spacing)))
    assert q.nps_count >= 20
    assert abs(peak / f0 - 1) < 0.05
    assert q.summary()["nps_peak_freq_mm"] == pytest.approx(peak)


def test_nps_matches_icru_formula_and_mean_frequency_is_power_weighted():
    rng = np.random.default_rng(3)
    rois = rng.normal(0, 10, (40, 16, 16))
    nps = quality.nps_2d(rois, (0.5, 0.8), detrend_order=0)
    by_hand = np.mean([np.abs(np.fft.fft2(r - r.mean())) ** 2 for r in rois], axis=0) * 0.5 * 0.8 / 256
    np.testing.assert_allclose(nps, by_hand, rtol=1e-12, atol=1e-20)
    freq = np.array([0.0, 0.1, 0.2, 0.3])
    peak, mean = quality.nps_frequencies(freq, np.array([0.0, 1.0, 3.0, 1.0]))
    assert peak == pytest.approx(0.2)  # symmetric neighbours: the parabola keeps the bin
    assert mean == pytest.approx((0.1 + 0.6 + 0.3) / 5)


def test_detrend_removes_a_quadratic_surface_exactly():
    yy, xx = np.mgrid[:20, :20].astype(float)
    surface = 3 + 0.2 * xx - 0.1 * yy + 0.01 * xx * yy + 0.02 * xx ** 2
    assert np.abs(quality.detrend(surface[None])).max() < 1e-9
    assert np.abs(quality.detrend(surface[None], order=1)).max() > 0.1


@pytest.mark.parametrize("spacing", [0.5, 0.8])
@pytest.mark.parametrize("blur_mm", [0.6, 1.0])
def test_edge_width_and_mtf50_of_a_gaussian_blurred_edge(spacing, blur_mm):
    image = blurred_disk(256, spacing, blur_mm, radius_mm=0.4 * 256 * spacing)
    edges = quality.find_edges(image, (spacing, spacing))
    assert edges is not None and edges.count >= 100
    esf = quality.edge_spread(image, edges)
    assert abs(quality.edge_width(edges.offsets_mm, esf) / (GAUSS_10_90 * blur_mm) - 1) < 0.05
    assert abs(quality.mtf50(edges.offsets_mm, esf) * blur_mm / GAUSS_MTF50 - 1) < 0.05


def test_edges_found_on_before_measure_the_blur_of_after():
    spacing = (0.7, 0.7)
    rng = np.random.default_rng(5)
    sharp = blurred_disk(256, 0.7, 0.5, radius_mm=70)
    before = sharp + rng.normal(0, 20, sharp.shape)
    after = ndimage.gaussian_filter(sharp, 0.8 / 0.7)  # extra blur of SD 0.8 mm
    layout = quality.plan(before, spacing)
    b, a = quality.measure(before, layout).summary(), quality.measure(after, layout).summary()
    assert abs(b["edge_width_mm"] / (GAUSS_10_90 * 0.5) - 1) < 0.05
    assert abs(a["edge_width_mm"] / (GAUSS_10_90 * math.hypot(0.5, 0.8)) - 1) < 0.05
    change = quality.change(b, a)
    assert change["edge_width_change_pct"] == pytest.approx(100 * (a["edge_width_mm"] / b["edge_width_mm"] - 1))
    assert change["noise_reduction_pct"] > 90


def test_residual_structure_low_for_noise_high_for_edges():
    rng = np.random.default_rng(11)
    clean = blurred_disk(256, 0.7, 0.4, radius_mm=70)
    clean[100:140, 60:200] += 300  # an inner structure with its own edges
    noise = rng.normal(0, 20, clean.shape)
    before = clean + noise
    mask = clean > -500
    pure_noise = quality.residual_structure(before, clean, mask=mask)  # residual = the noise
    blurred_edges = quality.residual_structure(before, before - (clean - ndimage.gaussian_filter(clean, 2.0)),
                                               mask=mask)  # residual = what a blur takes from the edges
    assert pure_noise < 0.1
    assert blurred_edges > 0.5
    assert quality.residual_structure(before, before, mask=mask) == 0.0
    assert quality.residual_sd(before, clean, mask=mask) == pytest.approx(noise[mask].std(ddof=1))


def test_user_rois_override_the_automatic_region():
    rng = np.random.default_rng(2)
    image = np.full((64, 64), 1000.0)  # bone everywhere: no soft tissue at all
    image[:20, :20] = 50 + rng.normal(0, 10, (20, 20))
    image[30:60, 30:60] = -50 + rng.normal(0, 20, (30, 30))
    rois = [(0, 0, 20, 20), (30, 30, 30, 30)]  # x, y, w, h
    pooled = math.sqrt((np.var(image[:20, :20], ddof=1) * 399 + np.var(image[30:60, 30:60], ddof=1) * 899) / 1298)
    assert quality.roi_noise_sd(image, rois) == pytest.approx(pooled)
    layout = quality.plan(image, (0.7, 0.7), rois=rois)
    q = quality.measure(image, layout)
    assert q.noise_sd_hu == pytest.approx(pooled)
    assert q.nps_count == 2 and q.nps.shape == (20, 20)
    with pytest.raises(ValueError, match="does not fit a 64x64 image"):
        quality.plan(image, (0.7, 0.7), rois=[(50, 50, 20, 20)])


def test_lung_only_crop_and_tiny_image_measure_nothing_and_say_why():
    rng = np.random.default_rng(4)
    lung = -850 + rng.normal(0, 30, (128, 128))
    layout = quality.plan(lung, (0.7, 0.7))
    summary = quality.measure(lung, layout).summary()
    assert all(summary[k] is None for k in quality.MEASURE_KEYS)
    text = " ".join(layout.notes)
    assert "no uniform soft-tissue region" in text and "NPS" in text and "edge width" in text
    tiny = quality.plan(40 + rng.normal(0, 10, (12, 12)), (0.7, 0.7))
    assert any("smaller than one" in n for n in tiny.notes)
    no_spacing = quality.plan(disk(128, radius_px=50) + rng.normal(0, 10, (128, 128)), None)
    q = quality.measure(disk(128, radius_px=50), no_spacing).summary()
    assert q["nps_peak_freq_mm"] is None and q["edge_width_mm"] is None
    assert any("no PixelSpacing" in n for n in no_spacing.notes)


def test_neighbour_difference_cancels_shared_anatomy():
    """Two slices with the same fine anatomy and independent noise: the NPS
    of their difference is the noise's, where one slice's own NPS also holds
    the anatomy."""
    rng = np.random.default_rng(9)
    spacing = (0.7, 0.7)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (256, 256)), 1.5)
    anatomy = disk() + texture * (12 / texture.std())  # fine texture the noise level cannot tell from noise
    a = anatomy + band_noise(256, 0.7, 0.35, rng, sd=20)
    b = anatomy + band_noise(256, 0.7, 0.35, rng, sd=20)
    la, lb = quality.plan(a, spacing), quality.plan(b, spacing)
    corners = quality.neighbour_rois(a, b, la, lb)
    assert len(corners) >= 10
    diff = quality.neighbour_nps(a, b, corners, la)
    peak, _ = quality.nps_frequencies(*quality.radial_nps(diff.nps, spacing))
    assert abs(peak / 0.35 - 1) < 0.05
    assert abs(math.sqrt(quality.nps_variance(diff.nps, spacing)) / 20 - 1) < 0.1
    single = quality.measure(a, la)
    assert math.sqrt(quality.nps_variance(single.nps, spacing)) > 1.08 * 20  # the anatomy is in it

    changed = b.copy()
    changed[:, 128:] += 3 * texture[:, ::-1][:, 128:] * (12 / texture.std())  # anatomy that differs, right half
    kept = quality.neighbour_rois(a, changed, la, lb)
    assert kept and all(x < 128 for x, _ in kept)  # corners are (x, y): x is the column
    assert any(x >= 128 for x, _ in corners)


def test_pooling_weights_by_roi_and_profile_counts():
    one = quality.Quality(noise_sd_hu=10.0, nps=np.full((4, 4), 1.0), nps_count=1, pixel_spacing=(1.0, 1.0),
                          esf=np.zeros(3), offsets_mm=np.arange(3.0), edge_count=1)
    three = quality.Quality(noise_sd_hu=20.0, nps=np.full((4, 4), 5.0), nps_count=3, pixel_spacing=(1.0, 1.0),
                            esf=np.full(3, 4.0), offsets_mm=np.arange(3.0), edge_count=3)
    pooled = quality.Quality.pool([one, three])
    assert pooled.noise_sd_hu == 15.0 and pooled.nps_count == 4 and pooled.edge_count == 4
    np.testing.assert_allclose(pooled.nps, 4.0)
    np.testing.assert_allclose(pooled.esf, 3.0)


def test_cross_check_nps_with_pylinac():
    """pylinac's ICRU 87 NPS (mean-subtracted ROIs) equals ours with order-0 detrending."""
    nps_module = pytest.importorskip("pylinac.core.nps")
    rng = np.random.default_rng(0)
    rois = [rng.normal(0, 15, (32, 32)) for _ in range(10)]
    theirs = nps_module.noise_power_spectrum_2d(0.6, rois)  # fftshifted
    ours = np.fft.fftshift(quality.nps_2d(np.stack(rois), (0.6, 0.6), detrend_order=0))
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-9)  # atol: the zero-frequency bin
