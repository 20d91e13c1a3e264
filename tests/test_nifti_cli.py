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
