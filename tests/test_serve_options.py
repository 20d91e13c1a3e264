"""`ct-denoise serve`'s settings (pipelines.serve.ServeOptions): a validated,
frozen pydantic model; a bad value is a one-line usage error naming the
option (exit 2 from the command line) before anything listens."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cli import app
from denoise.batch import UsageError
from denoise.node.forward import Destination
from pipelines.serve import ServeOptions


def test_defaults_and_forward_destinations_from_text(tmp_path):
    o = ServeOptions(out=tmp_path, forward=["PACS@127.0.0.1:4242", Destination("B", "h", 104)], allow=["SCANNER"])
    assert (o.aet, o.port, o.bind, o.series_timeout_s, o.ensemble, o.keep_days, o.max_pdu) == (
        "CTDENOISE", 11112, "127.0.0.1", 10.0, 2, 7.0, 16382)
    assert o.forward == (Destination("PACS", "127.0.0.1", 4242), Destination("B", "h", 104)) and o.allow == ("SCANNER",)
    assert ServeOptions(out=str(tmp_path), keep_days=math.inf, series_timeout_s=math.inf).out == Path(tmp_path)
    with pytest.raises(ValidationError):  # frozen
        o.port = 1


@pytest.mark.parametrize(("field", "value", "message"), [
    ("series_timeout_s", 0.0, "--series-timeout must be > 0 seconds, got 0.0"),
    ("series_timeout_s", math.nan, "--series-timeout must be > 0 seconds, got nan"),
    ("port", 70000, "--port must be 0..65535, got 70000"),
    ("max_pixels", 0, "--max-pixels must be >= 1, got 0"),
    ("keep_days", -1.0, "--keep-days must be >= 0 (inf: keep forever), got -1.0"),
    ("connect_timeout_s", math.inf, "--connect-timeout must be > 0 seconds, got inf"),
    ("drain_s", 0, "--drain must be > 0 seconds, got 0"),
    ("max_per_peer", 0, "--max-associations and --max-per-peer must be >= 1, got 16 and 0"),
    ("max_pdu", 512, "--max-pdu must be 1024..2147483648 bytes, got 512"),
    ("aet", "A" * 17, "--aet 'AAAAAAAAAAAAAAAAA' is not a valid AE title"),
    ("allow", ["A\\B"], "--allow 'A\\\\B' is not a valid AE title"),
    ("forward", ["nonsense"], "--forward 'nonsense': expected AET@HOST:PORT"),
    ("port", True, "--port: "),  # a boolean is not a number
    ("bogus", 1, "--bogus: unknown option"),
])
def test_bad_values_are_one_line_usage_errors(tmp_path, field, value, message):
    with pytest.raises(UsageError) as caught:
        ServeOptions(out=tmp_path, **{field: value})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_command_refuses_bad_values_before_listening(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--out", str(tmp_path / "n"), "--series-timeout", "0"])
    assert result.exit_code == 2 and "--series-timeout must be > 0 seconds" in result.output
    assert not (tmp_path / "n").exists()  # nothing made
