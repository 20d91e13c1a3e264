"""The info, noise and evaluate commands, run as a user would (CliRunner)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from skimage.metrics import structural_similarity
from typer.testing import CliRunner

import cli
from tests.factory import PATIENT_ID, PATIENT_NAME, write_series

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def digest_tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_cli_runs_from_a_checkout():
    res = subprocess.run([sys.executable, "cli.py", "--help"], cwd=Path(cli.__file__).parent,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "denoise" in res.stdout.lower()


def test_info_lists_series_and_skipped_files_without_identifiers(junk_dir):
    root, expected = junk_dir
    res = invoke("info", root)
    assert res.exit_code == 0, res.output
    assert "1 series, 2 slices" in res.output
    for rel, word in expected.items():
        if word:
            line = next(line for line in res.output.splitlines() if line.startswith(f"skipped {rel}:"))
            assert word in line
    assert PATIENT_NAME not in res.output and PATIENT_ID not in res.output
    res = invoke("info", root, "--json", "-")
    data = json.loads(res.output)
    assert data["series"][0]["slices"] == 2 and len(data["skipped"]) == sum(map(bool, expected.values()))


def test_info_exit_codes(tmp_path):
    assert invoke("info", tmp_path / "missing").exit_code == 2
    (tmp_path / "empty").mkdir()
    assert invoke("info", tmp_path / "empty").exit_code == 3


def test_noise_writes_a_derived_series_and_resumes(series_dir, tmp_path):
    out = tmp_path / "noisy"
    before = digest_tree(series_dir)
    res = invoke("noise", series_dir, out, "--sigma", 30, "--seed", 1)
    assert res.exit_code == 0, res.output
    assert "4 written, 0 already done, 0 failed" in res.output
    outs = sorted(out.rglob("IM_*"))
    assert [p.relative_to(out) for p in outs] == [p.relative_to(series_dir) for p in sorted(series_dir.rglob("IM_*"))]
    assert len({pydicom.dcmread(p).SeriesInstanceUID for p in outs}) == 1
    assert "Gaussian noise, sigma 30 HU" in pydicom.dcmread(outs[0]).DerivationDescription
    first = digest_tree(out)
    # rerun: nothing redone; --force: rewritten with identical (seeded) pixels
    res = invoke("noise", series_dir, out, "--sigma", 30, "--seed", 1)
    assert res.exit_code == 0 and "0 written, 4 already done" in res.output
    outs[0].unlink()
    res = invoke("noise", series_dir, out, "--sigma", 30, "--seed", 1)
    assert "1 written, 3 already done" in res.output
    res = invoke("noise", series_dir, out, "--sigma", 30, "--seed", 1, "--force")
    assert "4 written" in res.output
    again = {k: pydicom.dcmread(out / k).pixel_array.tobytes() for k in first}
    assert all(again[k] == pydicom.dcmread(out / k).pixel_array.tobytes() for k in first)
    # another operation's output in the way is not overwritten without --force
    res = invoke("noise", series_dir, out, "--sigma", 31, "--seed", 1)
    assert res.exit_code == 1 and "use --force" in res.output
    assert digest_tree(series_dir) == before  # inputs untouched


def test_noise_refuses_output_inside_input_and_bad_options(series_dir):
    assert invoke("noise", series_dir, series_dir / "out", "--sigma", 5).exit_code == 2
    assert not (series_dir / "out").exists()
    res = invoke("noise", series_dir, series_dir.parent / "o", "--sigma", 5, "--dose", 1e5)
    assert res.exit_code == 2 and "exactly one" in res.output
    assert invoke("noise", series_dir, series_dir.parent / "o").exit_code == 2


def test_noise_on_junk_reports_each_bad_file_and_keeps_going(junk_dir, tmp_path):
    root, expected = junk_dir
    before = digest_tree(root)
    res = invoke("noise", root, tmp_path / "out", "--sigma", 10)
    assert res.exit_code == 1, res.output
    good = [rel for rel, word in expected.items() if not word]
    assert all((tmp_path / "out" / rel).is_file() for rel in good)
    for rel, word in expected.items():
        if word:
            assert sum(line.split(":")[0].endswith(f" {rel}") for line in res.output.splitlines()) == 1
    assert digest_tree(root) == before


def test_parallel_workers_give_identical_outputs(series_dir, tmp_path):
    invoke("noise", series_dir, tmp_path / "one", "--sigma", 20)
    res = invoke("noise", series_dir, tmp_path / "two", "--sigma", 20, "--workers", 2)
    assert res.exit_code == 0, res.output
    for p in sorted((tmp_path / "one").rglob("IM_*")):
        q = tmp_path / "two" / p.relative_to(tmp_path / "one")
        assert pydicom.dcmread(p).pixel_array.tobytes() == pydicom.dcmread(q).pixel_array.tobytes()


def test_evaluate_exits_3_when_nothing_matches(series_dir, tmp_path):
    write_series(tmp_path / "other", 2, names=["x1", "x2"])
    res = invoke("evaluate", series_dir, tmp_path / "other")
    assert res.exit_code == 3 and "nothing matched" in res.output


def test_evaluate_matches_by_sop_and_position(series_dir, tmp_path):
    out = tmp_path / "renamed"
    invoke("noise", series_dir, tmp_path / "noisy", "--sigma", 40)
    # move outputs to different names: path matching fails, SOP/position matching works
    for k, p in enumerate(sorted((tmp_path / "noisy").rglob("IM_*"))):
        (out / f"n{k}").parent.mkdir(parents=True, exist_ok=True)
        p.rename(out / f"n{k}")
    assert invoke("evaluate", series_dir, out).exit_code == 3
    for how in ("sop", "position"):
        res = invoke("evaluate", series_dir, out, "--match", how, "--json", tmp_path / f"{how}.json")
        assert res.exit_code == 0, res.output
        assert json.loads((tmp_path / f"{how}.json").read_text())["n_matched"] == 4


def _hand_metrics(ref_file: Path, test_file: Path) -> tuple[float, float]:
    """PSNR/SSIM worked out from raw stored values, independent of the package."""
    def unit(path):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        return (np.clip(hu, -1000, 1000) + 1000) / 2000

    a, b = unit(ref_file), unit(test_file)
    mse = np.mean((a - b) ** 2)
    return 10 * np.log10(1.0 / mse), structural_similarity(a, b, data_range=1.0)


@pytest.mark.slow
def test_noise_then_evaluate_on_shared_head_matches_hand_computation(shared_ct, tmp_path):
    head = shared_ct / "ge-head"
    res = invoke("noise", head, tmp_path / "noisy", "--sigma", 50, "--seed", 0)
    assert res.exit_code == 0 and "28 written" in res.output
    res = invoke("evaluate", head, tmp_path / "noisy", "--json", tmp_path / "eval.json")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["n_matched"] == 28 and data["window_hu"] == [-1000.0, 1000.0] and data["data_range"] == 1.0
    hand = [_hand_metrics(head / f["reference"], tmp_path / "noisy" / f["test"]) for f in data["files"]]
    for f, (psnr, ssim) in zip(data["files"], hand, strict=True):
        assert f["psnr"] == pytest.approx(psnr, abs=1e-9)
        assert f["ssim"] == pytest.approx(ssim, abs=1e-9)
    assert data["mean"]["psnr"] == pytest.approx(np.mean([h[0] for h in hand]), abs=1e-9)
    # sigma 50 HU in a 2000 HU window: 20*log10(2000/50) = 32.0 dB where nothing is clipped;
    # air and padding are clipped at -1000, which removes about half the noise there
    assert 32.0 < data["mean"]["psnr"] < 36.0


def test_demo_denoises_samples_with_the_bundled_model_and_writes_the_report(tmp_path):
    """The README's first command: noise -> bundled model -> evaluate vs baselines -> report."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    for name in ("model", "noisy input", "nlm", "tv", "wavelet"):
        assert f"\n{name} " in result.output
    assert (tmp_path / "demo" / "report" / "index.html").is_file()
    methods = json.loads((tmp_path / "demo" / "evaluation.json").read_text())["methods"]
    assert methods["model"]["psnr"] > methods["noisy input"]["psnr"] + 3  # the model really denoises


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_json_outputs_are_strict_json_and_never_styled(tmp_path, monkeypatch):
    """An identical pair has an infinite PSNR: evaluate --json writes null, not Infinity;
    info --json prints plain JSON even when FORCE_COLOR asks for colour."""
    write_series(tmp_path / "ref", 2)
    res = invoke("evaluate", tmp_path / "ref", tmp_path / "ref", "--json", tmp_path / "e.json")
    assert res.exit_code == 0, res.output
    text = (tmp_path / "e.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    data = _strict(text)
    assert data["files"][0]["psnr"] is None
    monkeypatch.setenv("FORCE_COLOR", "1")
    res = invoke("info", tmp_path / "ref", "--json", "-")
    assert res.exit_code == 0 and "\x1b[" not in res.output
    assert _strict(res.output)["series"][0]["slices"] == 2


def test_version_names_the_package_and_the_bundled_model():
    from denoise import __version__

    res = invoke("--version")
    assert res.exit_code == 0 and f"ct-denoise {__version__}" in res.output
    assert "default_ct@" in res.output
