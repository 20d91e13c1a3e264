"""The thin entry a checkout runs: ``python cli.py COMMAND ...``.

The command line itself is :mod:`denoise.cli` (installed as ``ct-denoise``,
also ``python -m denoise``).
"""

from denoise.cli import app, run  # noqa: F401  (tests and scripts use cli.app)

if __name__ == "__main__":
    run()
