"""denoise.runs: the run folder's log keeps each job's own columns."""

from __future__ import annotations

import json

import pytest

from denoise.runs import write_log


def test_the_log_has_the_callers_columns_and_refuses_to_drop_one(tmp_path):
    rows = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "seconds": 3.0}]
    write_log(tmp_path, rows, ("epoch", "loss", "seconds"))
    assert (tmp_path / "log.csv").read_text().splitlines() == ["epoch,loss,seconds", "1,0.5,", "2,0.25,3.0"]
    assert json.loads((tmp_path / "log.json").read_text()) == rows
    with pytest.raises(ValueError, match="seconds"):  # what train's write_log did silently to adapt's rows
        write_log(tmp_path, rows, ("epoch", "loss"))
