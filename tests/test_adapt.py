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
    in_channels = 1


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
    meta = json.loads((tmp_path / "mine.json").read_text())["metadata"]
    record = meta["adaptation"]
    assert record["method"] == "noise2sim-neighbour-slices" and record["epochs"] == 1
    assert record["series"]["slices"] == 6 and len(record["series"]["series_uid_sha256"]) == 12
    assert record["from_model"].startswith("default_ct@") and record["seconds"] > 0
    written = "".join(p.read_text(errors="ignore") for p in [tmp_path / "mine.json", run / "config.toml",
                                                              run / "log.json"])
    series_uid = pydicom.dcmread(next(noisy_series.iterdir())).SeriesInstanceUID
    assert PATIENT_NAME not in written and PATIENT_ID not in written and series_uid not in written
    # resume continues the same run to 2 epochs
    res = invoke("adapt", noisy_series, "--out", tmp_path / "mine", "--epochs", 2, "--resume", "--quiet")
    assert res.exit_code == 0, res.output
    assert [r["epoch"] for r in json.loads((run / "log.json").read_text())] == [1, 2]
    den = Denoiser.load(tmp_path / "mine")
    assert den.metadata["adaptation"]["epochs"] == 2
    res = invoke("denoise", noisy_series, tmp_path / "out", "--model", tmp_path / "mine")
    assert res.exit_code == 0 and "6 written" in res.output, res.output
    assert "ct-denoise" in pydicom.dcmread(tmp_path / "out" / "s00.dcm").DerivationDescription


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
    "single slice": (_single, "at least 3"),
    "mixed series": (_mixed, "--series"),
    "uneven spacing": (_uneven, "uneven"),
    "too thick": (_thick, "too far"),
    "not CT": (_not_ct, "no CT series"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_with_exit_2_and_nothing_written(case, tmp_path):
    build, reason = BAD[case]
    build(tmp_path / "in")
    res = invoke("adapt", tmp_path / "in", "--out", tmp_path / "out" / "m", "--epochs", 1, "--quiet")
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
