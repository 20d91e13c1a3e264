"""The report job: evaluation and training-run folders in, one self-contained
HTML page (and its pictures) out, with nothing patient-identifying in it."""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import pytest

from pipelines import evaluate, noise
from pipelines import report as report_job
from tests.factory import PATIENT_ID, PATIENT_NAME, write_series


def make_evaluation(root, evaldir, n=5):
    """clean / noisy (sigma 50) / test (sigma 10, stands in for a model) and evaluation.json."""
    clean, noisy, test = root / "clean", root / "noisy", root / "test"
    write_series(clean / "series", n, rows=48, cols=48)
    noise.run(clean, noisy, sigma_hu=50, seed=0)
    noise.run(clean, test, sigma_hu=10, seed=1)
    evaluate.run(clean, test, noisy=noisy, baselines=["tv"], test_label="model",
                 json_out=evaldir / "evaluation.json")
    return clean, noisy, test


def assert_private(out_dir, *paths):
    """No patient name/ID and no absolute path in any file written."""
    secrets = [PATIENT_NAME, PATIENT_ID, *(str(p) for p in paths)]
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, (path.name, secret)


def test_evaluation_report(tmp_path):
    evaldir = tmp_path / "eval"
    make_evaluation(tmp_path, evaldir)
    out = evaldir / "report"  # inside the evaluated folder, as in the README
    index = report_job.run(evaldir, out)
    assert index == out / "index.html" and index.is_file()
    page = index.read_text()
    for text in ("model", "noisy input", "tv", "display window -160..240 HU", "soft tissue",
                 "HU window -1000..1000 HU", "data range 1", 'class="best"', "series/IM_0002"):
        assert text in page, text
    assert page.count("data:image/png;base64,") == 3 and page.count("data:image/gif;base64,") == 1
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "panel_1.png", "panel_2.png", "panel_3.png",
                                                     "scroll.gif"]
    assert iio.imread(out / "scroll.gif", index=None).shape[0] == 5  # every slice, one frame each
    assert "src=\"http" not in page and "<script" not in page
    assert_private(out, tmp_path, tmp_path.resolve())

    # Another display window is stated; the sources gone: no pictures, a note, no stale files.
    shutil.rmtree(tmp_path / "test")
    index = report_job.run(evaldir, out, window=(-1000, 1000))
    page = index.read_text()
    assert "display window -1000..1000 HU (as requested)" in page
    assert "pictures skipped" in page and "no longer exist" in page and "data:image" not in page
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    assert_private(out, tmp_path, tmp_path.resolve())


def test_training_run_report(tmp_path, tiny_run, tiny_manifest):
    out = tmp_path / "report"
    page = report_job.run(tiny_run, out).read_text()
    rows = json.loads((tiny_run / "log.json").read_text())
    for text in ("Training run: tiny", "best validation PSNR", f"{rows[0]['val_psnr']:.2f} dB (epoch 1)",
                 "Gaussian sigma 5..120 HU", "channels [4, 8]", "tiny.json", "Per-epoch log", "val SSIM"):
        assert text in page, text
    assert "Evaluation" not in page
    assert (out / "curves.png").read_bytes() == (tiny_run / "curves.png").read_bytes()
    assert (out / "progress.gif").read_bytes() == (tiny_run / "progress.gif").read_bytes()
    assert "data:image/png;base64," in page and "data:image/gif;base64," in page
    assert_private(out, tiny_run, tiny_manifest.parent.parent)


def test_folder_with_run_and_evaluation(tmp_path, tiny_run):
    both = tmp_path / "both"
    shutil.copytree(tiny_run, both)
    make_evaluation(tmp_path, both, n=3)
    shutil.rmtree(tmp_path / "noisy")  # noisy input gone: panels without it, no scroll GIF
    out = tmp_path / "report"
    page = report_job.run(both, out).read_text()
    assert "Training run: tiny" in page and "Per-file scores" in page and "noisy folder" in page
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "index.html", "panel_1.png", "panel_2.png",
                                                     "panel_3.png", "progress.gif"]
    assert_private(out, tmp_path, tmp_path.resolve())


def test_bad_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: neither a training run folder"):
        report_job.run(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="no such file or folder"):
        report_job.run(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty" / "evaluation.json").write_text("{}")
    with pytest.raises(ValueError, match="not an evaluation"):
        report_job.run(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "empty" / "evaluation.json").unlink()
    (tmp_path / "empty" / "log.json").write_text("[]")
    with pytest.raises(ValueError, match="low < high"):
        report_job.run(tmp_path / "empty", tmp_path / "out", window=(100, -100))
    assert not (tmp_path / "out").exists()


def test_evaluation_report_shows_noise_texture_sharpness_and_residual(tmp_path):
    from tests.factory import write_noisy_series

    write_noisy_series(tmp_path / "clean", 3, seed=1)
    noise.run(tmp_path / "clean", tmp_path / "noisy", sigma_hu=40, seed=0)
    noise.run(tmp_path / "clean", tmp_path / "test", sigma_hu=5, seed=1)
    evaluate.run(tmp_path / "clean", tmp_path / "test", noisy=tmp_path / "noisy", baselines=["tv"],
                 test_label="model", json_out=tmp_path / "eval" / "evaluation.json")
    data = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert set(data["quality"]) == {"reference", "model", "noisy input", "tv"}
    assert data["quality"]["noisy input"]["noise_sd_hu"] > data["quality"]["model"]["noise_sd_hu"]
    assert data["quality"]["model"]["residual_sd_hu"] > 30  # it removed most of the added 40 HU
    assert "residual_sd_hu" not in data["quality"]["reference"]
    assert set(data["files"][0]["quality"]) == {"reference", "model"}

    out = tmp_path / "report"
    page = report_job.run(tmp_path / "eval", out).read_text()
    for text in ("Noise, texture and sharpness", "NPS mean (cycles/mm)", "edge 10-90 % (mm)", "residual structure",
                 "noisy | model | clean | noisy - model"):
        assert text in page, text
    assert (out / "quality.png").is_file()
    assert iio.imread(out / "panel_1.png").shape[1] > 4 * 128  # four tiles: the residual beside the others
    assert_private(out, tmp_path, tmp_path.resolve())


def test_qa_report(tmp_path):
    from pipelines import qa
    from tests.factory import write_noisy_series, write_smoothed

    write_noisy_series(tmp_path / "before" / "a", 4)
    write_smoothed(tmp_path / "before", tmp_path / "after")
    qa.run(tmp_path / "before", tmp_path / "after", json_out=tmp_path / "qa" / "qa.json")
    out = tmp_path / "qa" / "report"
    page = report_job.run(tmp_path / "qa", out).read_text()
    for text in ("Image quality without a reference (qa)", "Per series", "noise SD (HU): before → after",
                 "neighbour difference", "a/s00.dcm", "noise reduction", "residual before - after"):
        assert text in page, text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["index.html", "qa_curves_1.png", "qa_panel_1.png", "qa_panel_2.png", "qa_panel_3.png",
                     "qa_regions_1.png", "qa_regions_2.png", "qa_regions_3.png"]
    regions = iio.imread(out / "qa_regions_1.png")
    assert (regions == [255, 80, 0]).all(axis=2).any() and (regions == [0, 200, 255]).all(axis=2).any()
    assert_private(out, tmp_path, tmp_path.resolve())

    same = report_job.run(tmp_path / "qa" / "qa.json", tmp_path / "direct").read_text()  # the file itself
    assert "Image quality without a reference (qa)" in same
    (tmp_path / "qa" / "qa.json").write_text('{"format": "ct-denoise qa"}')
    with pytest.raises(ValueError, match="not a result written by `ct-denoise qa --json`"):
        report_job.run(tmp_path / "qa", out)
