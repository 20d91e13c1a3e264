"""Report renderers: arrays in, files out, nothing added that the caller did
not pass."""

from __future__ import annotations

import re

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from denoise.report import (
    ProgressFrame,
    panel,
    pick_zoom_box,
    progress_gif,
    render_html,
    save_png,
    scroll_gif,
    to_display,
    training_curves,
)

WINDOW = (-1000.0, 1000.0)
SECRET = "DOE^JANE_1234567"  # stands in for patient data the caller must never pass


def slice_hu(n: int = 96, seed: int = 0) -> np.ndarray:
    """Padding, a water body with a bony, detailed quadrant, Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    img = np.where(np.hypot(yy, xx) < 0.45 * n, 0.0, -3024.0)
    detail = (yy > 5) & (xx > 5) & (np.hypot(yy, xx) < 0.4 * n)
    img[detail] = np.where((np.add.outer(np.arange(n), np.arange(n)) // 4 % 2 == 0), 800.0, -200.0)[detail]
    return (img + rng.normal(0, 20, img.shape)).astype(np.float32)


def png_chunks(path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, types = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        types.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return types


def gif_extensions(path) -> list[bytes]:
    """Labels of the GIF extension blocks (0xF9 graphic control, 0xFE comment,
    0xFF application, 0x01 plain text)."""
    data, labels = path.read_bytes(), []
    assert data[:6] == b"GIF89a"
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < len(data) and data[pos] != 0x3B:
        if data[pos] == 0x21:  # extension
            labels.append(data[pos + 1:pos + 2])
            pos += 2
        else:  # image descriptor, optional local colour table, LZW minimum code size
            flags = data[pos + 9]
            pos += 10 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        while data[pos] != 0:  # data sub-blocks
            pos += data[pos] + 1
        pos += 1
    return labels


def test_to_display_known_values():
    hu = np.array([[-2000.0, -1000.0, -500.0], [500.0, 1000.0, 3000.0]])
    np.testing.assert_array_equal(to_display(hu, window=WINDOW), [[0, 0, 64], [191, 255, 255]])
    soft = to_display(np.array([-200.0, -60.0, 240.0]), window=(-160, 240))
    assert soft.dtype == np.uint8 and soft.tolist() == [0, 64, 255]


def test_to_display_rejects_an_empty_window():
    with pytest.raises(ValueError, match="low < high"):
        to_display(np.zeros((2, 2)), window=(100, 100))


def test_panel_shape_dtype_and_zoom_marks():
    a, b = slice_hu(), slice_hu(seed=1)
    plain = panel([("noisy", a), ("denoised", b)], window=WINDOW)
    box = (50, 50, 20, 20)
    zoomed = panel([("noisy", a), ("denoised", b)], window=WINDOW, zoom_box=box, header="PSNR 30.00 dB")
    assert plain.dtype == np.uint8 and plain.ndim == 3 and plain.shape[2] == 3
    assert plain.shape[1] > 2 * 96 and plain.shape[0] > 96
    assert (plain[..., 0] == plain[..., 1]).all() and (plain[..., 1] == plain[..., 2]).all()  # grey
    assert zoomed.shape[0] > plain.shape[0]  # the header line adds a row of text
    tiles = zoomed[-96:, :96]
    coloured = tiles[..., 0].astype(int) - tiles[..., 2].astype(int) > 100
    assert coloured[50:70, 50:70].any()  # rectangle on the box
    assert coloured[:40, :40].any()      # frame of the inset, in the corner opposite the box


def test_panel_rejects_mismatched_tiles():
    with pytest.raises(ValueError, match="one shape"):
        panel([("a", np.zeros((8, 8))), ("b", np.zeros((8, 9)))], window=WINDOW)


def test_pick_zoom_box_finds_the_detail_inside_the_body():
    hu = slice_hu()
    r, c, h, w = pick_zoom_box(hu, size=24)
    assert (h, w) == (24, 24)
    assert r + h / 2 > 48 and c + w / 2 > 48  # the detailed quadrant
    assert pick_zoom_box(hu, size=24) == (r, c, h, w)  # deterministic


def test_save_png_round_trips_without_metadata(tmp_path):
    rgb = panel([("denoised", slice_hu())], window=WINDOW, zoom_box=(40, 40, 16, 16))
    path = tmp_path / SECRET / "panel.png"  # patient data in the caller's path only
    save_png(rgb, path)
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), rgb)
    assert set(png_chunks(path)) <= {b"IHDR", b"IDAT", b"IEND"}
    assert SECRET.encode() not in path.read_bytes()


def progress_frames(n=3):
    clean = slice_hu()
    noisy = clean + np.random.default_rng(5).normal(0, 80, clean.shape).astype(np.float32)
    return [ProgressFrame(noisy=noisy, denoised=(noisy * (n - k) + clean * k) / n, clean=clean,
                          epoch=k + 1, loss=0.01 / (k + 1), psnr=30.0 + k, ssim=0.8 + 0.05 * k)
            for k in range(n)]


def test_progress_gif_round_trips_frames_and_durations(tmp_path):
    frames = progress_frames(3)
    path = tmp_path / SECRET / "progress.gif"  # patient data in the caller's path only
    progress_gif(frames, path, window=WINDOW, fps=2, hold_last_s=1.5)
    read = iio.imread(path, index=None)
    grey = read if read.ndim == 3 else read[..., 0]
    first = frames[0]
    expected = panel([("noisy", first.noisy), ("denoised (epoch 1)", first.denoised), ("clean", first.clean)],
                     window=WINDOW, header="epoch 1  loss 0.01  PSNR 30.00 dB  SSIM 0.8000")
    assert grey.shape[0] == 3 and grey.shape[1] == expected.shape[0]
    width = expected.shape[1]  # frames are padded on the right to the widest one (a longer header)
    np.testing.assert_array_equal(grey[0][:, :width], expected[..., 0])  # lossless: the palette holds every grey
    assert not grey[0][:, width:].any()
    with Image.open(path) as im:
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert durations == [500, 500, 1500]  # the last frame is held


def test_gifs_carry_no_metadata(tmp_path):
    path = tmp_path / SECRET / "progress.gif"
    progress_gif(progress_frames(2), path, window=WINDOW)
    data = path.read_bytes()
    assert SECRET.encode() not in data
    assert set(gif_extensions(path)) <= {b"\xf9", b"\xff"}  # no comment (0xFE) or plain-text (0x01) block
    assert gif_extensions(path).count(b"\xff") == 1 and b"NETSCAPE2.0" in data  # only the loop block


def test_scroll_gif_frame_count_and_content(tmp_path):
    rng = np.random.default_rng(3)
    noisy = np.stack([slice_hu(64, seed=k) for k in range(5)])
    denoised = noisy - rng.normal(0, 10, noisy.shape).astype(np.float32)
    path = tmp_path / "scroll.gif"
    scroll_gif(noisy, denoised, path, window=WINDOW, fps=8, max_side=32, grey_levels=256)
    read = iio.imread(path, index=None)
    grey = read if read.ndim == 3 else read[..., 0]
    assert grey.shape[0] == 5

    def halve(img):  # 2x2 block means: what shrinking 64 -> 32 pixels should give
        return img.reshape(32, 2, 32, 2).mean(axis=(1, 3))

    expected = panel([("noisy", halve(noisy[4])), ("denoised", halve(denoised[4]))],
                     window=WINDOW, header="slice 5/5")[..., 0]
    assert grey[4].shape == expected.shape
    assert np.abs(grey[4].astype(int) - expected).max() <= 1  # float rounding of the average only


def test_scroll_gif_posterizes_by_default(tmp_path):
    noisy = np.stack([slice_hu(64, seed=k) for k in range(2)])
    path = tmp_path / "scroll.gif"
    scroll_gif(noisy, noisy, path, window=WINDOW)
    frames = iio.imread(path, index=None)
    assert len(np.unique(frames)) <= 64


def test_training_curves_png_without_software_chunk(tmp_path):
    rows = [{"epoch": e, "train_loss": 0.1 / e, "val_psnr": 30 + e, "val_ssim": 0.8 + e / 100,
             "val_loss": None if e % 2 else 0.12 / e} for e in range(1, 8)]
    path = tmp_path / SECRET / "curves.png"
    training_curves(rows, path)
    assert Image.open(path).size[0] > 300
    assert not {b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"tIME"} & set(png_chunks(path))
    assert SECRET.encode() not in path.read_bytes()


def test_render_html_is_self_contained_and_escaped(tmp_path):
    png, gif = tmp_path / "a.png", tmp_path / "b.gif"
    save_png(panel([("x", slice_hu(32))], window=WINDOW), png)
    scroll_gif(np.stack([slice_hu(32)] * 2), np.stack([slice_hu(32)] * 2), gif, window=WINDOW)
    report = {
        "title": "Denoising <script>alert(1)</script>",
        "subtitle": "chest CT",
        "sections": [{
            "heading": "Results",
            "text": "First paragraph.\n\nSecond & last.",
            "tables": [{"caption": "PSNR", "columns": ["method", "PSNR (dB)"],
                        "rows": [["nlm", "38.10"], ["model", "39.42"], ["noisy", "n/a"]],
                        "highlight_best": {"column": "PSNR (dB)", "max": True},
                        "how": "Higher is <better>."}],
            "images": [{"path": png, "caption": "panel"}, {"path": str(gif), "caption": "scroll"}],
        }],
        "footer": "generated by ct-denoise\n\nFor research use only",
        "notice": "Not for diagnosis",
    }
    out = tmp_path / "report.html"
    render_html(report, out)
    text = out.read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) == 2 and all(s.startswith(("data:image/png;base64,", "data:image/gif;base64,"))
                                  for s in srcs)
    assert "href=" not in text and "url(" not in text
    assert "<td>nlm</td>" in text and '<td class="best">39.42</td>' in text
    assert "Second &amp; last." in text
    assert '<aside class="how"><p><strong>How to read this</strong></p>\n<p>Higher is &lt;better&gt;.</p>' in text
    assert text.index("</table>") < text.index('<aside class="how">')  # beside the table it explains
    assert '<p class="notice">Not for diagnosis</p>' in text
    assert "<footer>\n<p>generated by ct-denoise</p>\n<p>For research use only</p>\n</footer>" in text


def test_render_html_names_a_missing_image(tmp_path):
    report = {"title": "t", "sections": [{"heading": "h", "images": [{"path": tmp_path / "no.png"}]}]}
    with pytest.raises(ValueError, match="no.png"):
        render_html(report, tmp_path / "r.html")


def white_runs(image: np.ndarray) -> list[int]:
    """Lengths of the horizontal runs of pure white pixels in an RGB image."""
    white = (image == 255).all(axis=2)
    runs = []
    for row in white:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(np.int8), [0]])))
        runs += list(edges[1::2] - edges[::2])
    return runs


def test_panel_text_is_readable_where_the_report_shows_it():
    """Text grows with the picture, so that once the page scales a wide panel down to its
    width the letters are still >= ~10 px tall (capitals of a 14 px font)."""
    from denoise.report import DISPLAY_WIDTH

    tiles = [(name, np.full((512, 512), -1000.0)) for name in ("noisy", "model", "clean", "residual")]
    image = panel(tiles, window=WINDOW, header="HHHH")
    assert image.shape[1] > 2000  # as the report's panels: four 512 px slices
    band = (image[:, :200] > 128).all(axis=2)  # the header, above the titles
    rows = np.flatnonzero(band.any(axis=1))
    cap_height = int(np.argmax(np.diff(rows) > 1)) + 1  # the first run of rows: the capitals of the header
    assert cap_height * DISPLAY_WIDTH / image.shape[1] >= 9.5, cap_height


def test_scale_bar_length_matches_the_pixel_spacing():
    from denoise.report import scale_bar

    assert scale_bar(0.5, 100) == (10.0, 20)  # the longest 1-2-5 length within 30 % of the width
    assert scale_bar(0.8, 100) == (20.0, 25)
    assert scale_bar(0.7, 512) == (100.0, 143)
    assert scale_bar(None, 100) is None and scale_bar(100.0, 100) is None  # no spacing; no length fits
    air = np.full((100, 100), -1000.0)  # black: the only long white run is the bar
    for spacing, expected in (((0.5, 0.5), 20), ((0.5, 0.8), 25)):  # the column spacing sets a horizontal bar
        image = panel([("a", air), ("b", air)], window=WINDOW, spacing_mm=spacing)
        runs = white_runs(image)
        assert max(runs) == expected and runs.count(expected) >= 2 * 4, spacing  # both tiles, bar 4+ px thick
    assert max(white_runs(panel([("a", air)], window=WINDOW))) < 10  # no spacing: no bar (only the title)


def test_scale_bar_avoids_the_zoomed_inset():
    from denoise.report.panels import _inset_corner

    air = np.full((120, 120), -1000.0)
    box = (10, 80, 20, 20)  # top right: the inset goes bottom left
    assert _inset_corner(box, 120, 120) == (False, True)
    image = panel([("a", air)], window=WINDOW, zoom_box=box, zoom=2, spacing_mm=(0.5, 0.5))
    white = (image[-120:] == 255).all(axis=2)
    rows = np.flatnonzero(white.sum(axis=1) >= 20)
    cols = np.flatnonzero(white[rows].any(axis=0))
    assert rows.min() > 90 and cols.min() > 60  # bottom right


def test_grey_bars_state_each_tiles_window():
    from denoise.report.panels import window_labels

    air = np.full((200, 200), -1000.0)
    plain = panel([("a", air), ("residual", air, (-60.0, 60.0))], window=(-160.0, 240.0))
    barred = panel([("a", air), ("residual", air, (-60.0, 60.0))], window=(-160.0, 240.0), grey_bars=True)
    assert barred.shape[0] > plain.shape[0] + 10 and barred.shape[1] == plain.shape[1]
    tile_bottom = plain.shape[0]  # the tiles sit where they sat; the bars and their labels come below
    grey = barred[tile_bottom:, :200, 0].astype(int)
    ramp = grey[np.argmax(np.ptp(grey[:, 1:199], axis=1))][1:199]  # a row of the bar: black to white
    assert ramp[0] <= 5 and ramp[-1] >= 250 and (np.diff(ramp) >= 0).all()
    assert window_labels((-160.0, 240.0)) == ("-160", "40", "240 HU")
    assert window_labels((-60.0, 60.0)) == ("-60", "0", "60 HU")


def test_quality_curves_separate_lines_that_coincide(tmp_path):
    """Three images with the same NPS and edge profile: each edge profile is drawn at
    its own height, and each NPS line has its own style, so none hides another."""
    from denoise.report import quality_curves

    offsets = np.linspace(-5, 5, 41)
    esf = {"offset_mm": offsets.tolist(), "esf_hu": (-1000 + 1000 / (1 + np.exp(-2 * offsets))).tolist()}
    nps = {"freq_mm": np.linspace(0.05, 1.0, 20).tolist(), "nps_hu2mm2": np.linspace(300, 10, 20).tolist()}
    path = tmp_path / "quality.png"
    assert quality_curves([(name, nps, esf) for name in ("reference", "model", "tv")], path)
    image = iio.imread(path)[..., :3].astype(int)
    half = image[:, image.shape[1] // 2:]  # the edge profiles (and the legend, at the far right)
    heights = []
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):  # matplotlib's C0, C1, C2
        ys, xs = np.nonzero(np.abs(half - colour).sum(axis=2) < 30)
        inside = xs < half.shape[1] * 0.6  # the curves, not the legend
        heights.append(float(np.median(ys[inside])))
    assert heights[0] - heights[1] > 30 and heights[1] - heights[2] > 30  # later lines higher up
