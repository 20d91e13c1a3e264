"""`evaluate --noisy --baselines`: one table of test vs noisy input vs classical denoisers;
`export-model`: a run's checkpoint becomes a model file with provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from denoise import metrics
from denoise.baselines import run_baseline
from denoise.dicom import load_ct
from pipelines import noise

runner = CliRunner()


@pytest.fixture
def trio(tmp_path, series_dir):
    """(clean, noisy sigma 50, 'denoised' = noisy sigma 10) folders."""
    noise.run(series_dir, tmp_path / "noisy", sigma_hu=50.0, seed=0)
    noise.run(series_dir, tmp_path / "test", sigma_hu=10.0, seed=1)
    return series_dir, tmp_path / "noisy", tmp_path / "test"


def test_evaluate_with_baselines_prints_one_table_and_json(tmp_path, trio):
    clean, noisy, test = trio
    out_json = tmp_path / "ev" / "evaluation.json"
    result = runner.invoke(cli.app, ["evaluate", str(clean), str(test), "--noisy", str(noisy), "--baselines",
                                     "tv,nlm", "--label", "model", "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("method"):]
    for name in ("model", "noisy input", "tv", "nlm"):
        assert f"\n{name} " in table
    data = json.loads(out_json.read_text())
    methods = data["methods"]
    assert list(methods) == ["model", "noisy input", "tv", "nlm"]
    assert methods["tv"]["seconds_per_slice"] > 0 and "seconds_per_slice" not in methods["model"]
    # Known answer: the TV row is the mean over files of TV run on each noisy file.
    expected = []
    for path in sorted((clean / "series1").iterdir()):
        ref = load_ct(path).hu[0]
        den = run_baseline("tv", load_ct(noisy / "series1" / path.name).hu[0])
        expected.append(metrics.psnr(ref, den))
    assert methods["tv"]["psnr"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert methods["tv"]["psnr"] > methods["noisy input"]["psnr"]
    assert data["sources"]["noisy"] == str(noisy.resolve())


def test_evaluate_baselines_usage_errors(trio):
    clean, noisy, test = trio
    unknown = runner.invoke(cli.app, ["evaluate", str(clean), str(test), "--noisy", str(noisy),
                                      "--baselines", "tv,magic"])
    assert unknown.exit_code == 2 and "magic" in unknown.output and "nlm" in unknown.output
    no_noisy = runner.invoke(cli.app, ["evaluate", str(clean), str(test), "--baselines", "tv"])
    assert no_noisy.exit_code == 2 and "--noisy" in no_noisy.output


def test_export_model_needs_a_run(tmp_path):
    missing = runner.invoke(cli.app, ["export-model", str(tmp_path / "norun"), "--out", str(tmp_path / "m")])
    assert missing.exit_code == 2 and "no such checkpoint" in missing.output


def test_export_model_metadata(tmp_path, tiny_run):
    result = runner.invoke(cli.app, ["export-model", str(tiny_run), "--out", str(tmp_path / "models" / "m")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "models" / "m.json").read_text())
    meta = doc["metadata"]
    assert doc["optimizer"] is None  # weights only
    assert meta["training"]["epochs_run"] == 1 and meta["noise"]["blind"] is True
    assert meta["reproduce"][0].startswith("ct-denoise train --config")
    assert {"val_psnr", "val_ssim", "window_hu"} <= set(meta["validation"])
    assert meta["training"]["data"][0]["series"]
    from denoise.inference import Denoiser

    d = Denoiser.load(tmp_path / "models" / "m")
    assert d(np.zeros((24, 24), np.float32)).shape == (24, 24)
    assert meta["training"]["warm_start"] is None


def test_fine_tuned_model_records_what_it_started_from(tmp_path, tiny_run, tiny_manifest):
    from pipelines import train
    from tests.factory import write_config

    stage1 = tmp_path / "stage1"
    assert runner.invoke(cli.app, ["export-model", str(tiny_run), "--out", str(stage1)]).exit_code == 0
    config = write_config(tmp_path, tiny_manifest, epochs=1)
    config.write_text(config.read_text().replace("seed = 3", f'seed = 3\ninit = "{stage1.as_posix()}"'))
    train.run(config, tmp_path / "run2", show_progress=False)
    result = runner.invoke(cli.app, ["export-model", str(tmp_path / "run2"), "--out", str(tmp_path / "m2")])
    assert result.exit_code == 0, result.output
    warm = json.loads((tmp_path / "m2.json").read_text())["metadata"]["training"]["warm_start"]
    stage1_doc = json.loads((tmp_path / "stage1.json").read_text())
    assert warm["path"] == stage1.as_posix()
    assert warm["weights_sha256"] == stage1_doc["weights_sha256"]
    assert warm["training"] == stage1_doc["metadata"]["training"] and warm["reproduce"]
