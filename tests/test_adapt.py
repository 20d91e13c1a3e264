"""ct-denoise adapt: neighbour-slice pairs, the masked loss, the command as a
user runs it (run folder, model file, resume, denoise --model) and every bad
input refused with exit 2 before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import cli
import pipelines.adapt as adapt_job
from denoise.adaptation import OFFSETS, NeighbourPairs, PairConfig, masked_mse_loss, similarity_mask
from denoise.inference import Denoiser
from denoise.normalize import HUWindow
from tests.factory import PATIENT_ID, PATIENT_NAME, ct_dataset, non_ct_dataset, save, write_noisy_series
from tests.nn.gradcheck import numeric_grad, rel_error

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


# ------------------------------------------------------------------ pure parts

def test_similarity_mask_leaves_out_real_change_and_keeps_noise():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 20, (64, 64))
    b = rng.normal(0, 20, (64, 64))
    assert similarity_mask(a, b).mean() > 0.99  # noise alone: the pair is used
    b[20:40, 20:40] += 200.0  # a 200 HU structure in one slice only
    mask = similarity_mask(a, b)
    assert mask[25:35, 25:35].sum() == 0  # anatomy that changed is left out
    assert mask[:10, :10].all() and mask[50:, 50:].all()


def test_masked_loss_known_answer_and_gradient():
    pred = np.array([[[[1.0], [2.0]]]])
    target = np.array([[[[0.0, 1.0], [0.0, 0.0]]]])  # second pixel masked out
    loss, grad = masked_mse_loss(pred, target)
    assert loss == pytest.approx(1.0 / 2)
    assert grad[0, 0, 1, 0] == 0
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(2, 5, 5, 1))
    target = np.concatenate([rng.normal(size=(2, 5, 5, 1)), rng.random((2, 5, 5, 1)) > 0.3], axis=-1)
    _, analytic = masked_mse_loss(pred, target)
    idx, numeric = numeric_grad(lambda: masked_mse_loss(pred, target)[0], pred)
    assert rel_error(analytic.reshape(-1)[idx], numeric) < 1e-6
    with pytest.raises(ValueError):
        masked_mse_loss(pred, target[..., :1])


class _Plain:
    in_channels, conditioned, neighbours = 1, False, 0


def test_pairs_are_neighbours_and_memory_stays_bounded():
    """A 500-slice series: only the bank's slices are read, and the cache never holds more than 2x the bank."""
    reads = []

    def read(i):
        reads.append(i)
        return np.full((96, 96), float(i), np.float32)

    cfg = PairConfig(patch=32, batch=8, pairs_per_epoch=6)
    pairs = NeighbourPairs(500, read, HUWindow(-1000, 1000, 0.5), cfg, np.random.default_rng(0))
    for _ in range(5):
        pairs.new_epoch()
        assert len(pairs._cache) <= 2 * cfg.pairs_per_epoch
    assert len(set(reads)) <= 6 * 2 * cfg.pairs_per_epoch
    for c, d in pairs.pair_indices(200):
        assert d - c in OFFSETS and 0 <= d < 500
    x, target = pairs.batch(_Plain())
    assert x.shape == (8, 32, 32, 1) and target.shape == (8, 32, 32, 2) and x.dtype == np.float32
    # each input patch and its target come from slices at most 2 apart (values = slice index)
    window = HUWindow(-1000, 1000, 0.5)
    gap = np.abs(window.to_hu(x[..., 0]) - window.to_hu(target[..., 0])).max(axis=(1, 2))
    assert ((gap > 0.5) & (gap < 2.5)).all()


# ------------------------------------------------------------------ the command

@pytest.fixture
def noisy_series(tmp_path):
    write_noisy_series(tmp_path / "series", 6, image=np.full((64, 64), 40.0))
    return tmp_path / "series"


def test_adapt_writes_a_run_folder_and_a_model_denoise_uses(noisy_series, tmp_path):
    res = invoke("adapt", noisy_series, "--out", tmp_path / "mine", "--epochs", 1, "--quiet")
    assert res.exit_code == 0, res.output
    run = tmp_path / "mine.run"
    for name in ("config.toml", "log.csv", "log.json", "progress.gif", "curves.png", "checkpoints/last.npz"):
        assert (run / name).is_file(), name
    header, row = (run / "log.csv").read_text().splitlines()[:2]  # adapt's own columns, all filled (issue 29)
    assert header == ",".join(adapt_job.LOG_FIELDS) and "seconds" in header and "val_psnr" not in header
    assert all(value != "" for value in row.split(","))
    meta = json.loads((tmp_path / "mine.json").read_text())["metadata"]
    record = meta["adaptation"]
    assert record["method"] == "noise2sim-neighbour-slices" and record["epochs"] == 1
    assert record["optimizer"] == {"kind": "adam", "lr": adapt_job.LR, "schedule": "constant"}
    assert record["series"]["slices"] == 6 and len(record["series"]["series_uid_sha256"]) == 12
    assert record["from_model"].startswith("default_ct@") and record["seconds"] > 0
    written = "".join(p.read_text(errors="ignore") for p in [tmp_path / "mine.json", run / "config.toml",
                                                              run / "log.json"])
    series_uid = pydicom.dcmread(next(noisy_series.iterdir())).SeriesInstanceUID
    assert PATIENT_NAME not in written and PATIENT_ID not in written and series_uid not in written
    # resume continues the same run to 3 epochs
    res = invoke("adapt", noisy_series, "--out", tmp_path / "mine", "--epochs", 3, "--resume", "--quiet")
    assert res.exit_code == 0, res.output
    log = json.loads((run / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2, 3] and [r["lr"] for r in log] == [adapt_job.LR] * 3  # constant
    # GIF frames: epochs 1 and 2 are due, 3 is not but is the last
    assert sorted(p.name for p in (run / "progress").iterdir()) == [f"epoch_000{e}.npy" for e in (1, 2, 3)]
    den = Denoiser.load(tmp_path / "mine")
    assert den.metadata["adaptation"]["epochs"] == 3
    res = invoke("denoise", noisy_series, tmp_path / "out", "--model", tmp_path / "mine")
    assert res.exit_code == 0 and "6 written" in res.output, res.output
    assert "ct-denoise" in pydicom.dcmread(tmp_path / "out" / "s00.dcm").DerivationDescription


def test_progress_frames_thin_out_and_end_on_the_last_epoch():
    due = [e for e in range(1, 45) if adapt_job._frame_due(e)]
    assert due == [1, 2, 4, 8, 10, 16, 20, 30, 32, 40]  # the last epoch is added after the loop


def test_a_time_budget_ends_the_run(noisy_series, tmp_path):
    res = invoke("adapt", noisy_series, "--out", tmp_path / "m", "--minutes", 0.01, "--quiet")
    assert res.exit_code == 0, res.output
    log = json.loads((tmp_path / "m.run" / "log.json").read_text())
    assert len(log) == 1 and log[0]["seconds"] < 60


def _uneven(folder):
    for k, z in enumerate((0.0, 1.0, 2.0, 5.0)):
        save(ct_dataset(z=z, instance=k + 1, series_uid="1.2.3.4", study_uid="1.2.3", frame_of_reference="1.2.3.5"),
             folder / f"u{k}.dcm")


def _thick(folder):
    write_noisy_series(folder, 4, image=np.full((64, 64), 40.0), gap_mm=5.0)


def _single(folder):
    write_noisy_series(folder, 1, image=np.full((64, 64), 40.0))


def _mixed(folder):
    write_noisy_series(folder / "a", 4, image=np.full((64, 64), 40.0))
    write_noisy_series(folder / "b", 4, image=np.full((64, 64), 40.0))


def _not_ct(folder):
    save(non_ct_dataset("MR"), folder / "mr.dcm")


BAD = {
    "single slice": (_single, "at least 3", ()),
    "mixed series": (_mixed, "--series", ()),
    "uneven spacing": (_uneven, "uneven", ("--method", "neighbours")),
    "too thick": (_thick, "too far", ("--method", "neighbours")),
    "not CT": (_not_ct, "no CT series", ()),
    "neighbours told a noise": (_thick, "takes no --noise-sd", ("--method", "neighbours", "--noise-sd", 5)),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_with_exit_2_and_nothing_written(case, tmp_path):
    build, reason, options = BAD[case]
    build(tmp_path / "in")
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "out" / "m", "--epochs", 1, "--quiet", *options)
    assert res.exit_code == 2, res.output
    assert reason in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_a_choice_of_series_and_a_bad_from_model(tmp_path):
    _mixed(tmp_path / "in")
    (tmp_path / "broken.npz").write_bytes(b"not a model")
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "out" / "m", "--from", tmp_path / "broken",
                 "--series", "2", "--epochs", 1, "--quiet")
    assert res.exit_code == 2 and "--from" in res.output, res.output
    assert not (tmp_path / "out").exists()
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "out" / "m", "--minutes", 1, "--epochs", 1)
    assert res.exit_code == 2 and "not both" in res.output
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "out" / "m", "--series", "2", "--epochs", 1,
                 "--quiet")
    assert res.exit_code == 0, res.output


def test_neighbours_are_chosen_within_1_6_mm():
    from denoise.adaptation import neighbour_offsets

    assert neighbour_offsets(1.0) == (-1, 1)  # 2 mm is too far
    assert neighbour_offsets(0.8) == (-2, -1, 1, 2)
    assert neighbour_offsets(0.5) == (-3, -2, -1, 1, 2, 3)
    assert neighbour_offsets(2.5) == (-1, 1)  # always the nearest ones
    assert neighbour_offsets(None) == (-1, 1)


# ------------------------------------------------------------------ the recorrupted method

def _ellipse(rows: int = 128, *, semi_axes_px=(30.0, 55.0)) -> np.ndarray:
    """A water ellipse (wider than tall) in air: lateral rays cross more of it than vertical ones."""
    yy, xx = np.mgrid[:rows, :rows] - rows / 2
    return np.where((yy / semi_axes_px[0]) ** 2 + (xx / semi_axes_px[1]) ** 2 <= 1, 0.0, -1000.0).astype(np.float32)


def _directional_power(noise: np.ndarray) -> tuple[float, float]:
    """Mean noise power along the column and the row frequency axes (central 64 x 64, mid band)."""
    crop = noise[32:96, 32:96]
    power = np.abs(np.fft.fft2(crop - crop.mean())) ** 2
    f = np.fft.fftfreq(64)
    fr, fc = np.meshgrid(f, f, indexing="ij")
    band = (np.hypot(fr, fc) > 0.1) & (np.hypot(fr, fc) < 0.4)
    along_cols = band & (np.abs(fr) < 0.4 * np.abs(fc))
    along_rows = band & (np.abs(fc) < 0.4 * np.abs(fr))
    return float(power[along_cols].mean()), float(power[along_rows].mean())


def test_fast_low_dose_noise_follows_the_projection_simulation():
    """The image-domain noise has the exact simulation's local SD (centre and edge of an ellipse)
    and the direction of its streaks, and scales as 1/sqrt(I0)."""
    from denoise.noise import field_of_view, low_dose_noise, low_dose_pair

    hu = _ellipse()
    rng = np.random.default_rng(0)
    exact = [np.subtract(*low_dose_pair(hu, i0=2e4, pixel_spacing_mm=1.5, rng=rng)) for _ in range(3)]
    fast = [low_dose_noise(hu, i0=2e4, pixel_spacing_mm=1.5, rng=rng) for _ in range(3)]

    def rms(fields, rows, cols):
        return float(np.sqrt(np.mean([f[rows, cols] ** 2 for f in fields])))

    for rows, cols in ((slice(54, 74), slice(54, 74)), (slice(54, 74), slice(14, 30)), (slice(40, 50), slice(54, 74))):
        assert rms(fast, rows, cols) == pytest.approx(rms(exact, rows, cols), rel=0.15)
    ex_cols, ex_rows = np.mean([_directional_power(f) for f in exact], axis=0)
    fa_cols, fa_rows = np.mean([_directional_power(f) for f in fast], axis=0)
    assert (ex_cols > ex_rows) == (fa_cols > fa_rows) and abs(np.log(fa_cols / fa_rows)) > 0.5 * abs(
        np.log(ex_cols / ex_rows))
    quieter = low_dose_noise(hu, i0=8e4, pixel_spacing_mm=1.5, rng=np.random.default_rng(5))
    assert rms([quieter], slice(54, 74), slice(54, 74)) == pytest.approx(rms(fast, slice(54, 74), slice(54, 74)) / 2,
                                                                         rel=0.15)
    assert not fast[0][~field_of_view(hu.shape)].any()
    with pytest.raises(ValueError, match="i0"):
        low_dose_noise(hu, i0=0, pixel_spacing_mm=1.0, rng=rng)


def test_recorrupted_pairs_known_answer():
    """Input y + a m and target y - m / a: their a^2-weighted mean is y, their difference (a + 1/a) m
    (m taken with either sign);
    the bank is partly refreshed each epoch and never swaps input and target."""
    from denoise.adaptation import RecorruptedPairs

    window = HUWindow(-1000, 1000, 0.5)
    reads = []

    def read(i):
        reads.append(i)
        return np.full((96, 96), 10.0 * i, np.float32)

    def noise(hu, rng):
        return np.full(hu.shape, 8.0, np.float32)

    cfg = PairConfig(patch=32, batch=8, pairs_per_epoch=6)
    pairs = RecorruptedPairs(40, read, noise, window, cfg, np.random.default_rng(0), alpha=0.5)
    assert len(reads) == 6
    pairs.new_epoch()
    assert len(reads) == 8 and len(pairs.a) == 6  # a third replaced
    x, target = pairs.batch(_Plain())
    inp, out = window.to_hu(x[..., 0]), window.to_hu(target[..., 0])
    np.testing.assert_allclose(np.abs(inp - out), (0.5 + 2.0) * 8.0, atol=1e-3)  # +-m: both signs are drawn
    assert (inp - out > 0).any() and (inp - out < 0).any()
    y = (inp + 0.25 * out) / 1.25
    np.testing.assert_allclose(y / 10.0, np.round(y / 10.0), atol=1e-3)  # a slice's value, 10 * index
    assert (target[..., 1] == 1).all()


def test_recorrupted_pairs_of_a_body_only_noise_keep_the_start_model_outside_the_body():
    """With ``outside``, the noise is added inside the (widened) body only, and outside it the
    target is ``outside(y)`` with the input left as it is."""
    from denoise.adaptation import BODY_MARGIN, RecorruptedPairs

    window = HUWindow(-1000, 1000, 0.5)
    body = _ellipse(96, semi_axes_px=(20.0, 30.0)) == 0

    def read(i):
        return np.where(body, 40.0, -1000.0).astype(np.float32)

    cfg = PairConfig(patch=96, batch=8, pairs_per_epoch=3)
    pairs = RecorruptedPairs(5, read, lambda hu, rng: np.full(hu.shape, 8.0, np.float32), window, cfg,
                             np.random.default_rng(0), alpha=0.5, outside=lambda hu: np.full(hu.shape, -990.0))
    x, target = pairs.batch(_Plain())
    inp, out = window.to_hu(x[..., 0]), window.to_hu(target[..., 0])
    noisy = np.abs(inp - out) > 15.0  # (0.5 + 2) * 8 HU apart where the noise was added, 10 HU outside
    np.testing.assert_allclose(np.abs(inp - out)[noisy], 20.0, atol=1e-3)
    for k in range(len(inp)):  # patches are whole slices under some flip or turn: count the pixels
        assert noisy[k].sum() == pytest.approx(
            ndimage_dilate(body, BODY_MARGIN).sum(), abs=1)
    np.testing.assert_allclose(inp[~noisy], -1000.0, atol=1e-3)  # the air as it is
    np.testing.assert_allclose(out[~noisy], -990.0, atol=1e-3)  # the start model's output
    assert (target[..., 1] == 1).all()


def ndimage_dilate(mask: np.ndarray, px: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=px)


def test_calibration_finds_the_photons_for_a_stated_sd():
    from denoise.noise import low_dose_noise
    from denoise.quality.noise_level import noise_sd, soft_tissue_centres
    from pipelines.adapt import calibrate_i0

    hu = _ellipse(160, semi_axes_px=(60.0, 75.0)) + 40.0 * (_ellipse(160, semi_axes_px=(60.0, 75.0)) == 0)
    i0 = calibrate_i0([hu], (1.0, 1.0), 15.0, np.random.default_rng(0))
    m = low_dose_noise(hu, i0=i0, pixel_spacing_mm=1.0, rng=np.random.default_rng(1))
    centres = soft_tissue_centres(hu, (1.0, 1.0)) & (np.hypot(*np.mgrid[-80:80, -80:80]) < 70)
    assert noise_sd(m, (1.0, 1.0), centres=centres) == pytest.approx(15.0, rel=0.1)
    from denoise.batch import UsageError
    with pytest.raises(UsageError, match="no uniform soft tissue"):
        calibrate_i0([np.full((64, 64), -1000.0, np.float32)], (1.0, 1.0), 15.0, np.random.default_rng(0))


def test_adapt_with_a_stated_noise_writes_a_recorrupted_model(noisy_series, tmp_path):
    res = invoke("adapt", noisy_series, "--out", tmp_path / "r2r", "--epochs", 1, "--noise-sd", 15, "--quiet")
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "r2r.json").read_text())["metadata"]["adaptation"]
    assert record["method"] == "recorrupted-low-dose"
    assert record["noise_model"]["sd_hu"] == 15 and record["noise_model"]["i0"] > 0
    assert "--noise-sd 15" in json.loads((tmp_path / "r2r.json").read_text())["metadata"]["reproduce"][0]
    # resume keeps the method and its noise without being told again
    res = invoke("adapt", noisy_series, "--out", tmp_path / "r2r", "--epochs", 2, "--resume", "--quiet")
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "r2r.json").read_text())["metadata"]["adaptation"]
    assert again["epochs"] == 2 and again["noise_model"] == record["noise_model"]
    # the rate decays over the budget, to about 1 % of the peak at the end of each budget (1, then 2 epochs)
    peak = adapt_job.LR_RECORRUPTED
    assert 'schedule = "cosine"' in (tmp_path / "r2r.run" / "config.toml").read_text()
    assert again["optimizer"] == {"kind": "adam", "lr": peak, "schedule": "cosine"}
    assert [r["lr"] < 0.02 * peak for r in json.loads((tmp_path / "r2r.run" / "log.json").read_text())] == [True] * 2
    for other in (("--noise-sd", 20), ()):  # another noise, or no noise option on a neighbour run: refused
        target = tmp_path / ("r2r" if other else "plain")
        if not other:
            assert invoke("adapt", noisy_series, "--out", target, "--epochs", 1, "--quiet").exit_code == 0
            other = ("--dose", 1e5)
        res = invoke("adapt", noisy_series, "--out", target, "--epochs", 3, "--resume", "--quiet", *other)
        assert res.exit_code == 2 and "was started with" in res.output, res.output
    res = invoke("denoise", noisy_series, tmp_path / "out", "--model", tmp_path / "r2r")
    assert res.exit_code == 0 and "6 written" in res.output, res.output


def test_adapts_rate_decays_over_its_budget_to_one_percent():
    cfg = adapt_job.AdaptRun(adapt=adapt_job.AdaptSettings(
        method=adapt_job.RECORRUPTED, series_dir=".", series="x", from_model="m", minutes=2.0,
        lr=6e-4, schedule="cosine"), pairs=PairConfig()).engine_config()
    lrs = [cfg.rate(0, seconds) for seconds in np.linspace(-60, 180, 41)]  # a 2-minute budget
    assert lrs[0] == lrs[10] == pytest.approx(6e-4) and lrs[30] == lrs[40] == pytest.approx(6e-6)
    assert lrs[20] == pytest.approx(0.5 * (6e-4 + 6e-6))
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    constant = adapt_job.AdaptRun(adapt=adapt_job.AdaptSettings(series_dir=".", series="x", from_model="m",
                                                                epochs=4, lr=3e-4), pairs=PairConfig())
    assert constant.engine_config().rate(90, 0.0) == 3e-4


def test_a_saved_run_config_that_does_not_validate_is_refused_in_one_line(tmp_path):
    from denoise.batch import UsageError
    from denoise.nn import ConvAutoencoder, save_model

    model = ConvAutoencoder({"channels": [4, 8]}, np.random.default_rng(0))
    save_model(tmp_path / "last", model, metadata={"config": {"adapt": {"series": "x"}, "pairs": {}}})
    with pytest.raises(UsageError, match="not a readable adapt checkpoint") as err:
        adapt_job._saved_run(tmp_path / "last")
    assert "\n" not in str(err.value) and "adapt.series_dir" in str(err.value)


def test_thick_slices_take_a_stated_noise(tmp_path):
    _thick(tmp_path / "in")
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "m", "--epochs", 1, "--quiet", "--method", "neighbours")
    assert res.exit_code == 2 and "--noise-sd" in res.output, res.output
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "m", "--epochs", 1, "--dose", 2e4, "--quiet")
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "m.json").read_text())["metadata"]["adaptation"]
    assert record["noise_model"]["i0"] == 2e4 and record["noise_model"]["sd_hu"] is None


@pytest.mark.parametrize("args, reason", [
    (("--noise-sd", 10, "--dose", 1e5), "not both"),
    (("--noise-sd", -3), "--noise-sd must be > 0"),
    (("--dose", 0), "--dose must be > 0"),
])
def test_bad_noise_options_are_refused(noisy_series, tmp_path, args, reason):
    res = invoke("adapt", noisy_series, "--out", tmp_path / "out" / "m", "--epochs", 1, "--quiet", *args)
    assert res.exit_code == 2 and reason in res.output, res.output
    assert not (tmp_path / "out").exists()


def test_no_soft_tissue_to_calibrate_on_is_refused(tmp_path):
    write_noisy_series(tmp_path / "air", 4, image=np.full((64, 64), -1000.0))
    res = invoke("adapt", tmp_path / "air", "--out", tmp_path / "out" / "m", "--epochs", 1, "--noise-sd", 10,
                 "--quiet")
    assert res.exit_code == 2 and "no uniform soft tissue" in res.output, res.output
    assert not (tmp_path / "out").exists()


def test_a_stated_noise_larger_than_the_series_holds_is_refused(noisy_series, tmp_path):
    """Recorrupted training told 3x the noise present learns to subtract noise that is not there."""
    res = invoke("adapt", noisy_series, "--out", tmp_path / "out" / "m", "--epochs", 1, "--noise-sd", 60, "--quiet")
    assert res.exit_code == 2 and "more than the series holds" in res.output, res.output
    assert not (tmp_path / "out").exists()


class _AddsNoise:
    def __call__(self, hu):
        return hu + np.random.default_rng(0).normal(0, 30, hu.shape)


def test_the_check_rejects_a_model_that_raises_the_noise():
    from pipelines.adapt import noise_check

    rng = np.random.default_rng(1)
    slices = [np.full((64, 64), 40.0) + rng.normal(0, 10, (64, 64)) for _ in range(2)]
    check = noise_check(_AddsNoise(), slices, (0.7, 0.7))
    assert check["measured"] and not check["passed"]
    assert all(a > b for a, b in zip(check["noise_sd_hu_after"], check["noise_sd_hu_before"], strict=True))
    smooth = noise_check(lambda hu: 0.5 * hu + 0.5 * np.mean(hu), slices, (0.7, 0.7))
    assert smooth["passed"]


def test_a_failed_check_writes_no_model_and_exits_1(noisy_series, tmp_path, monkeypatch):
    import pipelines.adapt as job

    monkeypatch.setattr(job, "noise_check", lambda den, slices, spacing: {
        "noise_sd_hu_before": [20.0], "noise_sd_hu_after": [25.0], "passed": False, "measured": True})
    res = invoke("adapt", noisy_series, "--out", tmp_path / "m", "--epochs", 1, "--quiet")
    assert res.exit_code == 1 and "raised the noise" in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "m.npz").exists() and (tmp_path / "m.run" / "check.json").is_file()


def test_adapt_options_are_a_typed_model_with_one_line_errors():
    """Issue 29: adapt's options validated as train's config is, not by hand-written checks."""
    from denoise.batch import UsageError

    ok = adapt_job.AdaptOptions.parse(minutes=2, seed=3, noise_sd=20)
    assert (ok.minutes, ok.epochs, ok.seed, ok.noise_sd) == (2.0, None, 3, 20.0)
    for values, reason in ((dict(minutes=float("nan")), "--minutes must be a finite number"),
                           (dict(epochs=0), "--epochs must be >= 1"), (dict(seed=-1), "--seed must be >= 0"),
                           (dict(minutes=1, epochs=2), "not both"), (dict(noise_sd=True), "--noise-sd")):
        with pytest.raises(UsageError, match=reason.replace("-", r"\-")) as caught:
            adapt_job.AdaptOptions.parse(**values)
        assert "\n" not in str(caught.value)


def test_told_nothing_on_thick_slices_adapt_measures_the_series_noise(tmp_path):
    """Where neighbours are too far apart, adapt measures the series' own noise (its spectrum and SD
    map) and trains on recorrupted pairs of it; --method recorrupted asks for it on any series."""
    write_noisy_series(tmp_path / "in", 6, image=np.full((96, 96), 40.0), gap_mm=5.0)
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "m", "--epochs", 1, "--quiet")
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "m.json").read_text())["metadata"]["adaptation"]
    assert record["method"] == adapt_job.MEASURED and record["noise_model"]["kind"] == "measured"
    assert record["noise_model"]["model"]["noise_sd_hu"] == pytest.approx(20.0, rel=0.15)  # the series' 20 HU
    assert "--method recorrupted" in json.loads((tmp_path / "m.json").read_text())["metadata"]["reproduce"][0]
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "m", "--epochs", 2, "--resume", "--quiet")
    assert res.exit_code == 0, res.output  # resumed with the noise it measured
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "m", "--epochs", 3, "--resume", "--quiet",
                 "--noise-sd", 5)
    assert res.exit_code == 2 and "was started with --method recorrupted" in res.output
    # its pairs hold the start model's output outside the body: another start model is refused
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "m", "--epochs", 3, "--resume", "--quiet",
                 "--from", tmp_path / "m")
    assert res.exit_code == 2 and "resume it with the same --from" in res.output, res.output
