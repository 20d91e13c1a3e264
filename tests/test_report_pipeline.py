"""The report job: evaluation and training-run folders in, one self-contained
HTML page (and its pictures) out, with nothing patient-identifying in it."""

from __future__ import annotations

import json
import re
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
    index = report_job.run(evaldir, out, window=(-1000, 1000), force=True)
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
                 "noisy | model | clean in the display window -160..240 HU; the residual noisy - model"):
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


def _methods_row(page: str, name: str) -> list[str]:
    """The cells of ``name``'s row in the first table (PSNR, RMSE, MSE, seconds per slice)."""
    table = page.split("<table>", 1)[1].split("</table>", 1)[0]
    row = re.search(rf"<tr><td>{re.escape(name)}</td>(.*?)</tr>", table)
    assert row, (name, table)
    return re.findall(r"<td[^>]*>([^<]*)</td>", row[1])


def test_report_needs_force_to_write_over_a_folder(tmp_path):
    from typer.testing import CliRunner

    import cli

    evaldir = tmp_path / "eval"
    make_evaluation(tmp_path, evaldir, n=3)
    out = tmp_path / "report"
    runner = CliRunner()
    assert runner.invoke(cli.app, ["report", str(evaldir), "--out", str(out)]).exit_code == 0
    (out / "notes.txt").write_text("the user's own file")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}

    refused = runner.invoke(cli.app, ["report", str(evaldir), "--out", str(out), "--window", "-1000", "1000"])
    assert refused.exit_code == 2, refused.output
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--force" in lines[0] and "not empty" in lines[0], refused.output
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before  # nothing written
    with pytest.raises(report_job.ReportExists):
        report_job.run(evaldir, out)

    forced = runner.invoke(cli.app, ["report", str(evaldir), "--out", str(out), "--window", "-1000", "1000",
                                     "--force"])
    assert forced.exit_code == 0, forced.output
    assert "display window -1000..1000 HU (as requested)" in (out / "index.html").read_text()
    assert (out / "notes.txt").read_text() == "the user's own file"  # only the report's own files are replaced

    (tmp_path / "empty").mkdir()  # an empty folder is no report to lose
    assert runner.invoke(cli.app, ["report", str(evaldir), "--out", str(tmp_path / "empty")]).exit_code == 0
    (tmp_path / "file").write_text("x")
    assert runner.invoke(cli.app, ["report", str(evaldir), "--out", str(tmp_path / "file"), "--force"]).exit_code == 2


def test_report_states_every_window_scale_and_research_use(tmp_path):
    from denoise.report import residual_window, scale_bar
    from denoise.report.parts import read_slice

    evaldir = tmp_path / "eval"
    _, noisy, test = make_evaluation(tmp_path, evaldir, n=3)
    page = report_job.run(evaldir, tmp_path / "report").read_text()
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    panels = [c for c in captions if "PSNR" in c]
    assert len(panels) == 3
    for k, name in enumerate(sorted(p.name for p in (noisy / "series").iterdir())):
        residual = read_slice(noisy / "series" / name).hu - read_slice(test / "series" / name).hu
        low, high = residual_window(residual)
        assert f"series/{name}" in panels[k]
        assert "in the display window -160..240 HU" in panels[k]
        assert f"the residual noisy - model (what it removed) in its own window {low:g}..{high:g} HU" in panels[k]
        mm, _ = scale_bar(0.7, 48)  # tests.factory writes 0.7 mm pixels; 48 px slices are shown as they are
        assert f"White bar: {mm:g} mm (pixels 0.7 mm apart as shown)" in panels[k]
    scroll = next(c for c in captions if c.startswith("scroll through"))
    assert "in the display window -160..240 HU" in scroll and "White bar: 10 mm" in scroll
    assert "Metrics use the HU window -1000..1000 HU" in page
    footer = page.split("<footer>", 1)[1]
    assert "For research use only, not for diagnosis" in footer and "no patient names, IDs or dates" in footer
    assert page.count("<table>") >= 3 and page.count("<table>") == page.count('<aside class="how">')  # one each
    # the test series was not written by `ct-denoise denoise`: its time is not known, and the page says why
    assert _methods_row(page, "model")[-1] == "n/a"
    assert "Seconds per slice of model: not measured (the test files were not written by" in page
    assert _methods_row(page, "noisy input")[-1] == "—" and float(_methods_row(page, "tv")[-1]) > 0


def test_report_times_the_model_that_made_the_test_series(tmp_path):
    from pipelines import denoise_folder

    clean, noisy, test = tmp_path / "clean", tmp_path / "noisy", tmp_path / "test"
    write_series(clean / "series", 3, rows=48, cols=48)
    noise.run(clean, noisy, sigma_hu=50, seed=0)
    denoise_folder.run(noisy, test, strength="medium", ensemble=1)  # the bundled model
    evaluate.run(clean, test, noisy=noisy, baselines=["tv"], test_label="model",
                 json_out=tmp_path / "eval" / "evaluation.json")
    page = report_job.run(tmp_path / "eval", tmp_path / "report").read_text()
    seconds = float(_methods_row(page, "model")[-1])
    assert 0 < seconds < 60
    assert "timed by this report on this machine: the bundled model default_ct@" in page
    assert "strength 0.667 (medium)" in page and "3 48x48 slice(s)" in page
    assert_private(tmp_path / "report", tmp_path, tmp_path.resolve())
