"""Small text helpers shared by error reporting."""

from __future__ import annotations

import re

# Lines of a Python traceback embedded in a message: the header, the chaining notes
# between tracebacks, and the caret/quote lines around them. The indented frame and
# source lines that follow a header are dropped with it (see _pieces).
_TRACEBACK_HEADER = "Traceback (most recent call last):"
_NOISE = re.compile(r"(The above exception was the direct cause of the following exception:"
                    r"|During handling of the above exception, another exception occurred:"
                    r'|[\^~\s]*|"""|\'\'\')')


def _pieces(text: str) -> list[tuple[str, bool]]:
    """The meaningful lines of a (possibly multi-line) message, whitespace folded,
    each with whether it stands apart from the line before (an indented list item,
    or what is left of an embedded traceback) rather than continuing it. Blank
    lines, traceback blocks (``Traceback ...`` with their more indented ``File ...``,
    source and caret lines) and chaining notes are dropped; the ``SomeError:
    message`` line that ends a traceback is kept, since it names the cause."""
    pieces: list[tuple[str, bool]] = []
    header_indent = None  # the indentation of the traceback being skipped, if any
    apart = False
    for raw in text.splitlines():
        line = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if line.startswith(_TRACEBACK_HEADER):
            header_indent, apart = indent, True
            continue
        if header_indent is not None and (indent > header_indent or not line):
            continue  # a frame ("  File ...", its source line, carets) of the traceback
        header_indent = None
        if _NOISE.fullmatch(line):
            apart = apart or bool(line)
            continue
        pieces.append((" ".join(line.split()), apart or indent > 0))
        apart = False
    return pieces


def one_line(exc: BaseException | str, limit: int = 160) -> str:
    """An exception (or text) as one short line, for per-file error reports.

    Line breaks fold to spaces; a multi-line message that lists things (a
    decoder's indented "plugin: what it said" lines) or embeds a traceback
    keeps its meaningful lines, apart ones joined with "; ", and drops the
    traceback text (only its final "SomeError: message" line stays). When that
    is longer than ``limit``, lines that only introduce a list (ending in ":")
    go first, so the causes listed after them survive the cut to ``limit``
    characters."""
    pieces = _pieces(str(exc))
    if not pieces:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    text = _join(pieces)
    if len(text) > limit and len(pieces) > 1:
        kept = [p for k, p in enumerate(pieces) if not (p[0].endswith(":") and k + 1 < len(pieces))]
        text = _join(kept) if kept else text
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _join(pieces: list[tuple[str, bool]]) -> str:
    out = pieces[0][0]
    for (prev, _), (line, apart) in zip(pieces, pieces[1:], strict=False):
        out += ("; " if apart and not prev.endswith(":") else " ") + line
    return out


def short_uid(uid: str, keep: int = 12) -> str:
    """The tail of a UID, enough to tell series apart in a listing."""
    return uid if len(uid) <= keep + 1 else "…" + uid[-keep:]


def printable(text: str) -> str:
    """Text safe to print: bytes of a file name that were not valid UTF-8 (held
    as lone surrogates by ``os.fsdecode``) become U+FFFD instead of raising
    UnicodeEncodeError in the terminal."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
