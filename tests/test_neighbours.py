"""denoise.neighbours: which slices a 2.5-D model takes as a slice's neighbours, and
the 2.5-D denoiser: the neighbours as input channels, 2-D where there are none."""

from __future__ import annotations

import numpy as np
import pytest

from denoise.dicom.scan import scan
from denoise.inference import Denoiser
from denoise.neighbours import neighbourhood
from denoise.nn import ConvAutoencoder
from denoise.normalize import HUWindow
from tests.factory import write_noisy_series


def _series(tmp_path, n=5, *, gap_mm=1.0, **kw):
    write_noisy_series(tmp_path / "s", n, image=np.full((32, 32), 40.0), gap_mm=gap_mm, **kw)
    return scan(tmp_path / "s").series[0]


def test_thin_even_slices_have_their_neighbours_in_slice_order(tmp_path):
    series = _series(tmp_path, 5)
    hood = neighbourhood(series)
    paths = [f.path for f in series.files]
    assert (hood.step, hood.distance_mm, hood.reason) == (1, 1.0, "")
    assert hood.paths[paths[0]] == (None, None, paths[1], paths[2])
    assert hood.of(paths[2], 1) == (paths[1], paths[3]) and hood.of(paths[4], 1) == (paths[3], None)


@pytest.mark.parametrize(("gap", "thickness", "step", "reason"), [
    (0.625, 1.25, 2, ""),  # overlapping: adjacent slices share noise, take every second
    (2.5, 3.0, 1, ""),  # overlapping by 0.5 mm of 3: within the 20 % allowed
    (1.5, 3.0, 2, ""),
    (5.0, 5.0, 1, "slices 5 mm apart, more than 3 mm"),
    (2.0, 5.0, 2, "overlapping slices (2 mm apart, 5 mm thick): neighbours 4 mm apart, more than 3 mm"),
])
def test_overlapping_and_thick_reconstructions(tmp_path, gap, thickness, step, reason):
    series = _series(tmp_path, 5, gap_mm=gap)
    for f in series.files:
        object.__setattr__(f, "slice_thickness", thickness) if hasattr(f, "__dataclass_fields__") else None
    hood = neighbourhood(series)
    assert (hood.step, hood.reason) == (step, reason)
    assert bool(hood.paths) == (reason == "")
    if step == 2 and not reason:
        paths = [f.path for f in series.files]
        assert hood.of(paths[2], 1) == (paths[0], paths[4])


def test_uneven_single_and_unplaced_series_are_2d(tmp_path):
    assert neighbourhood(_series(tmp_path / "one", 1)).reason == "a single slice"
    series = _series(tmp_path / "uneven", 4)
    series.warnings.append("uneven slice spacing (1..3 mm)")
    assert neighbourhood(series).reason.startswith("uneven") and not neighbourhood(series).paths


def _denoiser(neighbours: int, *, seed=0):
    model = ConvAutoencoder({"channels": [4, 8], "neighbour_slices": neighbours}, np.random.default_rng(seed))
    return Denoiser(model, HUWindow(), {}, "toy@0", ensemble=2)


def test_a_25d_model_takes_the_neighbours_and_without_them_the_slice_stands_in():
    den = _denoiser(1)
    rng = np.random.default_rng(1)
    hu = rng.normal(40, 20, (3, 32, 32)).astype(np.float32)
    alone = den(hu[1])
    np.testing.assert_array_equal(alone, den(hu[1], [None, None]))
    np.testing.assert_array_equal(alone, den(hu[1], [hu[1], hu[1]]))
    with_them = den(hu[1], [hu[0], hu[2]])
    assert not np.allclose(with_them, alone)  # the neighbours are input, not ignored
    np.testing.assert_array_equal(den.volume(hu)[1], with_them)
    np.testing.assert_array_equal(den.volume(hu)[0], den(hu[0], [None, hu[1]]))
    with pytest.raises(ValueError, match="give 2, got 1"):
        den(hu[1], [hu[0]])
    with pytest.raises(ValueError, match="not of one series"):
        den(hu[1], [hu[0], hu[2][:16]])


def test_a_2d_model_warm_started_into_25d_computes_what_it_did_whole_and_tiled(tmp_path):
    from denoise.config import config_from_dict
    from denoise.nn import save_model
    from pipelines.train import warm_start

    plain = _denoiser(0, seed=3)
    save_model(tmp_path / "plain", plain.model)
    cfg = config_from_dict({"model": {"channels": [4, 8], "neighbour_slices": 1},
                            "training": {"init": str(tmp_path / "plain")}})
    grown = ConvAutoencoder(cfg.model, np.random.default_rng(9))
    warm_start(grown, cfg)
    hu = np.random.default_rng(2).normal(0, 30, (3, 64, 64)).astype(np.float32)
    den = Denoiser(grown, HUWindow(), {}, "grown@0", ensemble=4)
    plain.ensemble = 4
    for tile in (None, 48):  # the neighbours travel with the slice through the views and the tiles
        den.tile = plain.tile = tile
        np.testing.assert_allclose(den(hu[1], [hu[0], hu[2]]), plain(hu[1]), rtol=1e-5, atol=2e-3)
    grown.parameters()["encoder.0.conv0.weight"][:, :, 2, :] = 0.1  # now it looks at slice k+1
    assert not np.allclose(den(hu[1], [hu[0], hu[2]]), den(hu[1], [hu[0], hu[1]]))


def test_denoise_gives_a_25d_model_each_slices_neighbours_and_a_single_file_none(tmp_path):
    """``ct-denoise denoise`` with a 2.5-D model: a slice of an even thin series is denoised with the
    slices before and after it; the same slice given alone is denoised without them."""
    import shutil

    import pydicom
    from typer.testing import CliRunner

    import cli
    from denoise.dicom.pixels import load_ct
    from denoise.nn import save_model

    den = _denoiser(1, seed=5)
    den.model.parameters()["encoder.0.conv0.weight"][:, :, 1:, :] += 0.05  # make the neighbours matter
    save_model(tmp_path / "m25", den.model, metadata={"normalization": HUWindow().to_dict()})
    write_noisy_series(tmp_path / "series", 4, image=np.full((32, 32), 40.0))
    runner = CliRunner()
    res = runner.invoke(cli.app, ["denoise", str(tmp_path / "series"), str(tmp_path / "out"), "--model",
                                  str(tmp_path / "m25"), "--ensemble", "1"])
    assert res.exit_code == 0, res.output
    files = sorted((tmp_path / "series").iterdir())
    hu = np.stack([load_ct(f).hu[0] for f in files])
    loaded = Denoiser.load(tmp_path / "m25", ensemble=1)
    written = load_ct(tmp_path / "out" / files[1].name).hu[0]
    np.testing.assert_allclose(written, loaded(hu[1], [hu[0], hu[2]]), atol=1.0)  # stored as integers
    assert np.abs(written - loaded(hu[1])).max() > 2.0  # the neighbours changed the result
    assert "neighbour slice" in pydicom.dcmread(tmp_path / "out" / files[1].name).DerivationDescription
    (tmp_path / "one").mkdir()
    shutil.copy(files[1], tmp_path / "one" / files[1].name)
    res = runner.invoke(cli.app, ["denoise", str(tmp_path / "one"), str(tmp_path / "out1"), "--model",
                                  str(tmp_path / "m25"), "--ensemble", "1"])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(load_ct(tmp_path / "out1" / files[1].name).hu[0], loaded(hu[1]), atol=1.0)
