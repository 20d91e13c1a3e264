"""MkDocs hook: put the benchmark figure into the site from benchmarks/results/.

The results page shows ``benchmarks/results/before_after.png`` as
``benchmarks/quality.py --figure`` writes it; the file is read from the
repository at build time, not copied into docs/.
"""

from pathlib import Path

from mkdocs.structure.files import File

FIGURES = ("before_after.png",)


def on_files(files, config):
    results = Path(config.config_file_path).resolve().parent / "benchmarks" / "results"
    for name in FIGURES:
        files.append(File.generated(config, f"figures/{name}", abs_src_path=str(results / name)))
    return files
