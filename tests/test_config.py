"""Run configs validated by pydantic (issue 20): each bug a review reproduced
on the hand-written validator fails here on that code."""

from __future__ import annotations

import tomllib

import pytest
from typer.testing import CliRunner

import cli
from denoise.config import ConfigError, RunConfig, config_from_dict, load_config, to_toml

runner = CliRunner()


@pytest.mark.parametrize("text, message", [
    ('[noise]\ngaussian_sigma_hu = ["a", 1]\n', "noise.gaussian_sigma_hu[0]: must be a number, got 'a'"),
    ("[noise]\ngaussian_sigma_hu = [true, 2]\n", "noise.gaussian_sigma_hu[0]: must be a number, got True"),
    ("[validation]\nsigma_hu = inf\n", "validation.sigma_hu: must be a finite number"),
    ("[validation]\nsigma_hu = nan\n", "validation.sigma_hu: must be a finite number"),
    ("[patches]\nsize = true\n", "patches.size: must be an integer, got True"),
    ("[patches]\nsize = 64.0\n", "patches.size: must be an integer"),
    ("[patches]\naugment = 1\n", "patches.augment: must be true or false, got 1"),
    ("[training]\nepoch = 3\n", "training.epoch: unknown key"),
    ("[nonsense]\n", "nonsense: unknown key"),
    ("name = 3\n", "name: must be a string, got 3"),
    ("[optimizer]\nkind = 'adamw'\n", "optimizer.kind"),
    ("noise = 3\n", "noise: must be a table"),
    ("[patches]\nsize = 4\n", "patches.size"),
    ("[optimizer]\nlr = 'fast'\n", "optimizer.lr: must be a number"),
    ("[noise]\ngaussian_sigma_hu = [50, 5]\n", "noise.gaussian_sigma_hu"),
    ("not toml = = 1", "invalid TOML"),
    ("[patches]\nhard_edge_fraction = 1.5\n", "patches.hard_edge_fraction"),
    ("[patches]\nhard_edge_hu = [0, -1000]\n", "patches.hard_edge_hu"),
    ("[noise]\nlow_dose_filters = ['ramp', 'butterworth']\n", "noise.low_dose_filters"),
    ("[noise]\ntextured_fraction = 2\n", "noise.textured_fraction"),
    ("[noise]\nknown_level_fraction = -0.5\n", "noise.known_level_fraction"),
])
def test_each_config_error_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_config_exits_2_with_the_key_and_no_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[noise]\ngaussian_sigma_hu = ["a", 1]\n')
    result = runner.invoke(cli.app, ["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "noise.gaussian_sigma_hu[0]" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_any_name_round_trips_through_the_saved_toml():
    name = 'two\nlines "quoted" \\ back\tslash \u00e9'
    cfg = config_from_dict({"name": name, "noise": {"low_dose_filters": ["ramp"]}})
    text = to_toml(cfg.to_dict())
    assert config_from_dict(tomllib.loads(text)) == cfg


def test_defaults_are_valid_and_frozen():
    cfg = RunConfig()
    assert cfg.noise.gaussian_sigma_hu == (5.0, 120.0)
    with pytest.raises(Exception):  # noqa: B017  (pydantic's frozen-instance error)
        cfg.noise.low_dose_fraction = 0.5


def test_an_unexpected_exception_is_one_line_and_exit_70(monkeypatch, capsys, tmp_path):
    from denoise import cli as package_cli
    from pipelines import info

    def broken(path):
        raise RuntimeError("simulated bug\nwith a second line")

    monkeypatch.setattr(info, "run", broken)
    monkeypatch.setattr("sys.argv", ["ct-denoise", "info", str(tmp_path)])
    with pytest.raises(SystemExit) as code:
        package_cli.run()
    assert code.value.code == 70
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "internal error" in lines[0]
    assert "RuntimeError: simulated bug with a second line" in lines[0]


def test_python_m_and_version_and_help_markup():
    import subprocess
    import sys

    from denoise import __version__

    found = subprocess.run([sys.executable, "-m", "denoise", "--version"], capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout.startswith(f"ct-denoise {__version__} ")
    result = runner.invoke(cli.app, ["denoise", "--help"])
    assert ".[dask]" in result.output  # not swallowed as Rich markup


def test_bundled_configs_by_name_and_manifests_beside_the_config(tmp_path, tiny_manifest, monkeypatch):
    from pipelines import train
    from tests.factory import write_config

    assert train.config_file("default_ct") == train.bundled_configs()["default_ct"]
    with pytest.raises(ConfigError, match="bundled: .*default_ct"):
        train.config_file("no_such_config")
    # a config beside its manifest names it relative to itself; run from an unrelated working folder
    config = tiny_manifest.parent / "beside.toml"
    config.write_text(write_config(tmp_path, tiny_manifest, epochs=1).read_text()
                      .replace(tiny_manifest.as_posix(), tiny_manifest.name))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, ["train", "--config", str(config), "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 0, result.output
    saved = load_config(tmp_path / "r" / "config.toml")  # saved with its full path: resume finds it anywhere
    assert saved.data.manifests == (str(tiny_manifest.resolve()),)
    config.write_text(config.read_text().replace(tiny_manifest.name, "nowhere.json"))
    missing = runner.invoke(cli.app, ["train", "--config", str(config), "--out", str(tmp_path / "r2")])
    assert missing.exit_code == 2 and "manifest nowhere.json not found" in missing.output
