"""Shared fixtures: synthetic DICOM folders, pydicom's sample CT, and the
real CT series in ../shared/data/ct (tests that need it skip without it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `import cli` and `tests.factory` from a checkout
SHARED_CT = Path(os.environ.get("CT_DENOISE_SHARED", ROOT.parent / "shared")) / "data" / "ct"


@pytest.fixture(scope="session")
def shared_ct() -> Path:
    """The real CT folder; skips the test when it is not on this machine."""
    if not SHARED_CT.is_dir():
        pytest.skip(f"real CT data not found at {SHARED_CT}")
    return SHARED_CT


@pytest.fixture
def series_dir(tmp_path) -> Path:
    """A folder with one synthetic 4-slice CT series."""
    from tests.factory import write_series

    write_series(tmp_path / "in" / "series1", 4)
    return tmp_path / "in"


@pytest.fixture
def junk_dir(tmp_path):
    """(folder, {relpath: expected reason word}) of good and bad files."""
    from tests.factory import junk_folder

    root = tmp_path / "junk"
    return root, junk_folder(root)


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory):
    """A manifest of 4 synthetic patients (3 slices of 40x40 each)."""
    import pydicom

    from denoise.manifest import build_manifest, save_manifest
    from tests.factory import PATIENT_ID, write_series

    root = tmp_path_factory.mktemp("train")
    for p in range(4):
        for path in write_series(root / "data" / f"p{p}", 3, rows=40, cols=40):
            ds = pydicom.dcmread(path)
            ds.PatientID = f"{PATIENT_ID}-{p}"
            ds.save_as(path)
    out = root / "data_manifests" / "tiny.json"
    save_manifest(build_manifest([root / "data"], out, val=0.25, test=0.25, seed=0), out)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_manifest):
    """A finished 1-epoch training run folder of a tiny model."""
    from pipelines import train
    from tests.factory import write_config

    root = tmp_path_factory.mktemp("tinyrun")
    train.run(write_config(root, tiny_manifest, epochs=1), root / "run", show_progress=False)
    return root / "run"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A randomly initialised tiny model file (weights + JSON with normalization)."""
    import numpy as np

    from denoise.nn import ConvAutoencoder, save_model
    from denoise.normalize import HUWindow

    path = tmp_path_factory.mktemp("model") / "tiny"
    model = ConvAutoencoder({"channels": [4, 8]}, np.random.default_rng(0))
    save_model(path, model, metadata={"normalization": HUWindow().to_dict(), "name": "tiny"})
    return path
