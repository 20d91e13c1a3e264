"""Atomic file output: write to a temporary file beside the target, then
rename over it. A killed process leaves either the old file or the new one,
never half of one."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TEMP_NAME = re.compile(r"\..+\.(\d+)\.tmp")  # ".NAME.PID.tmp" beside the target: what atomic_path writes


def is_temp(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_path`'s temporary names (a write a kill interrupted)."""
    return TEMP_NAME.fullmatch(name) is not None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def finite(data):
    """A strict-JSON copy of ``data``: NumPy scalars become Python numbers and
    non-finite floats (an identical image's infinite PSNR, a NaN) become None,
    so every JSON we write is valid JSON."""
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite(v) for v in data]
    if isinstance(data, np.floating | np.integer):
        return finite(data.item())
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def write_json(path: str | os.PathLike, data) -> None:
    """Write ``data`` as strict JSON (``allow_nan=False``; non-finite numbers as null), atomically."""
    write_text(path, json.dumps(finite(data), indent=2, allow_nan=False) + "\n")
