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
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from pydicom import config

from denoise.text import one_line

log = logging.getLogger("ct_denoise.dicom")
_lock = threading.Lock()
_depth = 0  # lenient sections open now, in any thread
_saved = None  # pydicom's own setting, restored when the last one closes


@contextmanager
def lenient(what: object = "") -> Iterator[None]:
    """Read (or copy) DICOM with value validation off; log pydicom's warnings
    as ``WHAT: pydicom: MESSAGE`` at DEBUG level."""
    global _depth, _saved
    with _lock:  # counted, so that sections overlapping in threads restore pydicom's setting exactly
        if _depth == 0:
            _saved = config.settings.reading_validation_mode
            config.settings.reading_validation_mode = config.IGNORE
        _depth += 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for w in caught:
                    log.debug("%s: pydicom: %s", getattr(what, "name", what) or "DICOM", one_line(str(w.message)))
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                config.settings.reading_validation_mode = _saved


def leniently(func):
    """Decorator: run ``func`` inside :func:`lenient`, naming its first argument."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with lenient(args[0] if args else ""):
            return func(*args, **kwargs)

    return wrapper
