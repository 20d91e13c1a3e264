"""The results' tables (denoise/tables.py): one declaration of each column,
rendered for the terminal and for the HTML report; and the terminal lines
each command prints (denoise/summaries.py)."""

from __future__ import annotations

import math

from denoise import summaries
from denoise.tables import (
    ACQUISITION,
    CHANGE,
    HTML,
    METRICS,
    QUALITY,
    RESIDUAL,
    SERIES,
    TEXT,
    Column,
    pick,
    qa_table,
    quality_table,
    table,
)


def test_one_declaration_gives_both_headers():
    noise, peak, edge = QUALITY[0], QUALITY[1], QUALITY[3]
    assert (TEXT.head(noise), HTML.head(noise)) == ("noise SD HU", "noise SD (HU)")
    assert (TEXT.head(peak), HTML.head(peak)) == ("NPS peak /mm", "NPS peak (cycles/mm)")
    assert (TEXT.head(edge), HTML.head(edge, paired=True)) == ("edge 10-90 mm", "edge 10-90 % (mm): before → after")
    assert [TEXT.head(c) for c in METRICS] == ["PSNR dB", "SSIM", "RMSE HU", "MSE", "s/slice"]
    keys = [c.key for c in METRICS + QUALITY + CHANGE + RESIDUAL + SERIES + ACQUISITION]
    assert len(keys) == len(set(keys))  # each key declared once


def test_cells_missing_infinite_text_and_functions():
    psnr = METRICS[0]
    assert [TEXT.cell(psnr, v) for v in (31.456, None, math.nan, math.inf, "x")] == ["31.46", "-", "-", "inf", "-"]
    assert [HTML.cell(psnr, v) for v in (None, math.nan)] == ["n/a", "n/a"]
    spacing = next(c for c in SERIES if c.key == "pixel_spacing_mm")
    assert TEXT.cell(spacing, [0.703125, 0.703125]) == "0.703x0.703" and TEXT.cell(spacing, None) == "-"
    assert TEXT.cell(Column("d", "description"), "") == "-" and TEXT.cell(Column("n", "n"), 3) == "3"
    assert TEXT.value({"noise_reduction_pct": 74.4}, "noise_reduction_pct") == "74"


def test_terminal_table_is_aligned_under_a_rule():
    lines = table(TEXT, "file", METRICS[:2], [("a", {"psnr": 30.0, "ssim": 0.9}), ("longer name", {})]).lines()
    assert lines == ["file         PSNR dB    SSIM",
                     "-----------  -------  ------",
                     "a              30.00  0.9000",
                     "longer name        -       -"]
    assert table(TEXT, "series", pick(SERIES, "slices"), [("s", {"slices": 2})]).lines(right=False)[2] == "s       2"


def test_qa_rows_are_the_same_cells_in_both_styles():
    record = {"before": {"noise_sd_hu": 20.04, "mtf50_per_mm": 0.37}, "after": {"noise_sd_hu": 5.2},
              "change": {"noise_reduction_pct": 74.0, "edge_width_change_pct": 69.5}, "residual_sd_hu": 31.9}
    text, html = qa_table(TEXT, "file", [("f", record)], True), qa_table(HTML, "file", [("f", record)], True)
    assert len(text.header) == len(html.header) == 1 + len(QUALITY + CHANGE + RESIDUAL)
    assert text.rows[0][:2] == ["f", "20.0 -> 5.2"] and html.rows[0][:2] == ["f", "20.0 → 5.2"]
    def as_html(cell: str) -> str:  # the terminal's markers for a missing number and before -> after
        return " ".join({"-": "n/a", "->": "→"}.get(word, word) for word in cell.split(" "))

    assert [as_html(c) for c in text.rows[0]] == html.rows[0]
    assert html.html("Per file")["columns"][-4:] == ["noise reduction (%)", "edge width change (%)",
                                                     "residual SD (HU)", "residual structure"]
    alone = qa_table(HTML, (), [((), record)], False)  # no name column: the mean table
    assert alone.header[0] == "noise SD (HU)" and alone.rows == [["20.0", "n/a", "n/a", "n/a", "0.370"]]


def test_evaluation_quality_table_has_measures_then_residual():
    t = quality_table(TEXT, {"model": {"noise_sd_hu": 5.0, "residual_structure": 0.12}})
    assert t.header == ["image", "noise SD HU", "NPS peak /mm", "NPS mean /mm", "edge 10-90 mm", "MTF50 /mm",
                        "resid SD HU", "resid struct"]
    assert t.rows == [["model", "5.0", "-", "-", "-", "-", "-", "0.12"]]


def test_info_lines_and_exit_code():
    row = {"index": 1, "series": "…abc", "series_number": 3, "slices": 2, "size": "32x32",
           "pixel_spacing_mm": [0.7, 0.7], "slice_thickness_mm": 1.0, "slice_spacing_mm": None,
           "transfer_syntax": "ExplicitVRLittleEndian", "description": None, "kernel": "B30f", "kvp": 120.0,
           "exposure_mas": None, "ctdi_vol_mgy": 8.25, "manufacturer": "SIEMENS", "model": None,
           "image_type": "ORIGINAL", "warnings": ["gap"]}
    printout = summaries.info({"series": [row], "skipped": [{"file": "x", "reason": "not DICOM", "bad": False}]})
    assert printout.lines[0].split() == ["#", "series", "no.", "slices", "size", "pixel", "mm", "thick", "mm",
                                         "spacing", "mm", "transfer", "syntax", "description"]
    assert printout.lines[2].split() == ["1", "…abc", "3", "2", "32x32", "0.7x0.7", "1", "-", "ExplicitVRLittleEndian",
                                         "-"]
    assert printout.lines[3] == ""
    assert printout.lines[4].split() == ["#", "kernel", "kVp", "mAs", "CTDIvol", "mGy", "type", "scanner"]
    assert printout.lines[6].split() == ["1", "B30f", "120", "-", "8.25", "ORIGINAL", "SIEMENS"]
    assert printout.lines[7:] == ["warning: series …abc: gap", "skipped x: not DICOM",
                                  "1 series, 2 slices, 1 files skipped"]
    assert printout.code == 0 and printout.alone
    assert summaries.info({"series": [], "skipped": []}).code == 3
