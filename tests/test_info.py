"""`ct-denoise info` shows what CT users look for (issue 31, point 3), and
`adapt --series` takes the number or the UID it prints."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from typer.testing import CliRunner

import cli
from denoise.batch import UsageError
from denoise.dicom.scan import scan
from pipelines.adapt import select_series
from tests.factory import PATIENT_ID, PATIENT_NAME, enhanced_ct_dataset, save, write_noisy_series, write_series

runner = CliRunner()


def stamp(folder, **values) -> None:
    """Set header values on every file of ``folder``."""
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)


def scanner_series(folder, **values):
    write_series(folder, 4)  # 1 mm thick slices 2 mm apart
    stamp(folder, ConvolutionKernel=["B30f", "3"], KVP=120, XRayTubeCurrent=200, ExposureTime=500, CTDIvol=8.5,
          Manufacturer="SIEMENS", ManufacturerModelName="SOMATOM Force", SeriesNumber=7, **values)


def info(path, *args):
    result = runner.invoke(cli.app, ["info", str(path), *args])
    assert result.exit_code == 0, result.output
    return result


def test_info_json_has_the_full_uid_and_the_scan_facts(tmp_path):
    scanner_series(tmp_path / "in" / "a")
    scanner_series(tmp_path / "in" / "b", ImageType=["DERIVED", "SECONDARY"], Exposure=90)
    uid = pydicom.dcmread(next((tmp_path / "in" / "a").iterdir())).SeriesInstanceUID
    rows = json.loads(info(tmp_path / "in", "--json", "-").stdout)["series"]
    first = rows[0]
    assert first["series_uid"] == uid and first["series"].startswith("…") and uid.endswith(first["series"][1:])
    assert [r["index"] for r in rows] == [1, 2]
    assert first["series_number"] == 7 and first["kernel"] == "B30f/3" and first["kvp"] == 120
    assert first["exposure_mas"] == 100  # 200 mA x 500 ms, where the header states both
    assert first["ctdi_vol_mgy"] == 8.5 and (first["manufacturer"], first["model"]) == ("SIEMENS", "SOMATOM Force")
    assert (first["slice_thickness_mm"], first["slice_spacing_mm"]) == (1.0, 2.0)
    assert first["image_type"] == "ORIGINAL" and rows[1]["image_type"] == "DERIVED"


def test_info_table_has_thickness_and_spacing_and_a_shortened_uid(tmp_path):
    scanner_series(tmp_path / "in" / "a")
    uid = pydicom.dcmread(next((tmp_path / "in" / "a").iterdir())).SeriesInstanceUID
    text = info(tmp_path / "in").output
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:4] == ["#", "series", "no.", "slices"] and "gap" not in text
    assert "thick mm" in lines[0] and "spacing mm" in lines[0]
    assert uid not in text and uid[-12:] in text
    row = lines[2].split()
    assert row[0] == "1" and row[2] == "7" and "1" in row and "2" in row
    acquisition = next(k for k, line in enumerate(lines) if line.startswith("#  kernel"))
    assert lines[acquisition].split() == ["#", "kernel", "kVp", "mAs", "CTDIvol", "mGy", "type", "scanner"]
    assert lines[acquisition + 2].split() == ["1", "B30f/3", "120", "100", "8.5", "ORIGINAL", "SIEMENS", "SOMATOM",
                                              "Force"]
    assert PATIENT_NAME not in text and PATIENT_ID not in text


def test_what_a_header_does_not_state_is_shown_as_missing(tmp_path):
    write_series(tmp_path / "in" / "a", 2)
    row = json.loads(info(tmp_path / "in", "--json", "-").stdout)["series"][0]
    assert row["kernel"] is None and row["kvp"] is None and row["exposure_mas"] is None
    assert row["ctdi_vol_mgy"] is None and row["manufacturer"] is None
    stamp(tmp_path / "in" / "a", Exposure=150)  # no current and time: Exposure as the scanner states it
    assert scan(tmp_path / "in").series[0].exposure_mas == 150


def test_enhanced_ct_states_them_in_its_functional_groups(tmp_path):
    ds = enhanced_ct_dataset()
    shared = ds.SharedFunctionalGroupsSequence[0]
    recon, xray, exposure = Dataset(), Dataset(), Dataset()
    recon.ConvolutionKernel = "FC13"
    xray.KVP = 100
    exposure.ExposureInmAs, exposure.CTDIvol = 55.5, 4.2
    shared.CTReconstructionSequence = Sequence([recon])
    shared.CTXRayDetailsSequence = Sequence([xray])
    shared.CTExposureSequence = Sequence([exposure])
    save(ds, tmp_path / "in" / "enhanced.dcm")
    series = scan(tmp_path / "in").series[0]
    assert (series.kernel, series.kvp, series.exposure_mas, series.ctdi_vol_mgy) == ("FC13", 100, 55.5, 4.2)
    assert series.slice_thickness == 1.0


def _two_series(folder):
    for name, number in (("a", 2), ("b", 3)):
        write_noisy_series(folder / name, 4, image=np.full((64, 64), 40.0))
        stamp(folder / name, SeriesNumber=number)
    return scan(folder).series


def test_adapt_series_takes_the_number_or_the_uid_info_prints(tmp_path):
    found = _two_series(tmp_path / "in")
    rows = json.loads(info(tmp_path / "in", "--json", "-").stdout)["series"]
    for row, series in zip(rows, found, strict=True):
        for choice in (row["series_uid"], row["series"], row["series"][1:]):
            assert select_series(tmp_path / "in", choice, neighbours=False).uid == series.uid
    assert select_series(tmp_path / "in", "1", neighbours=False).uid == rows[0]["series_uid"]
    with pytest.raises(UsageError, match="no series 'nothing'"):
        select_series(tmp_path / "in", "nothing", neighbours=False)


def test_a_number_that_is_another_series_number_is_refused(tmp_path):
    _two_series(tmp_path / "in")  # #1 is series no. 2, #2 is series no. 3
    with pytest.raises(UsageError, match="series no. 2 is #1"):
        select_series(tmp_path / "in", "2", neighbours=False)
    result = runner.invoke(cli.app, ["adapt", str(tmp_path / "in"), "--out", str(tmp_path / "m"), "--series", "2",
                                     "--epochs", "1", "-q"])
    assert result.exit_code == 2 and "series_uid" in result.output and not (tmp_path / "m.npz").exists()


def test_info_help_says_which_number_adapt_takes():
    text = runner.invoke(cli.app, ["info", "--help"], env={"COLUMNS": "200"}).output
    assert "adapt --series" in text and "#" in text
