"""Processes killed with SIGKILL midway: no half-written output, and a rerun
(`denoise` again, `train --resume`) completes the work."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from denoise.atomic import TEMP_NAME
from denoise.dicom.identity import Derivation
from denoise.dicom.scan import scan
from tests.factory import PATIENT_ID, write_config, write_series

ROOT = Path(__file__).resolve().parents[1]
TEMP = TEMP_NAME  # denoise.atomic.atomic_path: ".NAME.PID.tmp" beside the target
N_SLICES, SIZE = 40, 128


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "cli.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (rc {proc.returncode}) before it could be killed:\n"
                        f"{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the process to make progress")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def outputs(folder: Path) -> tuple[list[Path], list[Path]]:
    """(output files, leftover temp files) under ``folder``."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    temps = [p for p in files if TEMP.fullmatch(p.name)]
    return [p for p in files if p not in temps], temps


def assert_complete(path: Path) -> None:
    ds = pydicom.dcmread(path)
    assert ds.pixel_array.shape == (SIZE, SIZE), path
    assert len(ds.PixelData) == SIZE * SIZE * 2 and "DERIVED" in ds.ImageType


def test_killed_denoise_leaves_no_half_file_and_a_rerun_completes(tmp_path, tiny_model_path):
    src, out = tmp_path / "in", tmp_path / "out"
    write_series(src / "series", N_SLICES, rows=SIZE, cols=SIZE)
    proc = start("denoise", str(src), str(out), "--model", str(tiny_model_path))
    kill_when(proc, lambda: out.is_dir() and len(outputs(out)[0]) >= 2)

    done, temps = outputs(out)
    assert 2 <= len(done) < N_SLICES, "the kill should land midway"
    for path in done:  # every file that exists under its final name is complete
        assert_complete(path)
    for tmp in temps:  # at most the one file being written, named as atomic_path names it
        assert int(TEMP.fullmatch(tmp.name).group(1)) == proc.pid
    assert len(temps) <= 1
    found = scan(out)  # a leftover temp file is not taken for an image (nor reported as a bad one)
    assert sorted(f.path for f in found.files) == [p.resolve() for p in done] and found.skipped == []

    rerun = subprocess.run([sys.executable, "cli.py", "denoise", str(src), str(out), "--model",
                            str(tiny_model_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "Traceback" not in rerun.stdout + rerun.stderr and PATIENT_ID not in rerun.stdout
    counts = re.search(r"(\d+) written, (\d+) already done, 0 failed", rerun.stdout)
    assert counts, rerun.stdout
    assert int(counts.group(2)) == len(done) > 0 and int(counts.group(1)) == N_SLICES - len(done)
    final, _ = outputs(out)
    assert [p.relative_to(out) for p in final] == [p.relative_to(src) for p in sorted((src / "series").iterdir())]
    for path in final:
        assert_complete(path)
    assert len({pydicom.dcmread(p).SeriesInstanceUID for p in final}) == 1  # one series across both runs
    assert len(scan(out).files) == N_SLICES


def test_temp_files_of_a_killed_write_are_not_taken_for_images(tmp_path, tiny_model_path):
    """Deterministic version of the leftovers a kill can leave: a partial and a
    complete-but-not-renamed temp file beside the outputs."""
    from typer.testing import CliRunner

    import cli

    src, out = tmp_path / "in", tmp_path / "out"
    write_series(src, 3, rows=SIZE, cols=SIZE)
    first = CliRunner().invoke(cli.app, ["denoise", str(src), str(out), "--model", str(tiny_model_path)])
    assert first.exit_code == 0, first.output
    whole = (out / "IM_0002").read_bytes()
    (out / "IM_0002").unlink()
    (out / ".IM_0001.4242.tmp").write_bytes(whole[: len(whole) // 2])  # killed while writing
    (out / ".IM_0002.4243.tmp").write_bytes(whole)  # killed between the write and the rename
    found = scan(out)
    assert sorted(f.relpath.name for f in found.files) == ["IM_0000", "IM_0001"] and found.skipped == []
    again = CliRunner().invoke(cli.app, ["denoise", str(src), str(out), "--model", str(tiny_model_path)])
    assert again.exit_code == 0 and "1 written, 2 already done, 0 failed" in again.output, again.output
    assert len(scan(out).files) == 3
    info = CliRunner().invoke(cli.app, ["info", str(out)])
    assert "0 files skipped" in info.output and ".tmp" not in info.output


def test_killed_training_resumes_from_its_checkpoint(tmp_path, tiny_manifest):
    from denoise.nn import load_model

    epochs = 6
    config = write_config(tmp_path, tiny_manifest, epochs=epochs)
    run = tmp_path / "run"
    last = run / "checkpoints" / "last"

    def first_epoch_on_disk() -> bool:
        # The checkpoint and the log row of its epoch.
        try:
            return last.with_suffix(".json").is_file() and len(json.loads((run / "log.json").read_text())) >= 1
        except (OSError, ValueError):
            return False

    proc = start("train", "--config", str(config), "--out", str(run), "--quiet")
    kill_when(proc, first_epoch_on_disk, timeout=240)

    model, meta, opt_state = load_model(last)
    assert 1 <= meta["epoch"] < epochs and opt_state is not None and model.parameters()
    if (run / "checkpoints" / "best.npz").exists():
        load_model(run / "checkpoints" / "best")

    resumed = subprocess.run([sys.executable, "cli.py", "train", "--config", str(config), "--out", str(run),
                              "--resume", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stdout + resumed.stderr
    log = json.loads((run / "log.json").read_text())
    assert [row["epoch"] for row in log] == list(range(1, epochs + 1))
    _, meta, _ = load_model(last)
    assert meta["epoch"] == epochs


def test_resume_after_a_kill_between_checkpoint_and_log(tmp_path, tiny_manifest):
    """Deterministic stand-in for a SIGKILL landing after `checkpoints/last` of
    epoch 2 was saved but before `log.json` got epoch 2's row."""
    from pipelines import train

    run = tmp_path / "run"
    train.run(write_config(tmp_path, tiny_manifest, epochs=2), run, show_progress=False)
    log = json.loads((run / "log.json").read_text())
    (run / "log.json").write_text(json.dumps(log[:1]))  # what the disk holds at that moment
    train.run(None, run, overrides={"training.epochs": 3}, resume=True, show_progress=False)
    assert [row["epoch"] for row in json.loads((run / "log.json").read_text())] == [1, 2, 3]



@dataclass(frozen=True)
class DyingFactory:
    """A transform whose worker process dies (as if SIGKILLed or OOM-killed) on one file."""

    victim: str = ""

    def build(self):
        return DyingTransform(self.victim)


@dataclass
class DyingTransform:
    victim: str
    derivation = Derivation(key="identity-or-die", description="identity (fault test)", series_suffix="same")

    def __call__(self, hu, source):
        if source.relpath.name == self.victim:
            os._exit(137)
        return hu


def test_a_worker_process_dying_fails_its_files_not_the_batch(tmp_path):
    from denoise.batch import run_batch

    src, out = tmp_path / "in", tmp_path / "out"
    write_series(src, 6)
    report = run_batch(src, out, DyingFactory("IM_0002"), workers=2)
    assert sorted(o.relpath for o in report.outcomes) == [f"IM_{k:04d}" for k in range(6)]
    failed = {o.relpath: o.reason for o in report.outcomes if o.status == "failed"}
    assert "IM_0002" in failed and all("worker process died" in r for r in failed.values())
    assert report.exit_code == 1
    for o in report.outcomes:  # exact accounting: written means on disk, failed means not
        assert (out / o.relpath).is_file() == (o.status == "written"), o
    again = run_batch(src, out, DyingFactory(), workers=1)  # the same operation, nobody dies: resumes
    assert again.exit_code == 0 and again.count("written") + again.count("exists") == 6
    assert again.count("written") == len(failed)  # exactly the files reported failed
