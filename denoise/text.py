"""Small text helpers shared by error reporting."""

from __future__ import annotations


def one_line(exc: BaseException | str, limit: int = 160) -> str:
    """An exception (or text) as one short line, for per-file error reports."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str) -> str:
    """Text safe to print: bytes of a file name that were not valid UTF-8 (held
    as lone surrogates by ``os.fsdecode``) become U+FFFD instead of raising
    UnicodeEncodeError in the terminal."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
