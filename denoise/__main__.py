"""``python -m denoise COMMAND ...``: the same command line as ``ct-denoise``."""

from denoise.cli import run

run()
