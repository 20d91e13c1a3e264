"""Self-contained HTML report: every image embedded as a base64 data URI,
no links or external resources, every caller string HTML-escaped."""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from denoise.atomic import write_text
from denoise.text import printable

MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
        ".webp": "image/webp"}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em;
       color: #222; background: #fff; }
h1 { margin-bottom: 0.2em; }
.subtitle { color: #666; margin-top: 0; }
section { margin: 2em 0; }
table { border-collapse: collapse; margin: 1em 0; }
caption { font-weight: bold; text-align: left; padding-bottom: 0.3em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: left; }
th { background: #f3f3f3; }
td.best { font-weight: bold; background: #e4f4e4; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; image-rendering: pixelated; }
figcaption { color: #555; font-size: 0.9em; }
footer { color: #888; font-size: 0.85em; margin-top: 3em; }
"""


def _esc(value) -> str:
    return html.escape("" if value is None else printable(str(value)), quote=True)  # printable: odd file names


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else format(value, ".4g")
    return "" if value is None else str(value)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _text(text: str) -> list[str]:
    """Paragraphs split on blank lines; single newlines become line breaks."""
    paragraphs = [p.strip() for p in str(text).replace("\r\n", "\n").split("\n\n")]
    return [f"<p>{'<br>'.join(_esc(line) for line in p.splitlines())}</p>" for p in paragraphs if p]


def _table(table: Mapping) -> list[str]:
    columns = [str(c) for c in table.get("columns", [])]
    rows = [[_cell(v) for v in row] for row in table.get("rows", [])]
    best: set[tuple[int, int]] = set()
    rule = table.get("highlight_best")
    if rule:
        if rule["column"] not in columns:
            raise ValueError(f"highlight_best column {rule['column']!r} is not among {columns}")
        col = columns.index(rule["column"])
        values = {i: _number(row[col]) for i, row in enumerate(rows) if col < len(row)}
        found = [v for v in values.values() if v is not None]
        if found:
            target = max(found) if rule.get("max", True) else min(found)
            best = {(i, col) for i, v in values.items() if v == target}
    out = ["<table>"]
    if table.get("caption"):
        out.append(f"<caption>{_esc(table['caption'])}</caption>")
    if columns:
        out.append("<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr></thead>")
    out.append("<tbody>")
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="best">{_esc(v)}</td>' if (i, j) in best else f"<td>{_esc(v)}</td>"
                        for j, v in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return out


def _image(image: Mapping) -> list[str]:
    path = Path(image["path"])
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"report image {path} is not one of {sorted(MIME)}")
    if not path.is_file():
        raise ValueError(f"report image not found: {path}")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = image.get("caption", "")
    out = ["<figure>", f'<img src="data:{mime};base64,{data}" alt="{_esc(caption)}">']
    if caption:
        out.append(f"<figcaption>{_esc(caption)}</figcaption>")
    out.append("</figure>")
    return out


def render_html(report: Mapping, path: str | os.PathLike) -> None:
    """Write ``report`` as one HTML file, atomically. Structure: title,
    subtitle?, footer?, sections: [{heading, text?, tables?: [{caption?,
    columns, rows, highlight_best?: {column, max}}], images?: [{path,
    caption?}]}]. Missing images raise ValueError naming the path."""
    title = report.get("title", "report")
    body = [f"<h1>{_esc(title)}</h1>"]
    if report.get("subtitle"):
        body.append(f'<p class="subtitle">{_esc(report["subtitle"])}</p>')
    sections: Sequence[Mapping] = report.get("sections", [])
    for section in sections:
        body.append("<section>")
        if section.get("heading"):
            body.append(f"<h2>{_esc(section['heading'])}</h2>")
        if section.get("text"):
            body.extend(_text(section["text"]))
        for table in section.get("tables", []):
            body.extend(_table(table))
        for image in section.get("images", []):
            body.extend(_image(image))
        body.append("</section>")
    if report.get("footer"):
        body.append(f"<footer>{_esc(report['footer'])}</footer>")
    page = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>", *body,
            "</body>", "</html>"]
    write_text(path, "\n".join(page) + "\n")
