"""Rule ids are a public contract: they match the catalogue, and each rule is documented."""

import re
from pathlib import Path

import pytest

from rnndoctor.rules import all_rules
from rnndoctor.rules.registry import rule

CATALOGUE = Path(__file__).resolve().parent.parent.parent / "shared" / "failure-modes.md"


def catalogue_ids():
    if not CATALOGUE.is_file():
        pytest.skip("shared/failure-modes.md is not beside this checkout")
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", CATALOGUE.read_text(), flags=re.M))


def test_every_rule_id_is_in_the_catalogue_with_its_severity():
    ids = catalogue_ids()
    assert len(ids) >= 20
    text = CATALOGUE.read_text()
    for spec in all_rules():
        assert spec.id in ids, spec.id
        row = re.search(rf"^\| `{spec.id}` \| ([^|]+)\|", text, flags=re.M).group(1)
        assert spec.severity.value in row, (spec.id, row)


def test_every_rule_documents_itself():
    for spec in all_rules():
        for section in ("What it detects", "Why it matters", "How to fix"):
            assert section in spec.doc, (spec.id, section)


def test_duplicate_ids_are_refused():
    spec = all_rules()[0]
    with pytest.raises(ValueError, match="duplicate rule id"):
        rule(spec.id, spec.severity, signals=(), fix=spec.fix)(lambda run: iter(()))
