"""Trust and provenance: the citation file agrees with the package metadata,
the research-use statement is where a user meets the tool, and the model card
describes the model that ships."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

import denoise

ROOT = Path(__file__).resolve().parents[2]
RESEARCH_USE = re.compile(r"research use only", re.IGNORECASE)
NOT_FOR_DIAGNOSIS = re.compile(r"diagnosis", re.IGNORECASE)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def model_metadata() -> dict:
    return json.loads((ROOT / "denoise" / "models" / "default_ct.json").read_text())["metadata"]


def test_citation_cff_parses_and_matches_the_package():
    yaml = pytest.importorskip("yaml")  # PyYAML comes with the test extra (dask) and the docs extra (mkdocs)

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = pyproject()
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["title"].startswith("ct-denoise")
    assert project["dynamic"] == ["version"]  # the version lives in denoise.__version__ ...
    assert str(cff["version"]) == denoise.__version__  # ... and the citation names it
    assert [a["name"] for a in cff["authors"]] == [a["name"] for a in project["authors"]]
    assert cff["license"] == project["license"] == "MIT"
    assert "research use only" in cff["message"].lower()
    titles = {r["title"] for r in cff["references"]}
    for series in model_metadata()["training"]["data"][0]["series"]:  # every collection the model saw
        collection = series["source"].split(": ", 1)[1].split(",", 1)[0]  # "TCIA LIDC-IDRI", "dcm_qa_ct ... (...)"
        name = collection.removeprefix("TCIA ").split(" (", 1)[0]
        assert name in titles, name


def test_package_metadata_names_authors_and_classifiers():
    project = pyproject()
    assert project["authors"] and all(a.get("name") for a in project["authors"])
    classifiers = set(project["classifiers"])
    for wanted in ("Intended Audience :: Science/Research", "Intended Audience :: Healthcare Industry",
                   "Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3.12",
                   "Topic :: Scientific/Engineering :: Medical Science Apps.",
                   "Topic :: Scientific/Engineering :: Image Processing"):
        assert wanted in classifiers, wanted
    assert any(c.startswith("Development Status ::") for c in classifiers)
    # PEP 639: the SPDX licence expression, and no License classifier beside it (setuptools >= 77 refuses both)
    assert project["license"] == "MIT" and not any(c.startswith("License ::") for c in classifiers)


@pytest.mark.parametrize("path", ["README.md", "docs/index.md", "docs/model-card.md"])
def test_research_use_statement_where_users_read(path):
    text = (ROOT / path).read_text()
    head = "\n".join(text.splitlines()[:25])  # near the top, not in a footnote
    assert RESEARCH_USE.search(head) and NOT_FOR_DIAGNOSIS.search(head), path


def test_research_use_statement_in_the_report(tmp_path):
    from pipelines import report

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.json").write_text("[]")  # the smallest source a report is written for
    page = report.run(tmp_path / "run", tmp_path / "out").read_text()
    footer = page.split("<footer>", 1)[1]
    assert RESEARCH_USE.search(footer) and "not for diagnosis" in footer
    assert RESEARCH_USE.search(page.split("</h1>", 1)[1].split("<section>", 1)[0])  # and under the title


def test_model_card_describes_the_bundled_model():
    card = (ROOT / "docs" / "model-card.md").read_text()
    meta = model_metadata()
    for heading in ("Intended use", "Not intended", "Training data", "Evaluation", "Limitations",
                    "Ethical considerations", "How to reproduce"):
        assert re.search(rf"^## {heading}$", card, re.MULTILINE), heading
    assert meta["created"][:10] in card  # the card is about this model, not an earlier one
    for series in meta["training"]["data"][0]["series"]:
        where, licence = series["source"].split(": ", 1)[1].split(", ", 1)
        assert where.split(" (", 1)[0] in card, where
        assert licence.split(" (", 1)[0] in card, licence
    for command in meta["reproduce"]:
        assert command.split("#", 1)[0].strip() in card, command
    assert "results.md" in card and "--8<--" in card  # measured performance included, not copied


def test_readme_points_to_the_model_card_not_outside_the_package():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/model-card.md)" in readme
    assert "shared/data" not in readme
