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
from denoise.report.panels import DISPLAY_WIDTH
from denoise.text import printable

MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
        ".webp": "image/webp"}

STYLE = f"""
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: {DISPLAY_WIDTH}px; padding: 0 1em;
       color: #222; background: #fff; font-size: 16px; }}
h1 {{ margin-bottom: 0.2em; }}
.subtitle {{ color: #555; margin-top: 0; }}
.notice {{ border-left: 4px solid #c60; background: #fff6ec; padding: 0.4em 0.8em; }}
section {{ margin: 2em 0; }}
.reading {{ display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }}
.reading > .table {{ flex: 0 1 auto; min-width: 0; max-width: 100%; overflow-x: auto; }}
.how {{ flex: 1 1 16em; max-width: 30em; margin: 1em 0; padding: 0.4em 0.8em; background: #f5f6f8;
        border-left: 3px solid #9ab; font-size: 0.92em; color: #333; }}
.how p {{ margin: 0.3em 0; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.94em; }}
caption {{ font-weight: bold; text-align: left; padding-bottom: 0.3em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }}
th {{ background: #f3f3f3; }}
td.best {{ font-weight: bold; background: #e4f4e4; }}
figure {{ display: block; margin: 1em 0; }}
figure img {{ max-width: 100%; height: auto; }}
figcaption {{ color: #444; font-size: 0.92em; margin-top: 0.3em; }}
footer {{ color: #555; font-size: 0.9em; margin-top: 3em; border-top: 1px solid #ddd; padding-top: 0.5em; }}
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
    if table.get("how"):
        out = ['<div class="reading">', '<div class="table">', *out, "</div>",
               '<aside class="how"><p><strong>How to read this</strong></p>',
               *_text(table["how"]), "</aside>", "</div>"]
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
    subtitle?, notice? (a highlighted line under the title), footer?,
    sections: [{heading, text?, tables?: [{caption?, columns, rows,
    highlight_best?: {column, max}, how?}], images?: [{path, caption?}]}].
    A table's ``how`` (how to read it) is set beside it. Text splits into
    paragraphs on blank lines. Missing images raise ValueError naming the
    path."""
    title = report.get("title", "report")
    body = [f"<h1>{_esc(title)}</h1>"]
    if report.get("subtitle"):
        body.append(f'<p class="subtitle">{_esc(report["subtitle"])}</p>')
    if report.get("notice"):
        body.append(f'<p class="notice">{_esc(report["notice"])}</p>')
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
        body.extend(["<footer>", *_text(report["footer"]), "</footer>"])
    page = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>", *body,
            "</body>", "</html>"]
    write_text(path, "\n".join(page) + "\n")
