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
