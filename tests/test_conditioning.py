"""Noise-level input and strength: training batches carry the true level, a
warm start gains the input without changing what the model computes, and
`denoise --strength/--noise-sd` do what they say."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from denoise.conditioning import LEVEL_SCALE, STRENGTHS, network_input, parse_strength
from denoise.config import NoiseConfig, PatchConfig
from denoise.inference import Denoiser
from denoise.nn import ConvAutoencoder, save_model
from denoise.noise import FBP_FILTERS, project, reconstruct
from denoise.normalize import HUWindow
from denoise.training_data import Slice, TrainingPatches
from tests.factory import body_phantom, write_noisy_series

WINDOW = HUWindow()


def slices(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [Slice((body_phantom(64, radius_mm=18) + rng.normal(0, 5, (64, 64))).astype(np.float32), 0.7, f"s{k}")
            for k in range(n)]


def test_gaussian_batches_carry_their_true_level_to_the_known_share():
    noise = NoiseConfig(gaussian_sigma_hu=(50.0, 50.0), known_level_fraction=0.5)
    patches = TrainingPatches(slices(), window=WINDOW, noise=noise, patches=PatchConfig(size=32, batch_size=64),
                              rng=np.random.default_rng(0), conditioned=True)
    x, clean = patches.batch()
    assert x.shape == (64, 32, 32, 3) and clean.shape == (64, 32, 32, 1)
    known = x[:, 0, 0, 2] == 1
    assert 16 < known.sum() < 48  # about half
    np.testing.assert_allclose(x[known, :, :, 1], 50 / 2000 * LEVEL_SCALE, rtol=1e-6)
    np.testing.assert_array_equal(x[~known, :, :, 1:], 0)
    assert abs(np.std(x[..., 0] - clean[..., 0]) * 2000 / 50 - 1) < 0.05


def test_low_dose_and_textured_patches_are_labelled_with_the_noise_actually_added():
    noise = NoiseConfig(gaussian_sigma_hu=(20.0, 20.0), low_dose_fraction=0.5, low_dose_i0=(2e5, 4e5),
                        low_dose_bank_slices=2, low_dose_refresh=1, low_dose_views=90,
                        low_dose_filters=("ramp", "hann"), textured_fraction=1.0, textured_i0_min=2e5,
                        known_level_fraction=1.0, known_level_fraction_low_dose=1.0)
    flat = [Slice(np.full((64, 64), 40.0, np.float32), 0.7, f"flat{k}") for k in range(3)]  # no noise of their own
    patches = TrainingPatches(flat, window=WINDOW, noise=noise, patches=PatchConfig(size=32, batch_size=32),
                              rng=np.random.default_rng(1), conditioned=True)
    x, clean = patches.batch()
    level = x[:, 0, 0, 1] / LEVEL_SCALE
    rms = np.sqrt(np.mean((x[..., 0] - clean[..., 0]) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(level, rms, rtol=0.25)  # Gaussian: sigma vs its sample; low dose: exact RMS
    textured = np.isclose(level, 20 / 2000, rtol=1e-6)
    assert textured.any() and (~textured).any()  # both kinds in the batch
    # A textured target is a low-dose realization: it carries its own noise, the flat slices none.
    assert (clean[textured, ..., 0].std(axis=(1, 2)) > 1 / 2000).all()


def test_fbp_filters_go_from_sharp_to_smooth_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (64, 64)).astype(np.float32)
    proj = project(np.full((64, 64), -1000, np.float32), pixel_spacing_mm=1.0, n_views=90)
    sd = []
    for name in FBP_FILTERS:
        sino = proj.line_integrals + 0.01 * rng.standard_normal(proj.line_integrals.shape)
        sd.append(np.std(reconstruct(proj, sino, filter_name=name)[16:48, 16:48]))
    assert sd == sorted(sd, reverse=True)  # ramp the noisiest, hann the smoothest
    with pytest.raises(ValueError, match="filter_name must be one of"):
        reconstruct(proj, proj.line_integrals, filter_name="sharpest")
    assert noise.shape == (64, 64)


def test_warm_start_gains_the_level_input_and_computes_the_same(tmp_path):
    from pipelines.train import warm_start

    rng = np.random.default_rng(3)
    plain = ConvAutoencoder({"channels": [4, 8]}, rng)
    save_model(tmp_path / "v1", plain, metadata={"normalization": WINDOW.to_dict()})
    conditioned = ConvAutoencoder({"channels": [4, 8], "noise_level_input": True}, rng)

    class Cfg:  # the two fields warm_start reads
        class training:
            init = str(tmp_path / "v1")
            device = "cpu"

    warm_start(conditioned, Cfg)
    x = rng.random((2, 16, 16, 1), dtype=np.float32)
    for given in (network_input(x), network_input(x, 0.05)):
        np.testing.assert_allclose(conditioned.predict(given), plain.predict(x), rtol=1e-6, atol=1e-6)


@pytest.fixture
def conditioned_model(tmp_path):
    rng = np.random.default_rng(4)
    model = ConvAutoencoder({"channels": [4, 8], "noise_level_input": True}, rng)
    path = tmp_path / "cond"
    save_model(path, model, metadata={"normalization": WINDOW.to_dict(), "name": "cond"})
    return path


def test_strength_blends_the_correction_linearly(conditioned_model):
    hu = body_phantom(64, radius_mm=18) + np.random.default_rng(0).normal(0, 30, (64, 64))
    full = Denoiser.load(conditioned_model, strength="high", ensemble=1)(hu)
    for name, value in STRENGTHS.items():
        out = Denoiser.load(conditioned_model, strength=name, ensemble=1)(hu)
        np.testing.assert_allclose(out, hu + value * (full - hu), atol=1e-2)
    np.testing.assert_allclose(Denoiser.load(conditioned_model, strength=0, ensemble=1)(hu), hu, atol=1e-3)
    assert parse_strength("0.25") == 0.25 and parse_strength("Medium") == STRENGTHS["medium"]
    for bad in ("1.5", "-0.1", "max", None):
        with pytest.raises(ValueError, match="--strength must be low, medium, high or a number 0..1"):
            parse_strength(bad)


def test_noise_sd_reaches_the_network_and_needs_a_conditioned_model(conditioned_model, tiny_model_path):
    hu = body_phantom(64, radius_mm=18).astype(np.float32)
    blind = Denoiser.load(conditioned_model, ensemble=1)
    given = Denoiser.load(conditioned_model, noise_sd_hu=40.0, ensemble=1)
    x = WINDOW.to_model(hu)[None, ..., None]
    np.testing.assert_array_equal(blind.network_input(x)[..., 1:], 0)
    np.testing.assert_allclose(given.network_input(x)[..., 1], 40 / 2000 * LEVEL_SCALE, rtol=1e-6)
    assert not np.allclose(blind(hu), given(hu))
    with pytest.raises(ValueError, match="needs a model with a noise-level input"):
        Denoiser.load(tiny_model_path, noise_sd_hu=10.0)
    with pytest.raises(ValueError, match="--noise-sd must be a number of HU >= 0"):
        Denoiser.load(conditioned_model, noise_sd_hu=-1.0)


def test_denoise_cli_records_strength_and_level_and_refuses_bad_ones(tmp_path, conditioned_model, tiny_model_path):
    import pydicom

    write_noisy_series(tmp_path / "in", 1)
    runner = CliRunner()
    result = runner.invoke(cli.app, ["denoise", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                                     str(conditioned_model), "--strength", "medium", "--noise-sd", "25"])
    assert result.exit_code == 0, result.output
    ds = pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))
    assert "strength 0.667 (medium), noise SD 25 HU given" in ds.DerivationDescription
    result = runner.invoke(cli.app, ["denoise", str(tmp_path / "in"), str(tmp_path / "out2"), "--model",
                                     str(conditioned_model)])
    assert result.exit_code == 0
    ds = pydicom.dcmread(next((tmp_path / "out2").rglob("*.dcm")))
    assert "strength 1 (high), noise SD judged by the network" in ds.DerivationDescription
    for args, message in ((["--strength", "2"], "--strength must be"),
                          (["--model", str(tiny_model_path), "--noise-sd", "10"], "needs a model with a noise")):
        bad = runner.invoke(cli.app, ["denoise", str(tmp_path / "in"), str(tmp_path / "bad"),
                                      *(["--model", str(conditioned_model)] if "--model" not in args else []),
                                      *args])
        assert bad.exit_code == 2 and message in bad.output, bad.output
        assert not (tmp_path / "bad").exists()


def test_a_stated_level_bounds_what_is_removed():
    from scipy import ndimage

    from denoise.conditioning import LIMIT_FACTOR, limit_correction

    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.02, (128, 128)).astype(np.float32)
    kept = limit_correction(noise, 0.02)
    assert np.sum(kept ** 2) > 0.97 * np.sum(noise ** 2)  # the noise it was told of goes almost untouched
    edge = np.zeros((128, 128), np.float32)
    edge[:, 64:] = 0.3  # what blurring an edge would remove: far more than the stated noise
    limited = limit_correction(noise + edge, 0.02)
    local = np.sqrt(ndimage.gaussian_filter(limited ** 2, 3.0))
    assert local.max() <= LIMIT_FACTOR * 0.02 * 1.05
    assert not limit_correction(noise + edge, 0.0).any()
    removed = [np.sum(limit_correction(noise + edge, level) ** 2) for level in (0.005, 0.01, 0.02, 0.04)]
    assert removed == sorted(removed)  # more stated noise, more removed


def test_noise_sd_zero_leaves_the_slice_exactly_as_it_is(conditioned_model):
    hu = (body_phantom(64, radius_mm=18) + np.random.default_rng(0).normal(0, 30, (64, 64))).astype(np.float32)
    out = Denoiser.load(conditioned_model, noise_sd_hu=0.0, ensemble=4)(hu)
    assert np.sqrt(np.mean((out - hu) ** 2)) < 0.01


@pytest.fixture(scope="module")
def sample_slice():
    from denoise.dicom import load_ct
    from denoise.samples import sample_ct_files

    path = next(p for p in sample_ct_files() if load_ct(p).hu.shape[1:] == (512, 512))
    return load_ct(path).hu[0]


def test_bundled_model_more_strength_or_more_noise_removes_more(sample_slice):
    """The shipped model: --noise-sd 0 changes nothing; a higher noise SD or a
    higher strength removes more, monotonically."""
    hu = sample_slice + np.random.default_rng(0).normal(0, 40, sample_slice.shape).astype(np.float32)
    base = Denoiser.load(None, ensemble=1)
    assert base.model.in_channels == 3, "the bundled model has a noise-level input"

    def removed(**kw):
        import dataclasses

        out = dataclasses.replace(base, **kw)(hu)
        return float(np.sqrt(np.mean((out - hu) ** 2)))

    assert removed(noise_sd_hu=0.0) < 2.0
    by_level = [removed(noise_sd_hu=s) for s in (0.0, 10.0, 20.0, 40.0, 80.0)]
    assert by_level == sorted(by_level) and by_level[-1] > 20
    by_strength = [removed(strength=s) for s in (0.0, STRENGTHS["low"], STRENGTHS["medium"], STRENGTHS["high"])]
    assert by_strength == sorted(by_strength) and by_strength[0] < 1e-3


def test_bundled_model_does_no_harm_to_a_held_out_sharp_kernel(shared_ct):
    """LIDC (Philips D, sharp; held out of training): with defaults, the slice
    with nothing added changes by less than its own noise with edges within
    5 %, and with 25 HU added the output is better than the noisy input."""
    from denoise import metrics, quality
    from denoise.dicom import load_ct, scan
    from denoise.noise import add_gaussian

    files = scan(shared_ct / "lidc-chest").series[0].files
    hu = load_ct(files[len(files) // 2].path).hu[0]
    spacing = files[0].pixel_spacing
    den = Denoiser.load(None)
    out = den(hu)
    layout = quality.plan(hu, spacing)
    before, after = quality.measure(hu, layout).summary(), quality.measure(out, layout).summary()
    rms = float(np.sqrt(np.mean((out - hu)[layout.body] ** 2)))
    assert rms < before["noise_sd_hu"]
    assert abs(quality.change(before, after)["edge_width_change_pct"]) < 5
    noisy = add_gaussian(hu, sigma_hu=25.0, rng=np.random.default_rng(0))
    assert metrics.psnr(hu, den(noisy)) > metrics.psnr(hu, noisy) + 1
