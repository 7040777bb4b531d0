"""The paper's rows that ``evaluate --compare paper`` shows are the paper's (shared/paper_tables.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainer.eval_report import PAPER_ROWS, markdown

TABLES = Path(__file__).resolve().parents[3] / "shared" / "paper_tables.md"


def test_paper_rows_match_the_papers_tables():
    if not TABLES.is_file():
        pytest.skip(f"{TABLES} is not beside the checkout")
    rows = []
    for line in TABLES.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and all(re.fullmatch(r"\d+(\.\d+)?", c) for c in cells[1:]):
            rows.append([float(c) for c in cells[1:]])
    assert len(rows) == len(PAPER_ROWS) == 11
    for want, (name, got) in zip(rows, PAPER_ROWS.items(), strict=True):
        assert list(got.values()) == want, name


def test_compare_paper_table_shows_every_row_beside_this_run():
    run = {"split": "test", "checkpoint": "c.pt", "stage": "stage2", "steps": 25, "guidance": 3.0}
    table = markdown({"psnr_region": 20.0, "fid_region": 80.0}, {}, 3, run, [], "paper")
    assert "| **this run** | 80.00 | — | 20.00 | — | — |" in table
    assert all(name in table for name in PAPER_ROWS)
    assert "Table 2: full model" not in markdown({}, {}, 3, run, [], None)
