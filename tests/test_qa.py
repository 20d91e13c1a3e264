"""``ct-denoise qa``: no-reference quality per file, per series and on average,
run as a user runs it (Typer's CliRunner) on synthetic and real CT."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from scipy import ndimage
from typer.testing import CliRunner

import cli
from denoise.dicom import load_ct
from pipelines import qa
from tests.factory import SIGMA, SPACING, ct_dataset, enhanced_ct_dataset, non_ct_dataset, save, write_smoothed
from tests.factory import body_phantom as body
from tests.factory import write_noisy_series as write_series


def strict_json(path: Path) -> dict:
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def invoke(*args: str):
    return CliRunner().invoke(cli.app, ["qa", *map(str, args)])


def test_qa_one_series_tables_and_json_schema(tmp_path):
    write_series(tmp_path / "in" / "a", 4)
    result = invoke(tmp_path / "in", "--json", tmp_path / "qa.json")
    assert result.exit_code == 0, result.output
    assert "NPS peak /mm" in result.output and "neighbour difference" in result.output
    assert "a/s00.dcm" in result.output and "mean of 4 files" in result.output

    data = strict_json(tmp_path / "qa.json")
    assert data["format"] == "ct-denoise qa" and data["paired"] is False
    assert [f["file"] for f in data["files"]] == [f"a/s{k:02d}.dcm" for k in range(4)]
    for obj in [f["before"] for f in data["files"]] + [data["series"][0]["before"], data["mean"]["before"]]:
        for key in ("noise_sd_hu", "nps_peak_freq_mm", "nps_mean_freq_mm", "edge_width_mm"):
            assert isinstance(obj[key], float), (key, obj)
        assert abs(obj["noise_sd_hu"] / SIGMA - 1) < 0.06
        assert abs(obj["edge_width_mm"] / (2 * 1.2816 * 0.5) - 1) < 0.1  # the disk's own 0.5 mm blur
    series = data["series"][0]
    assert series["slices"] == 4 and series["nps_method"] == "neighbour difference"
    curve = series["nps_curve"]
    assert len(curve["freq_mm"]) == len(curve["before"]) and "after" not in curve
    flat = np.array(curve["before"][2:])  # white noise: flat at sigma^2 dx dy
    assert abs(flat.mean() / (SIGMA ** 2 * SPACING ** 2) - 1) < 0.1


def test_qa_before_after_pair_reports_residual_and_change(tmp_path):
    write_series(tmp_path / "before", 3)
    write_smoothed(tmp_path / "before", tmp_path / "after")
    result = invoke(tmp_path / "before", tmp_path / "after", "--json", tmp_path / "qa.json")
    assert result.exit_code == 0, result.output
    assert "->" in result.output and "resid SD HU" in result.output

    data = strict_json(tmp_path / "qa.json")
    assert data["paired"] is True
    for obj in data["files"] + data["series"] + [data["mean"]]:
        b, a, change = obj["before"], obj["after"], obj["change"]
        assert a["noise_sd_hu"] < 0.5 * b["noise_sd_hu"]
        assert change["noise_reduction_pct"] == pytest.approx(100 * (1 - a["noise_sd_hu"] / b["noise_sd_hu"]))
        assert change["nps_mean_shift_mm"] < -0.05  # smoothing makes the texture coarser
        assert change["edge_width_change_pct"] > 20  # and the edge blurrier, measured on the same edges
        assert obj["residual_sd_hu"] > 15  # the removed noise, and the blurred edge
        assert 0 <= obj["residual_structure"] <= 1
    assert data["files"][0]["after_file"] == data["files"][0]["file"]
    assert data["series"][0]["nps_curve"]["after"] is not None


def test_qa_pairs_by_sop_through_source_image_sequence(tmp_path):
    write_series(tmp_path / "clean", 2, names=["x1.dcm", "x2.dcm"])
    runner = CliRunner()
    noisy = tmp_path / "noisy"
    assert runner.invoke(cli.app, ["noise", str(tmp_path / "clean"), str(noisy), "--sigma", "40"]).exit_code == 0
    for k, path in enumerate(sorted(noisy.rglob("*.dcm"))):  # other names: only the SOP reference pairs them
        path.rename(noisy / f"renamed_{k}.dcm")
    by_path = invoke(tmp_path / "clean", noisy)
    assert by_path.exit_code == 3 and "nothing matched" in by_path.output
    result = invoke(tmp_path / "clean", noisy, "--match", "sop", "--json", tmp_path / "qa.json")
    assert result.exit_code == 0, result.output
    data = strict_json(tmp_path / "qa.json")
    assert sorted(f["after_file"] for f in data["files"]) == ["renamed_0.dcm", "renamed_1.dcm"]
    assert data["mean"]["change"]["noise_reduction_pct"] < -50  # 40 HU added to 20 HU: noise up


def test_qa_bad_input_notes_nulls_and_the_batch_goes_on(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    write_series(before / "good", 2)
    write_series(before / "lung", 1, image=np.full((128, 128), -850.0))  # no soft tissue, no edge
    save(non_ct_dataset("MR"), before / "mr.dcm")
    write_smoothed(before, after)
    save(ct_dataset(np.zeros((64, 64))), after / "good" / "s01.dcm")  # replaces its pair: wrong size
    result = invoke(before, after, "--json", tmp_path / "qa.json")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("ignored before mr.dcm: not CT") for line in lines)
    assert any(line.startswith("FAILED  good/s01.dcm: after file good/s01.dcm has shape (1, 64, 64)")
               for line in lines)
    assert any(line.startswith("note: lung/s00.dcm: noise SD: no uniform soft-tissue region") for line in lines)

    data = strict_json(tmp_path / "qa.json")
    by_file = {f["file"]: f for f in data["files"]}
    assert by_file["lung/s00.dcm"]["before"]["noise_sd_hu"] is None
    assert by_file["lung/s00.dcm"]["before"]["edge_width_mm"] is None
    assert "failed" in by_file["good/s01.dcm"] and "before" not in by_file["good/s01.dcm"]
    assert by_file["good/s00.dcm"]["before"]["noise_sd_hu"] > 0
    assert data["mean"]["files"] == 2


def test_qa_user_rois_and_their_errors(tmp_path):
    write_series(tmp_path / "in", 2)
    result = invoke(tmp_path / "in", "--roi", "50,50,24,24", "--roi", "40,60,24,24", "--json", tmp_path / "q.json")
    assert result.exit_code == 0, result.output
    data = strict_json(tmp_path / "q.json")
    assert data["rois"] == [[50, 50, 24, 24], [40, 60, 24, 24]]
    first = load_ct(tmp_path / "in" / "s00.dcm").hu[0].astype(np.float64)
    pooled = math.sqrt((np.var(first[50:74, 50:74], ddof=1) + np.var(first[60:84, 40:64], ddof=1)) / 2)
    assert data["files"][0]["before"]["noise_sd_hu"] == pytest.approx(pooled, rel=1e-6)

    bad = invoke(tmp_path / "in", "--roi", "1,2,3")
    assert bad.exit_code == 2 and "expected x,y,w,h" in bad.output
    outside = invoke(tmp_path / "in", "--roi", "120,120,30,30")
    assert outside.exit_code == 1
    assert "FAILED  s00.dcm: ROI 120,120,30,30 (x,y,w,h) does not fit a 128x128 image" in outside.output


def test_qa_nothing_to_do_and_missing_input(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    result = invoke(tmp_path / "empty")
    assert result.exit_code == 3 and "no CT image found" in result.output
    assert invoke(tmp_path / "missing").exit_code == 2
    assert invoke(tmp_path / "empty", "--match", "name").exit_code == 2


def test_qa_water_phantom_with_correlated_noise(tmp_path):
    """A physicist's first scan: a water cylinder (0 HU) with CT-like correlated noise of 20 HU. Its
    noise SD is measured in the water (before, 0 HU lay on the soft-tissue bound: 18.2 and 18.6 HU,
    and one slice with no region at all)."""
    rng = np.random.default_rng(28)
    yy, xx = np.mgrid[:128, :128]
    water = np.where(np.hypot(yy - 63.7, xx - 64.2) * SPACING < 40.0, 0.0, -1000.0)
    uids = {"study_uid": generate_uid(), "series_uid": generate_uid(), "frame_of_reference": generate_uid()}
    for k in range(3):
        noise = ndimage.gaussian_filter(rng.normal(size=water.shape), 0.7, mode="wrap")
        hu = water + noise * (SIGMA / noise.std())
        save(ct_dataset(hu, z=float(k), instance=k + 1, spacing=(SPACING, SPACING), **uids),
             tmp_path / "in" / f"w{k}.dcm")
    result = invoke(tmp_path / "in", "--json", tmp_path / "qa.json")
    assert result.exit_code == 0, result.output
    assert "no uniform" not in result.output
    data = strict_json(tmp_path / "qa.json")
    for obj in [f["before"] for f in data["files"]] + [data["series"][0]["before"], data["mean"]["before"]]:
        assert abs(obj["noise_sd_hu"] / SIGMA - 1) < 0.06  # the 6 mm window loses about 4 % of this noise


def test_qa_enhanced_ct_frames_are_slices(tmp_path):
    frames = np.stack([body() + np.random.default_rng(k).normal(0, SIGMA, (128, 128)) for k in range(3)])
    ds = enhanced_ct_dataset(frames, rescales=((1.0, -1024.0),), per_frame_rescale=False)
    for item in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence:
        item.PixelSpacing = [SPACING, SPACING]
    save(ds, tmp_path / "in" / "multi.dcm")
    result = qa.run(tmp_path / "in")
    assert result.exit_code == 0
    (entry,) = result.files
    assert entry.frames == 3
    assert abs(entry.result["before"]["noise_sd_hu"] / SIGMA - 1) < 0.06
    assert result.series[0]["slices"] == 3 and result.series[0]["nps_method"] == "neighbour difference"


def _middle(series_dir: Path, dest: Path, n: int = 6) -> Path:
    files = sorted(p for p in series_dir.iterdir() if p.suffix == ".dcm")
    dest.mkdir(parents=True)
    for p in files[len(files) // 2 - n // 2: len(files) // 2 + n // 2]:
        (dest / p.name).symlink_to(p)
    return dest


def test_qa_tells_the_sharp_kernel_from_the_soft_one(shared_ct, tmp_path):
    """One acquisition, two kernels (Philips L sharp, B soft): the sharp one has
    more noise, a higher NPS peak and mean frequency, and sharper edges."""
    pair = shared_ct / "philips-chest-kernels"
    sharp = qa.run(_middle(pair / "recon2", tmp_path / "L")).series[0]["before"]
    soft = qa.run(_middle(pair / "recon3", tmp_path / "B")).series[0]["before"]
    assert sharp["noise_sd_hu"] > 3 * soft["noise_sd_hu"]
    assert sharp["nps_peak_freq_mm"] > soft["nps_peak_freq_mm"] + 0.1
    assert sharp["nps_mean_freq_mm"] > soft["nps_mean_freq_mm"] + 0.05
    assert sharp["edge_width_mm"] < 0.6 * soft["edge_width_mm"]
