"""Issue 20's remaining checks: scoped pydicom settings, logging, licences,
CLI conventions."""

from __future__ import annotations

import logging
from importlib.metadata import requires

from pydicom import config as pydicom_config
from typer.testing import CliRunner

import cli
from tests.factory import ct_dataset, phantom_hu, save

runner = CliRunner()


def test_importing_the_package_leaves_pydicoms_validation_mode_alone():
    import subprocess
    import sys

    code = ("import pydicom.config as c; before = c.settings.reading_validation_mode; "
            "import denoise.dicom, denoise.cli, pipelines.serve; "
            "assert c.settings.reading_validation_mode == before, c.settings.reading_validation_mode")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_reads_are_lenient_inside_and_pydicom_warnings_become_log_records(tmp_path, caplog):
    from denoise.dicom import load_ct
    from denoise.dicom.reading import lenient

    ds = ct_dataset(phantom_hu(16, 16))
    with lenient("test data"):
        ds.add_new(0x00080070, "LO", "x" * 80)  # Manufacturer longer than LO allows: pydicom would warn
        path = save(ds, tmp_path / "long.dcm")
    before = pydicom_config.settings.reading_validation_mode
    with caplog.at_level(logging.DEBUG, logger="ct_denoise"):
        with lenient(path):
            assert pydicom_config.settings.reading_validation_mode == pydicom_config.IGNORE
            import warnings

            warnings.warn("a pydicom complaint", UserWarning, stacklevel=1)
        load_ct(path)
    assert pydicom_config.settings.reading_validation_mode == before
    assert any("long.dcm: pydicom: a pydicom complaint" in r.getMessage() for r in caplog.records)


def test_verbose_and_quiet_set_the_log_level(tmp_path):
    from tests.factory import write_series

    write_series(tmp_path / "in", 1)
    runner.invoke(cli.app, ["-v", "info", str(tmp_path / "in")])
    assert logging.getLogger("ct_denoise").level == logging.DEBUG
    runner.invoke(cli.app, ["-q", "info", str(tmp_path / "in")])
    assert logging.getLogger("ct_denoise").level == logging.WARNING
    runner.invoke(cli.app, ["info", str(tmp_path / "in")])
    assert logging.getLogger("ct_denoise").level == logging.INFO


def test_no_gpl_decoder_is_required_and_jpeg_lossless_still_decodes(shared_ct):
    required = " ".join(requires("ct-denoise") or [])
    assert "pylibjpeg-libjpeg" not in required and "python-gdcm" in required
    from denoise.dicom import load_ct, scan

    series = max(scan(shared_ct / "ricord-chest").series, key=lambda s: len(s.files))
    assert series.transfer_syntaxes == ["JPEGLosslessSV1"]
    image = load_ct(series.files[0].path)
    assert image.hu.shape == (1, 512, 512) and -1100 < float(image.hu.mean()) < 500


def test_choices_and_bounds_are_in_help_and_are_usage_errors():
    help_text = runner.invoke(cli.app, ["evaluate", "--help"]).output
    assert "path|sop|position" in help_text
    bad = runner.invoke(cli.app, ["evaluate", "a", "b", "--match", "nearest"])
    assert bad.exit_code == 2 and "'nearest' is not one of" in bad.output
    bad = runner.invoke(cli.app, ["denoise", "a", "b", "--workers", "0"])
    assert bad.exit_code == 2 and "--workers" in bad.output


def test_shell_completion_is_offered():
    result = runner.invoke(cli.app, ["--help"])
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_lenient_sections_overlapping_in_threads_restore_pydicoms_setting():
    import threading

    from denoise.dicom.reading import lenient

    before = pydicom_config.settings.reading_validation_mode
    entered, release = threading.Event(), threading.Event()

    def other():
        with lenient("thread"):
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=other)
    with lenient("main"):  # A enters, B enters, A leaves, B leaves: the interleaving that leaked
        worker.start()
        entered.wait(10)
    assert pydicom_config.settings.reading_validation_mode == pydicom_config.IGNORE  # B still inside
    release.set()
    worker.join()
    assert pydicom_config.settings.reading_validation_mode == before


def test_lenient_sections_in_threads_keep_each_threads_warnings_and_the_filters(caplog):
    """catch_warnings in overlapping threads (issue 28): the section left first restored the
    filters under the other, whose warnings then escaped its log records."""
    import threading
    import warnings

    from denoise.dicom.reading import lenient

    filters, show = warnings.filters[:], warnings.showwarning
    entered, left = threading.Event(), threading.Event()

    def other():
        with lenient("thread-b"):
            entered.set()
            left.wait(10)  # the main thread's section has closed
            warnings.warn("b's complaint", UserWarning, stacklevel=1)

    worker = threading.Thread(target=other)
    with caplog.at_level(logging.DEBUG, logger="ct_denoise"):
        with lenient("thread-a"):
            worker.start()
            entered.wait(10)
            warnings.warn("a's complaint", UserWarning, stacklevel=1)
        left.set()
        worker.join(10)
    messages = [r.getMessage() for r in caplog.records]
    assert "thread-a: pydicom: a's complaint" in messages and "thread-b: pydicom: b's complaint" in messages
    assert warnings.filters == filters and warnings.showwarning is show
