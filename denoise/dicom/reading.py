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
_saved = None  # pydicom's setting and the warnings machinery as they were, restored when the last one closes
_local = threading.local()  # this thread's open sections: lists that collect its warnings


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` while a section is open: to the calling thread's
    innermost section, or as before for threads outside any."""
    sinks = getattr(_local, "sinks", None)
    if sinks:
        sinks[-1].append(message)
    else:
        _saved[1](message, category, filename, lineno, file, line)


@contextmanager
def lenient(what: object = "") -> Iterator[None]:
    """Read (or copy) DICOM with value validation off; log pydicom's warnings
    as ``WHAT: pydicom: MESSAGE`` at DEBUG level.

    Safe in threads: ``warnings.catch_warnings`` is not (each section would
    save and restore the process's filters, and sections overlapping in
    threads restore them out of order and lose each other's warnings), so the
    warnings machinery is switched once, while any section is open, and each
    warning goes to the section of the thread that raised it."""
    global _depth, _saved
    with _lock:  # counted, so that sections overlapping in threads restore the settings exactly
        if _depth == 0:
            _saved = (config.settings.reading_validation_mode, warnings.showwarning, warnings.filters[:])
            config.settings.reading_validation_mode = config.IGNORE
            warnings.showwarning = _show
            warnings.simplefilter("always")  # every warning, repeats included, reaches _show
        _depth += 1
    caught: list = []
    sinks = _local.__dict__.setdefault("sinks", [])
    sinks.append(caught)
    try:
        yield
    finally:
        sinks.pop()
        for message in caught:
            log.debug("%s: pydicom: %s", getattr(what, "name", what) or "DICOM", one_line(str(message)))
        with _lock:
            _depth -= 1
            if _depth == 0:
                config.settings.reading_validation_mode, warnings.showwarning, warnings.filters[:] = _saved
                getattr(warnings, "_filters_mutated", lambda: None)()  # the "once" registries see them


def leniently(func):
    """Decorator: run ``func`` inside :func:`lenient`, naming its first argument."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with lenient(args[0] if args else ""):
            return func(*args, **kwargs)

    return wrapper
