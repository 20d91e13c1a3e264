"""NIfTI volumes through the commands (issue 31, point 2): info, denoise (and --format nifti),
noise, qa, evaluate and adapt take .nii/.nii.gz as they take DICOM, and give the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

import cli
import denoise as ctd
from denoise.nifti import read_nifti, write_nifti
from tests.factory import write_noisy_series

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """A DICOM series (4 noisy slices, 1 mm apart) and the NIfTI made from it (int16, as dcm2niix writes CT)."""
    root = tmp_path_factory.mktemp("nifti")
    dicom = root / "series"
    write_noisy_series(dicom, 4)
    nifti = write_nifti(ctd.read(dicom), root / "ct.nii.gz")
    return dicom, nifti


@pytest.fixture
def not_ct(tmp_path) -> Path:
    path = tmp_path / "mr.nii.gz"
    nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 3)).astype(np.float32), np.eye(4)).to_filename(path)
    return path


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_info_lists_a_nifti_volume(pair, tmp_path):
    _, nifti = pair
    result = invoke("info", nifti)
    assert result.exit_code == 0, result.output
    assert "ct.nii.gz" in result.output and "128x128" in result.output and "NIfTI int16" in result.output
    result = invoke("info", nifti, "--json", tmp_path / "info.json")
    assert result.exit_code == 0, result.output
    row, = json.loads((tmp_path / "info.json").read_text())["series"]
    assert row["kind"] == "nifti" and row["slices"] == 4 and row["size"] == "128x128"
    assert row["pixel_spacing_mm"] == [0.7, 0.7] and row["slice_spacing_mm"] == 1.0
    assert row["dtype"] == "int16" and row["scl_slope"] == 1.0 and row["axes_on_disk"] == "LPS"


def test_info_refuses_a_nifti_that_is_not_ct(not_ct):
    result = invoke("info", not_ct)
    assert result.exit_code == 3
    assert "0..1" in error_line(result)


def test_denoise_a_nifti_volume_as_the_api_does(pair, tmp_path):
    _, nifti = pair
    result = invoke("denoise", nifti, tmp_path / "out", "--strength", "medium", "--json", tmp_path / "d.json")
    assert result.exit_code == 0, result.output
    written = tmp_path / "out" / "ct.nii.gz"
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["volumes"][0]["output"] == str(written) and report["settings"]["strength_level"] == "medium"
    assert report["settings"]["model_id"].startswith("default_ct@")
    src, out = nib.load(nifti), nib.load(written)
    assert np.allclose(out.affine, src.affine) and out.get_data_dtype() == src.get_data_dtype()
    assert b"ct-denoise" in out.header["descrip"].tobytes()
    expected = ctd.denoise(read_nifti(nifti), strength="medium")
    assert np.abs(read_nifti(written).hu - np.rint(expected.hu)).max() <= 0.5 + 1e-3
    # a file name as OUTPUT; an existing output needs --force
    assert invoke("denoise", nifti, tmp_path / "x.nii").exit_code == 0
    again = invoke("denoise", nifti, tmp_path / "x.nii")
    assert again.exit_code == 2 and "--force" in error_line(again)
    assert invoke("denoise", nifti, tmp_path / "x.nii", "--force").exit_code == 0


def test_denoise_format_nifti_writes_each_dicom_series(pair, tmp_path):
    dicom, _ = pair
    result = invoke("denoise", dicom, tmp_path / "out", "--format", "nifti", "--ensemble", "1")
    assert result.exit_code == 0, result.output
    written, = (tmp_path / "out").iterdir()
    assert written.name == "CHEST_SYNTH_SERIES_3.nii.gz"
    vol = ctd.read(dicom)
    expected = ctd.denoise(vol, ensemble=1)
    back = read_nifti(written)
    assert np.allclose(back.affine, vol.affine, atol=1e-4)
    assert np.abs(back.hu - expected.hu).max() < 1e-3  # float32 where denoised HU are not whole


def test_denoise_nifti_refuses_what_makes_no_sense(pair, not_ct, tmp_path):
    dicom, nifti = pair
    for args in ((nifti, tmp_path / "o", "--format", "dicom"), (nifti, tmp_path / "o", "--workers", "2"),
                 (dicom, tmp_path / "o", "--format", "nifti", "--allow-non-hu"), (not_ct, tmp_path / "o")):
        result = invoke("denoise", *args)
        assert result.exit_code == 2, (args, result.output)
        error_line(result)


@pytest.fixture(scope="module")
def before_after(tmp_path_factory, pair) -> dict[str, Path]:
    """BEFORE (the noisy series) and AFTER (it smoothed), as DICOM and as NIfTI."""
    from scipy import ndimage

    root = tmp_path_factory.mktemp("qa")
    dicom, nifti = pair
    after = root / "after"
    vol = ctd.read(dicom)
    smoothed = ctd.Volume(ndimage.gaussian_filter(vol.hu, (0, 1, 1)), vol.spacing_mm, vol.affine)
    ctd.write(smoothed, after, like=vol)  # a derived series of one series UID
    return {"before": dicom, "after": after, "before_nii": nifti,
            "after_nii": write_nifti(ctd.read(after), root / "after.nii.gz")}


def run_json(tmp_path, *args) -> dict:
    out = tmp_path / f"r{len(list(tmp_path.iterdir()))}.json"
    result = invoke(*args, "--json", out)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def close(a, b, path="") -> None:
    """Nested JSON equal, numbers within float tolerance."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{path}[{k}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), path
    else:
        assert a == b, path


def test_qa_gives_the_same_numbers_on_nifti(before_after, tmp_path):
    ba = before_after
    dicom = run_json(tmp_path, "qa", ba["before"], ba["after"])
    nifti = run_json(tmp_path, "qa", ba["before_nii"], ba["after_nii"])
    assert len(nifti["files"]) == 1 and len(nifti["series"]) == 1 and nifti["paired"]
    ds, ns = dicom["series"][0], nifti["series"][0]
    assert ns["series"] == "ct.nii.gz" and ns["slices"] == 4 and ns["nps_method"] == ds["nps_method"]
    close({k: v for k, v in ds.items() if k not in ("series", "files", "description")},
          {k: v for k, v in ns.items() if k not in ("series", "files", "description")})
    assert set(nifti["mean"]) == set(dicom["mean"]) and set(nifti["files"][0]) >= {"before", "after", "change"}
    # the table prints the same columns
    table = invoke("qa", ba["before_nii"], ba["after_nii"])
    assert table.exit_code == 0 and "ct.nii.gz" in table.output and "noise" in table.output
    alone = run_json(tmp_path, "qa", ba["before_nii"])
    close(alone["series"][0]["before"], run_json(tmp_path, "qa", ba["before"])["series"][0]["before"])


def test_qa_refuses_a_nifti_that_is_not_ct(before_after, not_ct):
    result = invoke("qa", before_after["before_nii"], not_ct)
    assert result.exit_code == 2 and "0..1" in error_line(result)
    mixed = invoke("qa", before_after["before_nii"], before_after["after"])
    assert mixed.exit_code == 2 and "both" in error_line(mixed)


def test_evaluate_gives_the_same_numbers_on_nifti(before_after, tmp_path):
    ba = before_after
    dicom = run_json(tmp_path, "evaluate", ba["after"], ba["before"], "--noisy", ba["before"], "--baselines", "tv")
    nifti = run_json(tmp_path, "evaluate", ba["after_nii"], ba["before_nii"], "--noisy", ba["before_nii"],
                     "--baselines", "tv")
    assert nifti["n_matched"] == dicom["n_matched"] == 4
    close(dicom["mean"], nifti["mean"])
    for method in dicom["methods"]:
        close({k: v for k, v in dicom["methods"][method].items() if k != "seconds_per_slice"},
              {k: v for k, v in nifti["methods"][method].items() if k != "seconds_per_slice"})
    strip = ("nps_curve", "esf_curve")
    close({m: {k: v for k, v in q.items() if k not in strip} for m, q in dicom["quality"].items()},
          {m: {k: v for k, v in q.items() if k not in strip} for m, q in nifti["quality"].items()})


def test_evaluate_refuses_volumes_that_differ(pair, before_after, tmp_path):
    dicom, nifti = pair
    vol = ctd.read(dicom)
    moved = ctd.Volume(vol.hu, vol.spacing_mm, vol.affine @ np.diag([1, 1, 1, 1.0]) + np.array(
        [[0, 0, 0, 5.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    other = write_nifti(moved, tmp_path / "moved.nii.gz")
    result = invoke("evaluate", nifti, other)
    assert result.exit_code == 2 and "affines differ" in error_line(result)
    short = write_nifti(ctd.Volume(vol.hu[:3], vol.spacing_mm, vol.affine), tmp_path / "short.nii.gz")
    result = invoke("evaluate", nifti, short)
    assert result.exit_code == 2 and "shape" in error_line(result)


def test_noise_adds_the_sd_asked_for_to_a_nifti_volume(pair, tmp_path):
    _, nifti = pair
    result = invoke("noise", nifti, tmp_path / "noisy.nii.gz", "--sigma", "40", "--seed", "3",
                    "--json", tmp_path / "n.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "n.json").read_text())
    assert report["noisy"]["volumes"][0]["output"] == str(tmp_path / "noisy.nii.gz")
    src, out = read_nifti(nifti), read_nifti(tmp_path / "noisy.nii.gz")
    assert np.allclose(out.affine, src.affine)
    assert np.std(out.hu - src.hu) == pytest.approx(40, rel=0.05)
    assert b"noise 40 HU seed 3" in nib.load(tmp_path / "noisy.nii.gz").header["descrip"].tobytes()
    again = invoke("noise", nifti, tmp_path / "again.nii.gz", "--sigma", "40", "--seed", "3")
    assert again.exit_code == 0
    assert np.array_equal(read_nifti(tmp_path / "again.nii.gz").hu, out.hu)  # the same streams


def test_noise_matched_on_a_nifti_volume(tmp_path):
    dicom = tmp_path / "series"
    write_noisy_series(dicom, 8)
    nifti = write_nifti(ctd.read(dicom), tmp_path / "ct.nii.gz")
    result = invoke("noise", nifti, tmp_path / "out", "--matched", "0.5")
    assert result.exit_code == 0, result.output
    added = read_nifti(tmp_path / "out" / "ct.nii.gz").hu - read_nifti(nifti).hu
    assert 0 < np.std(added) < 100


def test_noise_refuses_a_nifti_that_is_not_ct(not_ct, tmp_path):
    result = invoke("noise", not_ct, tmp_path / "o", "--sigma", "10")
    assert result.exit_code == 2 and "0..1" in error_line(result)


def test_adapt_on_a_nifti_volume_writes_a_model_and_refuses_what_makes_no_sense(tmp_path, not_ct):
    """adapt takes a NIfTI volume as it takes a series: neighbours where its slices are close,
    the measured noise where they are not; --series is for DICOM folders."""
    write_noisy_series(tmp_path / "thin", 6, image=np.full((96, 96), 40.0), gap_mm=1.0)
    thin = write_nifti(ctd.read(tmp_path / "thin"), tmp_path / "thin.nii.gz")
    res = invoke("adapt", str(thin), "--out", str(tmp_path / "m"), "--epochs", "1", "-q")
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "m.json").read_text())["metadata"]["adaptation"]
    assert record["method"] == "noise2sim-neighbour-slices" and record["series"]["slices"] == 6
    assert len(record["series"]["nifti_sha256"]) == 12
    write_noisy_series(tmp_path / "thick", 6, image=np.full((96, 96), 40.0), gap_mm=5.0)
    thick = write_nifti(ctd.read(tmp_path / "thick"), tmp_path / "thick.nii.gz")
    res = invoke("adapt", str(thick), "--out", str(tmp_path / "t"), "--epochs", "1", "-q")
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "t.json").read_text())["metadata"]["adaptation"]
    assert record["method"] == "recorrupted-measured-noise"
    assert record["noise_model"]["model"]["noise_sd_hu"] == pytest.approx(20.0, rel=0.15)
    for args, reason in (((str(thin), "--series", "1"), "--series"), ((str(not_ct),), "")):
        res = invoke("adapt", *args, "--out", str(tmp_path / "x"), "--epochs", "1", "-q")
        assert res.exit_code == 2 and reason in res.output and "Traceback" not in res.output, res.output


def test_noise_refuses_options_that_mean_nothing_for_a_volume(pair, tmp_path):
    _, nifti = pair
    for option in (("--workers", "2"), ("--allow-non-hu",)):
        res = invoke("noise", str(nifti), str(tmp_path / "n.nii.gz"), "--sigma", "10", *option)
        assert res.exit_code == 2 and option[0] in error_line(res), res.output
    assert not (tmp_path / "n.nii.gz").exists()
