"""Log records as one line each, whatever they quote.

A record's message may quote what a peer or a file sent us (a SOP class, a
file name, a decoder's complaint). A newline or other control character
there would forge or break lines in ``node.log``; the formatter writes every
such character as an escape instead (``\\n``, ``\\x1b``, ``\\u2028``), so one
record is always one line. Tracebacks (``exc_info``, at DEBUG) keep their lines.
"""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators
_ESCAPES = {c: repr(chr(c))[1:-1] for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]}


def escape_controls(text: str) -> str:
    """``text`` with every control or line-breaking character written as an escape."""
    return text.translate(_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """:class:`logging.Formatter` whose message part never spans lines."""

    def __init__(self, fmt: str = LOG_FORMAT, **kwargs):
        super().__init__(fmt, **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)
