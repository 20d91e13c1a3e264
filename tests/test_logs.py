"""denoise.logs: a log record is one line, whatever its message quotes (issue 28, log injection)."""

from __future__ import annotations

import logging

from denoise.logs import OneLineFormatter, escape_controls


def test_a_record_quoting_control_characters_stays_one_line():
    record = logging.LogRecord("ct_denoise.serve", logging.WARNING, __file__, 1,
                               "refused: SOP class %r then %s", ("1.2\nforged", "a\rb\x1b[31m\u2028c\x85"), None)
    line = OneLineFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.endswith("refused: SOP class '1.2\\nforged' then a\\rb\\x1b[31m\\u2028c\\x85")
    assert escape_controls("plain ASCII, tabs\tand é") == "plain ASCII, tabs\\tand é"


def test_tracebacks_keep_their_lines():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed\nhere", None, sys.exc_info())
    text = OneLineFormatter().format(record)
    first, *rest = text.splitlines()
    assert first.endswith("failed\\nhere") and rest[0] == "Traceback (most recent call last):"
