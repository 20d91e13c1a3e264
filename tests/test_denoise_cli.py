"""`ct-denoise denoise`: model inference over files and folders, batch rules, tiling."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import cli
from denoise.inference import VIEWS, Denoiser, self_ensemble, tiled
from denoise.nn import get_num_threads, set_num_threads
from denoise.normalize import HUWindow
from tests.factory import PATIENT_ID, phantom_hu

runner = CliRunner()


@pytest.fixture
def tiny_model(tiny_model_path):
    return tiny_model_path


def tree_digest(root):
    return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_denoise_folder_writes_a_derived_series_and_resumes(tmp_path, series_dir, tiny_model):
    before = tree_digest(series_dir)
    out = tmp_path / "out"
    result = runner.invoke(cli.app, ["denoise", str(series_dir), str(out), "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert "4 written, 0 already done, 0 failed" in result.output
    assert tree_digest(series_dir) == before  # inputs untouched
    written = sorted((out / "series1").iterdir())
    assert [p.name for p in written] == sorted(p.name for p in (series_dir / "series1").iterdir())
    src = pydicom.dcmread(series_dir / "series1" / "IM_0000")
    ds = [pydicom.dcmread(p) for p in written]
    assert len({d.SeriesInstanceUID for d in ds}) == 1 and ds[0].SeriesInstanceUID != src.SeriesInstanceUID
    assert ds[0].StudyInstanceUID == src.StudyInstanceUID and "DERIVED" in ds[0].ImageType
    assert "tiny@" in ds[0].DerivationDescription
    expected = Denoiser.load(tiny_model)(pydicom.pixels.apply_rescale(src.pixel_array, src).astype(np.float32))
    got = pydicom.pixels.apply_rescale(ds[0].pixel_array, ds[0])
    assert np.abs(got - np.round(expected)).max() <= 1  # stored as rounded integers

    again = runner.invoke(cli.app, ["denoise", str(series_dir), str(out), "--model", str(tiny_model)])
    assert again.exit_code == 0 and "0 written, 4 already done" in again.output
    # A different tiling is a different operation: refused without --force, redone with it.
    other = runner.invoke(cli.app, ["denoise", str(series_dir), str(out), "--model", str(tiny_model),
                                    "--tile", "16"])
    assert other.exit_code == 1 and "use --force" in other.output
    forced = runner.invoke(cli.app, ["denoise", str(series_dir), str(out), "--model", str(tiny_model),
                                     "--tile", "16", "--force"])
    assert forced.exit_code == 0 and "4 written" in forced.output


def test_denoise_junk_folder_reports_each_bad_file_and_goes_on(tmp_path, junk_dir, tiny_model):
    root, expected = junk_dir
    before = tree_digest(root)
    result = runner.invoke(cli.app, ["denoise", str(root), str(tmp_path / "out"), "--model", str(tiny_model),
                                     "--workers", "2"])
    assert result.exit_code == 1, result.output
    assert tree_digest(root) == before
    for rel, word in expected.items():
        if not word:  # a good CT file
            assert (tmp_path / "out" / rel).is_file(), rel
        else:
            assert rel in result.output, rel
    assert PATIENT_ID not in result.output


def test_denoise_usage_errors(tmp_path, series_dir, tiny_model):
    inside = runner.invoke(cli.app, ["denoise", str(series_dir), str(series_dir / "out"), "--model",
                                     str(tiny_model)])
    assert inside.exit_code == 2 and "inside the input" in inside.output
    missing = runner.invoke(cli.app, ["denoise", str(series_dir), str(tmp_path / "o"), "--model",
                                      str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope" in missing.output
    bad_tile = runner.invoke(cli.app, ["denoise", str(series_dir), str(tmp_path / "o"), "--model",
                                       str(tiny_model), "--tile", "2"])
    assert bad_tile.exit_code == 2 and "--tile" in bad_tile.output
    bad_views = runner.invoke(cli.app, ["denoise", str(series_dir), str(tmp_path / "o"), "--model",
                                        str(tiny_model), "--ensemble", "3"])
    assert bad_views.exit_code == 2 and "--ensemble must be one of 1, 2, 4, 8" in bad_views.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = runner.invoke(cli.app, ["denoise", str(empty), str(tmp_path / "o"), "--model", str(tiny_model)])
    assert nothing.exit_code == 3


def test_tiled_matches_whole_slice(tiny_model):
    d = Denoiser.load(tiny_model)
    hu = phantom_hu(160, 160, seed=3) + np.random.default_rng(0).normal(0, 40, (160, 160)).astype(np.float32)
    whole = d(hu)
    d.tile, d.overlap = 64, 0.5
    tiles = d(hu)
    change = np.sqrt(np.mean((whole - hu) ** 2))
    diff = np.sqrt(np.mean((tiles - whole) ** 2))
    assert change > 1.0 and diff < 0.1 * change, (diff, change)
    # A tile covering the whole image is exactly whole-slice inference.
    x = HUWindow().to_model(hu)
    np.testing.assert_allclose(tiled(d.model.predict, x, tile=160, overlap=0.25),
                               d.model.predict(x[None, ..., None])[0, ..., 0], rtol=0, atol=1e-6)


def test_dask_local_cluster_matches_single_process(tmp_path, junk_dir, tiny_model):
    pytest.importorskip("distributed")
    root, expected = junk_dir
    single = runner.invoke(cli.app, ["denoise", str(root), str(tmp_path / "one"), "--model", str(tiny_model)])
    dask = runner.invoke(cli.app, ["denoise", str(root), str(tmp_path / "dask"), "--model", str(tiny_model),
                                   "--dask", "local", "--workers", "2"])
    assert dask.exit_code == single.exit_code == 1, dask.output
    one, two = sorted((tmp_path / "one").rglob("*")), sorted((tmp_path / "dask").rglob("*"))
    assert [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "dask") for p in two]
    for a, b in zip(one, two, strict=True):  # identical results (only InstanceCreationTime may differ)
        if a.is_file():
            da, db = pydicom.dcmread(a), pydicom.dcmread(b)
            assert da.SOPInstanceUID == db.SOPInstanceUID and da.SeriesInstanceUID == db.SeriesInstanceUID
            np.testing.assert_array_equal(da.pixel_array, db.pixel_array)
    summary = single.output.strip().splitlines()[-1].split(" -> ")[0]
    assert summary in dask.output  # same counts; the bad files are reported by the same summary
    for rel, word in expected.items():
        if word:
            assert rel in dask.output, rel
    bad = runner.invoke(cli.app, ["denoise", str(root), str(tmp_path / "x"), "--model", str(tiny_model),
                                  "--dask", "remote"])
    assert bad.exit_code == 2 and "--scheduler" in bad.output


def test_a_task_dying_on_a_dask_worker_is_reported(tmp_path, series_dir, tiny_model, monkeypatch):
    pytest.importorskip("distributed")
    from denoise import batch
    from denoise.denoising import DenoiseJob

    real = batch.process_file

    def dies_on_one(job, transform, *, force):
        if job.source.relpath.name == "IM_0002":
            raise MemoryError("simulated worker failure")
        return real(job, transform, force=force)

    monkeypatch.setattr(batch, "process_file", dies_on_one)
    from distributed import Client, LocalCluster

    # In-process workers so the patched function is the one that runs.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        report = batch.run_batch(series_dir, tmp_path / "out", DenoiseJob(str(tiny_model)),
                                 scheduler=cluster.scheduler_address, workers=2)
    failed = [o for o in report.outcomes if o.status == "failed"]
    assert [o.relpath for o in failed] == ["series1/IM_0002"] and "simulated worker failure" in failed[0].reason
    assert report.count("written") == 3 and report.exit_code == 1


def test_views_are_eight_distinct_and_inverted_exactly():
    a = np.arange(12.0).reshape(3, 4)
    assert len({(v(a).shape, v(a).tobytes()) for v, _ in VIEWS}) == 8
    for view, inverse in VIEWS:
        np.testing.assert_array_equal(inverse(view(a)), a)


def test_self_ensemble_averages_the_views_known_answer():
    # A "denoiser" adding a ramp along the columns: the column flip reverses the ramp, so the mean
    # of 2 views adds its mean (W - 1) / 2 everywhere; a ramp along rows survives 2 views, not 4.
    x = np.zeros((3, 5), np.float32)
    cols = np.arange(5, dtype=np.float32)
    np.testing.assert_allclose(self_ensemble(lambda a: a + np.arange(a.shape[1]), x, 2), x + 2.0)
    np.testing.assert_allclose(self_ensemble(lambda a: a + np.arange(a.shape[1]), x, 1), x + cols)
    rows = lambda a: a + np.arange(a.shape[0])[:, None]  # noqa: E731
    np.testing.assert_allclose(self_ensemble(rows, x, 2), x + np.arange(3.0)[:, None])
    np.testing.assert_allclose(self_ensemble(rows, x, 4), x + 1.0)
    # 8 views: the transposed ones see the row ramp as a column ramp: mean (4 * 1 + 4 * 2) / 8.
    np.testing.assert_allclose(self_ensemble(rows, x, 8), x + 1.5)
    with pytest.raises(ValueError, match="--ensemble"):
        self_ensemble(rows, x, 3)


@pytest.mark.parametrize("threads", [2, 3])
def test_self_ensemble_on_worker_threads_matches_serial(threads):
    # Views dealt round-robin to the workers: the same mean, every view run once, and the first
    # view of each worker waits at a barrier until all `threads` workers hold one (else it times out).
    x = np.random.default_rng(0).random((6, 9)).astype(np.float32)
    original = get_num_threads()
    set_num_threads(threads)
    try:
        for views in (4, 8):
            seen, barrier, first = [], threading.Barrier(threads, timeout=20), threading.local()

            def denoiser(a, wait=True, seen=seen, barrier=barrier, first=first):
                seen.append(threading.get_ident())
                if wait and not getattr(first, "done", False):
                    first.done = True
                    barrier.wait()
                return a * a + np.arange(a.shape[1], dtype=np.float32)

            parallel = self_ensemble(denoiser, x, views, threads=threads)
            assert len(seen) == views and len(set(seen)) == threads
            seen.clear()
            serial = self_ensemble(lambda a, d=denoiser: d(a, wait=False), x, views)
            assert len(seen) == views and set(seen) == {threading.get_ident()}
            np.testing.assert_allclose(parallel, serial, rtol=1e-6)
    finally:
        set_num_threads(original)


def test_denoiser_ensemble_is_the_mean_of_flipped_single_passes(tiny_model):
    hu = phantom_hu(48, 64, seed=5) + np.random.default_rng(1).normal(0, 30, (48, 64)).astype(np.float32)
    one = Denoiser.load(tiny_model, ensemble=1)
    four = Denoiser.load(tiny_model, ensemble=4)
    flips = [one(hu), one(hu[:, ::-1])[:, ::-1], one(hu[::-1])[::-1], one(hu[::-1, ::-1])[::-1, ::-1]]
    np.testing.assert_allclose(four(hu), np.mean(flips, axis=0), rtol=0, atol=1e-3)
    assert np.abs(four(hu) - one(hu)).max() > 0.01  # the tiny model is not flip-equivariant


@pytest.fixture(params=["under a regular file", "read-only folder", "immutable folder"])
def unwritable_output(request, tmp_path):
    """(output path, a word of the expected cause) that no file can be written under."""
    import shutil
    import subprocess

    kind = request.param
    if kind == "under a regular file":  # unwritable for everyone, root included
        (tmp_path / "somefile.txt").write_text("")
        yield tmp_path / "somefile.txt" / "sub", "is a file, not a folder"
        return
    folder = tmp_path / "locked"
    folder.mkdir()
    if kind == "read-only folder":
        folder.chmod(0o555)
        try:
            (folder / "probe").touch()
        except PermissionError:
            yield folder / "out", "permission denied"
        else:  # root (CAP_DAC_OVERRIDE) writes into a read-only folder anyway
            pytest.skip("this user can write into a read-only folder")
        finally:
            folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make an immutable folder here (needs chattr, root and a file system that has it)")
    try:
        yield folder, "operation not permitted"
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_unwritable_output_is_a_usage_error_before_any_file_is_processed(
        series_dir, tiny_model, unwritable_output, monkeypatch):
    import denoise.batch

    out, cause = unwritable_output
    processed = []
    real = denoise.batch.process_file
    monkeypatch.setattr(denoise.batch, "process_file", lambda job, *a, **k: processed.append(job) or real(job, *a, **k))
    for command in (["denoise", "--model", str(tiny_model)], ["noise", "--sigma", "20"]):
        result = runner.invoke(cli.app, [command[0], str(series_dir), str(out), *command[1:]])
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2, result.output
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}: cannot write") and cause in lines[0], lines
        assert processed == []  # failed up front: no file was read, denoised or written


def test_noise_checks_the_clean_output_before_writing_the_noisy_one(tmp_path, series_dir):
    (tmp_path / "somefile.txt").write_text("")
    result = runner.invoke(cli.app, ["noise", str(series_dir), str(tmp_path / "noisy"), "--dose", "1e5",
                                     "--clean-out", str(tmp_path / "somefile.txt" / "clean")])
    assert result.exit_code == 2 and "somefile.txt is a file, not a folder" in result.output, result.output
    assert not (tmp_path / "noisy").exists()


def test_the_write_check_leaves_nothing_behind(tmp_path, tiny_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(cli.app, ["denoise", str(empty), str(tmp_path / "new" / "out"), "--model", str(tiny_model)])
    assert result.exit_code == 3, result.output
    assert not (tmp_path / "new").exists()  # nothing to write: the folders the check made are gone again
