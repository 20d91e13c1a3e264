"""`--json` means one thing on every command (issue 20): ``--json FILE`` writes
the result as strict JSON to FILE, ``--json -`` to stdout with nothing else
there; noise, denoise, train and manifest give a JSON summary too."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import cli
from tests.factory import junk_folder, write_series

runner = CliRunner()


def strict(text: str):
    """Parse JSON refusing NaN/Infinity (which json.loads accepts by default)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def invoke(*args, **kw):
    return runner.invoke(cli.app, [str(a) for a in args], **kw)


def test_denoise_summary_on_stdout_has_counts_per_file_outcomes_and_outputs(tmp_path):
    write_series(tmp_path / "in", 3)
    junk_folder(tmp_path / "in" / "junk")
    result = invoke("denoise", tmp_path / "in", tmp_path / "out", "--json", "-")
    summary = strict(result.stdout)  # stdout holds the JSON only
    assert summary["command"] == "denoise" and summary["exit_code"] == result.exit_code
    assert summary["counts"]["failed"] >= 1 and summary["counts"]["ignored"] >= 1
    written = [f for f in summary["files"] if f["status"] == "written"]
    assert len(written) == summary["counts"]["written"] and {f"IM_{k:04d}" for k in range(3)} <= {
        f["file"] for f in written}
    assert all((tmp_path / "out" / f["file"]).is_file() for f in written)
    assert all(f["output"] and f["seconds"] > 0 for f in written)
    assert all(f["reason"] for f in summary["files"] if f["status"] in ("failed", "ignored"))
    assert "written" in result.stderr  # the human summary went to stderr


def test_noise_summary_to_a_file(tmp_path):
    write_series(tmp_path / "in", 2)
    result = invoke("noise", tmp_path / "in", tmp_path / "out", "--sigma", "20", "--json", tmp_path / "n.json")
    assert result.exit_code == 0
    summary = strict((tmp_path / "n.json").read_text())
    assert summary["noisy"]["counts"]["written"] == 2 and "written" in result.stdout


def test_evaluate_of_identical_images_is_strict_json_on_stdout(tmp_path):
    write_series(tmp_path / "ref", 2)
    result = invoke("evaluate", tmp_path / "ref", tmp_path / "ref", "--json", "-")
    data = strict(result.stdout)
    assert data["files"] and data["files"][0]["psnr"] is None  # infinite PSNR as null, not Infinity


def test_info_json_is_never_styled(tmp_path):
    write_series(tmp_path / "in", 2)
    result = invoke("info", tmp_path / "in", "--json", "-", env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert "\x1b[" not in result.stdout and strict(result.stdout)["series"][0]["slices"] == 2


def test_manifest_and_train_summaries(tmp_path, tiny_manifest):
    from tests.factory import write_config

    result = invoke("manifest", "build", tiny_manifest.parent.parent / "data", "--out", tmp_path / "m.json",
                    "--json", "-")
    summary = strict(result.stdout)
    assert result.exit_code == 0 and summary["files"] == 12 and summary["split_by"] == "patient"
    result = invoke("train", "--config", write_config(tmp_path, tiny_manifest, epochs=1), "--out", tmp_path / "run",
                    "--quiet", "--json", "-")
    summary = strict(result.stdout)
    assert result.exit_code == 0 and summary["epochs_done"] == 1 and summary["seconds"] > 0
    assert (tmp_path / "run" / "config.toml").is_file() and summary["run_dir"] == str(tmp_path / "run")


def test_dose_with_clean_out_reconstructs_each_slice_once_per_output(tmp_path, monkeypatch):
    import numpy as np

    from denoise.noise import low_dose_pair
    from pipelines import noise as noise_job

    calls = []
    real = noise_job.reconstruct
    monkeypatch.setattr(noise_job, "reconstruct", lambda *a, **k: calls.append(1) or real(*a, **k))
    write_series(tmp_path / "in", 2, rows=32, cols=32, spacing=(0.7, 0.7))
    result = invoke("noise", tmp_path / "in", tmp_path / "noisy", "--dose", "1e5", "--views", "64",
                    "--clean-out", tmp_path / "clean")
    assert result.exit_code == 0, result.output
    assert len(calls) == 4  # 2 slices x (noisy, clean): no reconstruction made twice
    from denoise.dicom import load_ct

    source = load_ct(tmp_path / "in" / "IM_0000").hu[0]
    _, clean = low_dose_pair(source, i0=1e5, pixel_spacing_mm=0.7, rng=np.random.default_rng(0), n_views=64)
    got = load_ct(tmp_path / "clean" / "IM_0000").hu[0]
    assert np.abs(got - clean).max() <= 1.0  # the same clean reference as the pair (up to stored rounding)
