"""Privacy: every artifact except the DICOM outputs themselves (which keep the
patient module, as a derived series must) is free of the patient's name and ID."""

from __future__ import annotations

from typer.testing import CliRunner

import cli
from tests.factory import PATIENT_ID, PATIENT_NAME

SECRETS = [PATIENT_ID, PATIENT_NAME, PATIENT_NAME.split("^")[0] + "^"]


def test_no_identifier_in_any_log_report_gif_png_or_json(tmp_path, series_dir, tiny_run):
    runner = CliRunner()
    out = tmp_path / "work"
    outputs = []
    steps = [
        ["export-model", str(tiny_run), "--out", str(out / "model" / "m")],
        ["info", str(series_dir)],
        ["info", str(series_dir), "--json", "-"],
        ["noise", str(series_dir), str(out / "noisy"), "--sigma", "50"],
        ["denoise", str(out / "noisy"), str(out / "den"), "--model", str(out / "model" / "m")],
        ["evaluate", str(series_dir), str(out / "den"), "--noisy", str(out / "noisy"), "--baselines", "tv",
         "--json", str(out / "eval" / "evaluation.json")],
        ["report", str(out / "eval"), "--out", str(out / "report_eval")],
        ["qa", str(out / "noisy"), str(out / "den"), "--json", str(out / "qa" / "qa.json")],
        ["report", str(out / "qa"), "--out", str(out / "report_qa")],
        ["report", str(tiny_run), "--out", str(out / "report_run")],
    ]
    for args in steps:
        result = runner.invoke(cli.app, args)
        assert result.exit_code == 0, (args, result.output)
        outputs.append(result.output)
    files = [p for p in list(out.rglob("*")) + list(tiny_run.rglob("*"))
             if p.is_file() and p.parent.name not in ("noisy", "den", "series1")]
    assert any(p.suffix == ".gif" for p in files) and any(p.suffix == ".html" for p in files)
    assert any(p.suffix == ".png" for p in files) and any(p.name == "log.csv" for p in files)
    for secret in SECRETS:
        for text in outputs:
            assert secret not in text
        for path in files:
            assert secret.encode() not in path.read_bytes(), (secret, path)
