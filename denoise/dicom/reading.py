"""pydicom's value validation, scoped to our own reads and writes.

Scanner files often carry slightly non-conformant values (hash-like UIDs, long
strings). We never rely on pydicom's per-value validation and must copy such
values unchanged into derived objects, so inside :func:`lenient` it is off;
pydicom's global setting is restored on the way out, so an application that
imports this package keeps its own. The warnings pydicom still issues there
become DEBUG log records naming the file (``ct-denoise -v`` shows them)
instead of being printed or thrown away.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from pydicom import config

from denoise.text import one_line

log = logging.getLogger("ct_denoise.dicom")


@contextmanager
def lenient(what: object = "") -> Iterator[None]:
    """Read (or copy) DICOM with value validation off; log pydicom's warnings
    as ``WHAT: pydicom: MESSAGE`` at DEBUG level."""
    settings = config.settings
    before = settings.reading_validation_mode
    settings.reading_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for w in caught:
                    log.debug("%s: pydicom: %s", getattr(what, "name", what) or "DICOM", one_line(str(w.message)))
    finally:
        settings.reading_validation_mode = before


def leniently(func):
    """Decorator: run ``func`` inside :func:`lenient`, naming its first argument."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with lenient(args[0] if args else ""):
            return func(*args, **kwargs)

    return wrapper
