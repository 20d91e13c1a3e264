"""The command line as a person meets it (issue 31, point 4): summaries that fit 80
columns, an example in every command's help, metavars without Python types, -v/-q
before or after the command, -q without progress bars, bars with elapsed time and
slices per second, a single file denoised to a .dcm path, and `denoise --json`
recording the model and every setting."""

from __future__ import annotations

import io
import json
import logging

import pydicom
import pytest
import typer
from rich.console import Console
from rich.progress import Progress, TimeElapsedColumn
from typer.testing import CliRunner

import cli
from denoise import terminal

runner = CliRunner()
NARROW = {"COLUMNS": "80", "NO_COLOR": "1"}


def leaf_commands() -> list[tuple[str, ...]]:
    """Every command's path (``("info",)``, ``("manifest", "build")``)."""
    def walk(group, path):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from walk(command, (*path, name))
            else:
                yield (*path, name)
    return list(walk(typer.main.get_command(cli.app), ()))


def help_of(*path: str) -> str:
    result = runner.invoke(cli.app, [*path, "--help"], env=NARROW)
    assert result.exit_code == 0, result.output
    return result.output


def summaries(output: str) -> dict[str, str]:
    """The command list of a group's --help: name -> summary."""
    section = output.split("Commands:", 1)[1]
    return dict(line.strip().split(None, 1) for line in section.splitlines() if line.strip())


def test_every_command_summary_shows_whole_at_80_columns():
    group = typer.main.get_command(cli.app)
    for listing, commands in [(help_of(), group.commands), (help_of("manifest"), group.commands["manifest"].commands)]:
        shown = summaries(listing)
        assert set(shown) == set(commands)
        for name, command in commands.items():
            first = " ".join(command.help.split("\n\n", 1)[0].split())
            assert shown[name] == first and not shown[name].endswith("..."), (name, shown[name])
            assert len(first) <= 60, f"{name}: the summary line is too long for 80 columns: {first!r}"


@pytest.mark.parametrize("path", leaf_commands(), ids=" ".join)
def test_every_command_help_has_an_example_and_no_python_types(path):
    text = help_of(*path)
    examples = text.split("Examples:", 1)[1].splitlines() if "Examples:" in text else []
    assert any(line.strip().startswith(f"ct-denoise {' '.join(path)}") for line in examples), text
    for leaked in ("list[", "Path]", "{", "<float,float>", "tuple["):
        assert leaked not in text, f"{' '.join(path)} --help shows {leaked!r}"
    assert "-v, --verbose" in text and "-q, --quiet" in text


def test_clean_metavars():
    assert "denoise [OPTIONS] INPUT OUTPUT\n" in help_of("denoise")
    assert "manifest build [OPTIONS] FOLDER...\n" in help_of("manifest", "build")
    assert "qa [OPTIONS] BEFORE [AFTER]\n" in help_of("qa")
    assert "--window LOW HIGH" in help_of("evaluate") and "--window LOW HIGH" in help_of("report")
    assert "--roi X,Y,W,H" in help_of("qa") and "--forward AET@HOST:PORT" in help_of("serve")
    assert "--test-from FOLDER" in help_of("manifest", "build")


def test_a_missing_argument_is_named_as_the_help_names_it():
    result = runner.invoke(cli.app, ["denoise"], env=NARROW)
    assert result.exit_code == 2 and "INPUT" in result.output


@pytest.mark.parametrize("args, level", [
    (["info", "{dir}", "-v"], logging.DEBUG), (["info", "{dir}", "--quiet"], logging.WARNING),
    (["-v", "info", "{dir}"], logging.DEBUG), (["-q", "info", "{dir}"], logging.WARNING),
    (["info", "{dir}"], logging.INFO)])
def test_v_and_q_work_before_and_after_the_command(series_dir, args, level):
    result = runner.invoke(cli.app, [a.replace("{dir}", str(series_dir)) for a in args])
    assert result.exit_code == 0, result.output
    assert logging.getLogger("ct_denoise").level == level


def test_q_hides_the_progress_bar_which_otherwise_shows_elapsed_time_and_slices_per_second(
        tmp_path, series_dir, tiny_model_path):
    shown = runner.invoke(cli.app, ["denoise", str(series_dir), str(tmp_path / "a"), "--model", str(tiny_model_path)])
    assert shown.exit_code == 0, shown.output
    assert "4/4" in shown.stderr and "slices/s" in shown.stderr
    for args in (["-q", "denoise"], ["denoise", "-q"]):
        hidden = runner.invoke(cli.app, [*args, str(series_dir), str(tmp_path / args[0]), "--model",
                                         str(tiny_model_path)])
        assert hidden.exit_code == 0, hidden.output
        assert "4/4" not in hidden.stderr and "slices/s" not in hidden.stderr and "━" not in hidden.stderr
        assert "4 written" in hidden.stdout


def test_the_bar_has_elapsed_time_and_slices_per_second():
    now = [100.0]
    console = Console(file=io.StringIO(), width=200, color_system=None)
    columns = terminal.progress_columns("denoise")
    assert any(isinstance(c, TimeElapsedColumn) for c in columns)
    progress = Progress(*columns, console=console, get_time=lambda: now[0], auto_refresh=False)
    task = progress.add_task("denoise", total=10, last="", slices=0)
    now[0] = 104.0
    progress.update(task, advance=2, last="written", slices=20)  # two multi-frame files of 10 slices
    console.print(progress.get_renderable())
    text = console.file.getvalue()
    assert "2/10" in text and "0:00:04" in text and "5 slices/s" in text, text


def test_a_single_file_to_a_dcm_path_writes_that_file(tmp_path, series_dir, tiny_model_path):
    source = series_dir / "series1" / "IM_0001"
    target = tmp_path / "out" / "x.dcm"
    args = ["denoise", str(source), str(target), "--model", str(tiny_model_path), "--json", "-"]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert target.is_file(), "x.dcm must be the file written, not a folder"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.dcm"]  # no temporary file left
    ds, src = pydicom.dcmread(target), pydicom.dcmread(source)
    assert "DERIVED" in ds.ImageType and ds.SeriesInstanceUID != src.SeriesInstanceUID
    report = json.loads(result.stdout)
    assert report["files"][0]["output"] == str(target) and report["counts"]["written"] == 1
    again = runner.invoke(cli.app, args[:-2])
    assert again.exit_code == 0 and "0 written, 1 already done" in again.output
    # the input itself is never the output; a folder input keeps OUTPUT as a folder
    same = runner.invoke(cli.app, ["denoise", str(target), str(target), "--model", str(tiny_model_path)])
    assert same.exit_code == 2 and "overwrite the input" in same.output
    folder = runner.invoke(cli.app, ["denoise", str(series_dir), str(tmp_path / "f.dcm"), "--model",
                                     str(tiny_model_path)])
    assert folder.exit_code == 0 and (tmp_path / "f.dcm" / "series1").is_dir()


def test_denoise_json_records_the_model_and_every_setting(tmp_path, series_dir, tiny_model_path):
    result = runner.invoke(cli.app, ["denoise", str(series_dir), str(tmp_path / "out"), "--model",
                                     str(tiny_model_path), "--ensemble", "1", "--strength", "medium", "--tile",
                                     "16", "--overlap", "0.5", "--json", "-"])
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)["settings"]
    assert settings["model_id"].startswith("tiny@") and settings["model_path"].endswith("tiny.npz")
    assert settings["bundled_model"] is False
    assert (settings["ensemble"], settings["strength"], settings["strength_level"]) == (1, 0.666667, "medium")
    assert (settings["tile"], settings["overlap"], settings["noise_sd_hu"]) == (16, 0.5, None)
    assert (settings["device"], settings["workers"], settings["scheduler"]) == ("cpu", 1, None)
    assert settings["neighbour_slices"] == 0 and settings["files_with_neighbours"] == 0  # a 2-D model
