"""Report renderers: HU arrays and metric rows in, PNG / GIF / HTML files out.
Only strings the caller passes are drawn or written; no file metadata."""

from denoise.report.curves import training_curves
from denoise.report.display import posterize, shrink, to_display
from denoise.report.gifs import ProgressFrame, progress_gif, scroll_gif
from denoise.report.html_page import render_html
from denoise.report.panels import DISPLAY_WIDTH, panel, pick_zoom_box, save_png, scale_bar, text_size
from denoise.report.quality_plots import quality_curves, residual_window

__all__ = ["DISPLAY_WIDTH", "ProgressFrame", "panel", "pick_zoom_box", "posterize", "progress_gif", "quality_curves",
           "render_html", "residual_window", "save_png", "scale_bar", "scroll_gif", "shrink", "text_size", "to_display",
           "training_curves"]
