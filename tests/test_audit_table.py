"""The audit's checks are one table (fr_pbd.audit.table); the documentation's lists of checks follow it."""

from __future__ import annotations

import re
from pathlib import Path

from fr_pbd.audit.table import CHECKS, FROM_OUTSIDE, Context, ids

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _doc_table_ids(text: str, heading: str) -> list[str]:
    part = text.split(heading, 1)[1]
    out = []
    for line in part.splitlines():
        if line.startswith("## ") and out:
            break
        m = re.match(r"^\| `?([A-Z0-9]+\.[a-z-]+)`? \|", line)
        if m:
            out.append(m.group(1))
        elif out and not line.startswith("|"):
            break
    return out


def test_the_table_has_one_row_per_check_with_its_condition():
    assert len(set(ids())) == len(CHECKS)
    for s in CHECKS:
        assert s.id.split(".")[0] == s.condition and s.condition in ("C1", "C2", "C3", "C4", "C5", "SEC", "DPIA")
        assert s.title and callable(s.run) and (s.black_box is None or callable(s.black_box))


def test_docs_audit_lists_exactly_the_tables_checks_in_its_order():
    assert _doc_table_ids((DOCS / "audit.md").read_text(), "## The checks and their rules") == ids()


def test_docs_conditions_names_every_check():
    text = (DOCS / "conditions.md").read_text()
    assert [c for c in ids() if f"`{c}`" not in text] == []


def test_a_black_box_gets_every_check_and_never_a_pass_from_outside(tmp_path):
    """A check that needs fr-pbd's store is INCONCLUSIVE on a black box, stamped with the table's id and title."""
    from fr_pbd.audit.files import Sources

    ctx = Context(src=Sources(), target=None)
    for s in CHECKS:
        if s.black_box is FROM_OUTSIDE:
            c = s.evaluate(ctx)
            assert (c.id, c.condition, c.status, c.title) == (s.id, s.condition, "INCONCLUSIVE", s.title)
            assert "not fr-pbd's" in c.needs
