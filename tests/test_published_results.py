"""The README quotes the committed study results/sweeps/quick; its figures must come out of those records."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lstm_odyssey.results import load_results
from lstm_odyssey.sweep.collect import summary_table

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "results" / "sweeps" / "quick"


def readme_table(table) -> str:
    """The README's table of the main command: median and best objective per cell, 4 significant digits."""
    cells = list(table["cell"])
    rows = ["| cell | " + " | ".join(cells) + " |", "|---|" + "---|" * len(cells)]
    for column in ("median", "best"):
        rows.append(f"| {column} | " + " | ".join(f"{v:.4g}" for v in table[column]) + " |")
    return "\n".join(rows)


@pytest.mark.skipif(not STUDY.is_dir(), reason="the published quick study is not in this checkout")
def test_the_readme_quotes_the_committed_quick_study():
    table = summary_table(load_results(STUDY))
    assert len(table) == 13 and (table["ok"] == 3).all()
    assert readme_table(table) in (ROOT / "README.md").read_text()


@pytest.mark.skipif(not STUDY.is_dir(), reason="the published quick study is not in this checkout")
def test_the_committed_report_tables_regenerate_from_the_committed_records(tmp_path):
    from lstm_odyssey.analysis import write_report

    copy = tmp_path / "quick"
    shutil.copytree(STUDY / "adding", copy / "adding")
    write_report([copy], tmp_path / "report")
    for name in ("summary.csv", "significance.csv"):
        assert (tmp_path / "report" / "tables" / name).read_text() == (STUDY / "report" / "tables" / name).read_text(), name


REPRODUCTION = ROOT / "results" / "odyssey_jsb"
REPORTED = sorted(p.parent for p in REPRODUCTION.glob("*/report/report.md"))
TABLES = ("summary.csv", "significance.csv", "paper_findings.csv", "best_by_validation.csv")


@pytest.mark.skipif(not REPORTED, reason="no reproduction study under results/odyssey_jsb/ has a committed report yet")
@pytest.mark.parametrize("study", REPORTED, ids=lambda p: p.name)
def test_the_reproduction_reports_regenerate_from_their_records(tmp_path, study):
    """`lstm-odyssey-report results/odyssey_jsb/<protocol>` on the committed records gives the committed tables."""
    from lstm_odyssey.analysis import write_report

    copy = tmp_path / study.name
    shutil.copytree(study / "jsb_chorales", copy / "jsb_chorales")
    write_report([copy], tmp_path / "report")
    for name in TABLES:
        assert (tmp_path / "report" / "tables" / name).read_text() == (study / "report" / "tables" / name).read_text(), name
